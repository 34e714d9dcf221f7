"""Congestion control of the forwarder's own TCP legs (`--congestion`, rule key `congestion`).

`auto` (the default) gives a leg between two ends on this host reno, which never paces; other
legs and `system` keep the kernel's default; a name sets that algorithm on every leg. The
oracle for what a live socket really runs is `ss -ti` (the kernel's INET_DIAG_CONG).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures_forward import ENGINES, TcpServer, echo_until_eof, forwarder
from portkit.errors import UsageError
from portkit.forward import _congestion, check_congestion, make_rule, parse_config

PROC = Path("/proc/sys/net/ipv4")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) as the oracle")


def _available() -> list[str]:
    return (PROC / "tcp_available_congestion_control").read_text().split()


def _system_default() -> str:
    return (PROC / "tcp_congestion_control").read_text().strip()


def _other_than(*names: str) -> str:
    """A loaded algorithm that is none of `names` (so a test can tell it was really set)."""
    for name in _available():
        if name not in names:
            return name
    pytest.skip(f"this kernel has no congestion control besides {', '.join(names)}")


def test_rule_congestion_defaults_to_auto_and_is_validated() -> None:
    assert make_rule("8080", "127.0.0.1:80").congestion == "auto"
    assert make_rule("8080", "127.0.0.1:80", congestion="System").congestion == "system"
    assert make_rule("8080", "127.0.0.1:80", congestion="RENO").congestion == "reno"
    assert make_rule("8080", "127.0.0.1:80", congestion="reno").to_json()["congestion"] == "reno"
    # Any well-formed name parses (root may load a tcp_NAME module); the forwarder checks at start.
    assert make_rule("8080", "127.0.0.1:80", congestion="dctcp").congestion == "dctcp"
    for bad in ("no-such-algo", "", "re no", "bbr;rm", "x" * 16, "ünï"):
        with pytest.raises(UsageError, match=r"invalid congestion .*expected auto, system or an algorithm"):
            make_rule("8080", "127.0.0.1:80", congestion=bad)


def test_config_takes_congestion_per_rule() -> None:
    rules = parse_config(
        "[[rule]]\nlisten = 1\ntarget = '127.0.0.1:2'\ncongestion = 'system'\n"
        "[[rule]]\nlisten = 3\ntarget = '127.0.0.1:4'\n"
    )
    assert [r.congestion for r in rules] == ["system", "auto"]
    with pytest.raises(UsageError, match="rule 1: invalid congestion 'war p'"):
        parse_config("[[rule]]\nlisten = 1\ntarget = '127.0.0.1:2'\ncongestion = 'war p'\n")


def test_check_names_what_is_wrong() -> None:
    check_congestion("auto")
    check_congestion("system")
    check_congestion("reno")
    with pytest.raises(UsageError, match=r"invalid congestion 'warp': no such algorithm .*loaded: .*reno"):
        check_congestion("warp")


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("10.0.0.1", "127.5.6.7", True),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1", True),
        ("192.0.2.7", "192.0.2.7", True),  # a local address talking to itself goes over lo
        ("fe80::1%eth0", "fe80::1%eth0", True),
        ("192.0.2.7", "192.0.2.8", False),
        ("::ffff:192.0.2.7", "::ffff:198.51.100.1", False),
        ("2001:db8::1", "2001:db8::2", False),
        ("", "not-an-address", False),
    ],
)
def test_same_host(local: str, remote: str, expected: bool) -> None:
    assert _congestion.same_host(local, remote) is expected


@pytest.mark.parametrize(
    ("choice", "address", "planned", "settled"),
    [
        ("auto", "127.0.0.1", "reno", True),
        ("auto", "::1", "reno", True),
        ("auto", "0.0.0.0", None, False),  # a wildcard listener: local and remote clients alike
        ("auto", "192.0.2.7", None, False),  # maybe this host's own address: known once connected
        ("system", "127.0.0.1", None, True),
        ("cubic", "192.0.2.7", "cubic", True),
    ],
)
def test_what_is_known_before_connecting(
    choice: str, address: str, planned: str | None, settled: bool
) -> None:
    assert _congestion.planned(choice, address) == planned
    assert _congestion.settled(choice, address) is settled


def _algorithm(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def test_preset_before_the_handshake_and_inherited_from_the_listener() -> None:
    default = _system_default()
    with socket.socket() as listener, socket.socket() as client:
        assert _congestion.preset(listener, "auto", "127.0.0.1") == "reno"
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        assert _congestion.preset(client, "system", "127.0.0.1") is None
        client.connect(listener.getsockname())
        accepted, _ = listener.accept()
        with accepted:
            assert (_algorithm(client), _algorithm(accepted)) == (default, "reno")
        # A reload to `system`: the listener goes back to the kernel's default for new clients.
        assert _congestion.preset(listener, "system", "127.0.0.1", reset=True) == default
        with socket.create_connection(listener.getsockname()) as second:
            accepted, _ = listener.accept()
            with accepted:
                assert (_algorithm(second), _algorithm(accepted)) == (default, default)


def test_adjust_switches_only_auto_legs_within_this_host() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
        before = _algorithm(client)
        other = _other_than("reno")
        for choice in ("system", other):  # those were settled before connecting; adjust leaves them
            assert _congestion.adjust(client, choice) is None and _algorithm(client) == before
        assert _congestion.adjust(client, "auto") == "reno" and _algorithm(client) == "reno"
    assert _congestion.adjust(accepted, "auto") is None  # closed: nothing to ask, nothing raised


class _FakeLeg:
    """A connected socket as far as `adjust` looks: its addresses, and what was set on it."""

    def __init__(self, local: str, remote: str) -> None:
        self.local, self.remote = local, remote
        self.set: list[bytes] = []

    def getsockname(self) -> tuple[str, int]:
        return (self.local, 40000)

    def getpeername(self) -> tuple[str, int]:
        return (self.remote, 80)

    def setsockopt(self, level: int, option: int, value: bytes) -> None:
        self.set.append(value)


def test_adjust_leaves_a_leg_to_another_host_alone() -> None:
    remote = _FakeLeg("192.0.2.7", "198.51.100.1")
    assert _congestion.adjust(remote, "auto") is None and remote.set == []
    itself = _FakeLeg("192.0.2.7", "192.0.2.7")
    assert _congestion.adjust(itself, "auto") == "reno" and itself.set == [b"reno"]


def _ss_algorithms(expression: str) -> list[str]:
    """The congestion control `ss -ti` reports for each established socket matching `expression`."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", expression], capture_output=True, text=True, timeout=10
    ).stdout
    infos = [line.split() for line in out.splitlines() if line.startswith(("\t", " "))]
    return [words[0] for words in infos if words]


def _open_and_inspect(fwd: Any, server: TcpServer) -> dict[str, list[str]]:
    """Open one connection through `fwd` and read each of its three sockets' algorithm off ss;
    returns once its legs are gone (so the next call sees only its own target leg)."""
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"  # relaying: the forwarder has set up both legs
        client_port = client.getsockname()[1]
        seen = {
            "client": _ss_algorithms(f"( sport = :{client_port} )"),
            "accepted leg": _ss_algorithms(f"( sport = :{fwd.port} and dport = :{client_port} )"),
            "target leg": _ss_algorithms(f"( dport = :{server.port} )"),
        }
    deadline = time.monotonic() + 5
    while _ss_algorithms(f"( dport = :{server.port} )") and time.monotonic() < deadline:
        time.sleep(0.02)
    return seen


@needs_ss
@pytest.mark.parametrize("engine", ENGINES)
def test_auto_gives_loopback_legs_reno_and_leaves_the_client_alone(engine: str, tmp_path: Path) -> None:
    if _system_default() == "reno":
        pytest.skip("the kernel's default is reno already: auto and system cannot be told apart")
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            seen = _open_and_inspect(fwd, server)
    finally:
        server.close()
    assert seen == {"client": [_system_default()], "accepted leg": ["reno"], "target leg": ["reno"]}


@needs_ss
@pytest.mark.parametrize("engine", ["splice", "asyncio"])
def test_system_and_named_choices(engine: str, tmp_path: Path) -> None:
    default = _system_default()
    named = _other_than("reno", default)
    server = TcpServer(echo_until_eof)
    try:
        for choice, expected in (("system", default), (named, named)):
            args = ("0", server.address, "--congestion", choice)
            with forwarder(*args, tmp_path=tmp_path, engine=engine) as fwd:
                assert fwd.ready["rules"][0]["congestion"] == choice
                seen = _open_and_inspect(fwd, server)
            assert seen["accepted leg"] == [expected] and seen["target leg"] == [expected], (choice, seen)
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the unprivileged user nobody")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_unprivileged_named_choice_outside_the_allowed_list_is_a_clear_error(tmp_path: Path) -> None:
    allowed = (PROC / "tcp_allowed_congestion_control").read_text().split()
    name = _other_than(*allowed)  # loaded, but not allowed without CAP_NET_ADMIN
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "portkit", "forward", "0", "127.0.0.1:9", "--congestion", name],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run")},
    )
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    assert (
        f"cannot use congestion {name!r}" in line and "only these are allowed: " + " ".join(allowed) in line
    )


@needs_ss
@pytest.mark.parametrize("engine", ["splice", "asyncio"])
def test_reload_changes_the_choice_for_new_connections(engine: str, tmp_path: Path) -> None:
    default = _system_default()
    named = _other_than("reno", default)
    server = TcpServer(echo_until_eof)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "forward.toml"

    def write(choice: str) -> None:
        config.write_text(
            f"[[rule]]\nlisten = '127.0.0.1:{port}'\ntarget = '{server.address}'\ncongestion = '{choice}'\n"
        )

    write(named)
    try:
        with forwarder("--config", str(config), tmp_path=tmp_path, engine=engine) as fwd:
            seen = _open_and_inspect(fwd, server)
            assert seen["accepted leg"] == [named] and seen["target leg"] == [named]
            write("system")  # the listener must not hand its old choice on to new connections
            fwd.send(signal.SIGHUP)
            reload = fwd.wait_event("reload")
            assert (reload["added"], reload["changed"], reload["failed"]) == (0, 1, 0)
            seen = _open_and_inspect(fwd, server)
            assert seen["accepted leg"] == [default] and seen["target leg"] == [default]
            write("warp")  # well-formed, but no such algorithm: the rule stays as it was
            fwd.send(signal.SIGHUP)
            error = fwd.wait_event("error", lambda e: e.get("stage") == "reload")
            assert "no such algorithm" in error["error"] and error["result"] == "kept the rule"
            reload = fwd.wait_event("reload", lambda e: e["failed"] == 1)
            assert (reload["added"], reload["changed"]) == (0, 0)
            assert _open_and_inspect(fwd, server)["accepted leg"] == [default]
    finally:
        server.close()
