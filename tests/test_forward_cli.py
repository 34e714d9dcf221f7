"""`portkit forward` as a command line: clear one-line errors with exit 2, --check, bind failures."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["8080"], "missing arguments"),
        ([":8080", "127.0.0.1:80"], "write the address out"),
        (["8080", "127.0.0.1"], "invalid target"),
        (["8080", "127.0.0.1:70000"], "invalid port"),
        (["banana", "127.0.0.1:80"], "invalid endpoint"),
        (["8080", "127.0.0.1:80", "--allow", "10.0.0.0/99"], "invalid allow-list"),
        (["8080", "127.0.0.1:80", "--udp", "--proxy-protocol", "v2"], "TCP only"),
        (["8080", "127.0.0.1:80", "--idle-timeout", "-3"], "idle_timeout"),
        (["8080", "127.0.0.1:80", "--config", "x.toml"], "not both"),
        (["8080", "127.0.0.1:80", "--congestion", "warp"], "invalid congestion 'warp'"),
        (["8080", "127.0.0.1:80", "--udp", "--congestion", "reno"], "a TCP setting"),
        (["--config", "x.toml", "--congestion", "reno"], "--congestion with --config"),
        (["--config", "/nonexistent/forward.toml"], "cannot read"),
        # A zone no interface has: the first client's connect() raised in the relay loop, which died.
        (["8080", "[fe80::1%pknosuch0]:80"], "no interface 'pknosuch0'"),
        (["[fe80::1%pknosuch0]:8080", "127.0.0.1:80"], "no interface 'pknosuch0'"),
        (["8080", "[fe80::1%pknosuch0]:80", "--udp"], "no interface 'pknosuch0'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Any, args: list[str], message: str) -> None:
    result = cli("forward", *args, timeout=20)
    assert result.status == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_config_options_belong_in_the_file(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text("[[rule]]\nlisten = 8080\ntarget = '127.0.0.1:80'\n")
    result = cli("forward", "--config", str(config), "--max-connections", "5")
    assert result.status == 2 and "--max-connections with --config" in result.stderr


def test_check_prints_rules_as_json(cli: Any, tmp_path: Path) -> None:
    config = tmp_path / "f.toml"
    config.write_text(
        "[[rule]]\nname = 'db'\nlisten = 15432\ntarget = '127.0.0.1:5432'\nallow = ['10.0.0.0/8']\n"
        "[[rule]]\nlisten = '[::1]:5353'\ntarget = '[::1]:53'\nprotocol = 'udp'\n"
    )
    result = cli("forward", "--config", str(config), "--check", "--json")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["engine"] == "splice"
    db, dns = doc["rules"]
    assert db["listen"] == {"address": "127.0.0.1", "port": 15432} and db["allow"] == ["10.0.0.0/8"]
    assert dns["protocol"] == "udp" and dns["listen"]["address"] == "::1"
    human = cli("forward", "--config", str(config), "--check")
    assert "db: tcp 127.0.0.1:15432 -> 127.0.0.1:5432 (allow 10.0.0.0/8)" in human.stdout
    assert "2 rule(s) ok" in human.stdout


def test_port_in_use_is_a_runtime_error(cli: Any) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = cli("forward", f"127.0.0.1:{port}", "127.0.0.1:9", "--json", timeout=20)
    assert result.status == 1
    assert f"cannot listen on tcp/127.0.0.1:{port}" in result.stderr and "in use" in result.stderr
    assert not [line for line in result.stdout.splitlines() if json.loads(line).get("event") == "ready"]


@pytest.mark.parametrize("value", ["lots", "-2", "1e6", "1_0", "\u0663", "--1"])
def test_bad_thread_threshold_in_the_environment_is_one_line_and_exit_2(cli: Any, value: str) -> None:
    result = cli("forward", "8080", "127.0.0.1:80", "--check", env={"PORTKIT_SPLICE_THREAD_AFTER": value})
    assert result.status == 2, result.stderr
    assert "invalid PORTKIT_SPLICE_THREAD_AFTER" in result.stderr and repr(value) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["sometimes", "NEVER", "0"])
def test_bad_copy_mode_in_the_environment_is_one_line_and_exit_2(cli: Any, value: str) -> None:
    result = cli("forward", "8080", "127.0.0.1:80", "--check", env={"PORTKIT_SPLICE_COPY": value})
    assert result.status == 2, result.stderr
    assert "invalid PORTKIT_SPLICE_COPY" in result.stderr and repr(value) in result.stderr
    assert "auto, never, always" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["c", "PYTHON", "1"])
def test_bad_turn_in_the_environment_is_one_line_and_exit_2(cli: Any, value: str) -> None:
    result = cli("forward", "8080", "127.0.0.1:80", "--check", env={"PORTKIT_SPLICE_TURN": value})
    assert result.status == 2, result.stderr
    assert "invalid PORTKIT_SPLICE_TURN" in result.stderr and repr(value) in result.stderr
    assert "auto or python" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_turn_is_an_option_of_the_forwarder() -> None:
    from portkit.errors import UsageError
    from portkit.forward import Forwarder, make_rule

    rules = [make_rule("0", "127.0.0.1:9")]
    assert Forwarder(rules).turn == "auto"
    assert Forwarder(rules, turn="python").turn == "python"
    with pytest.raises(UsageError, match="invalid turn 'c'"):
        Forwarder(rules, turn="c")


def test_copy_mode_is_an_option_of_the_forwarder() -> None:
    from portkit.errors import UsageError
    from portkit.forward import Forwarder, make_rule

    rules = [make_rule("0", "127.0.0.1:9")]
    assert Forwarder(rules, engine="asyncio").copy == "auto"
    assert Forwarder(rules, engine="asyncio", copy="never").copy == "never"
    with pytest.raises(UsageError, match="invalid copy 'some'"):
        Forwarder(rules, engine="asyncio", copy="some")


def test_thread_threshold_is_an_option_not_read_at_import() -> None:
    import subprocess
    import sys

    from portkit.errors import UsageError
    from portkit.forward import EventLog, Forwarder, make_rule
    from portkit.forward._splice import THREAD_AFTER, SpliceEngine

    probe = "from portkit.forward import _splice; print(_splice.THREAD_AFTER)"
    env = {"PORTKIT_SPLICE_THREAD_AFTER": "7", "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=30)
    assert shown.stdout.strip() == str(THREAD_AFTER) == str(512 << 10)  # the library ignores the variable
    rules = [make_rule("0", "127.0.0.1:9")]
    assert Forwarder(rules, engine="asyncio").thread_after == THREAD_AFTER
    assert Forwarder(rules, engine="asyncio", thread_after=-1).thread_after == -1
    with pytest.raises(UsageError, match="invalid thread_after -5"):
        Forwarder(rules, engine="asyncio", thread_after=-5)
    engine = SpliceEngine(EventLog(), thread_after=0)
    try:
        assert engine.thread_after == 0
    finally:
        engine._release()


@pytest.mark.parametrize(
    ("first", "second"),
    [("0.0.0.0:18556", "127.0.0.1:18556"), ("[::1]:18556", "[::]:18556"), ("[::]:18556", "10.0.0.1:18556")],
)
def test_tcp_rules_whose_listens_overlap_are_refused_by_check(
    cli: Any, tmp_path: Path, first: str, second: str
) -> None:
    """A wildcard listen takes its port on every address of its family ([::] on IPv4 too): a second
    TCP rule on one of them passed --check, then failed to start, blaming 'another process'."""
    config = tmp_path / "f.toml"
    config.write_text(
        f"[[rule]]\nlisten = '{first}'\ntarget = '127.0.0.1:1'\n"
        f"[[rule]]\nlisten = '{second}'\ntarget = '127.0.0.1:2'\n"
        # UDP sockets may share the port (SO_REUSEADDR): datagrams go to the most specific one.
        f"[[rule]]\nlisten = '{second}'\ntarget = '127.0.0.1:3'\nprotocol = 'udp'\n"
    )
    result = cli("forward", "--config", str(config), "--check")
    assert result.status == 2, result.stdout
    assert "overlaps rule 1" in result.stderr and len(result.stderr.strip().splitlines()) == 1
