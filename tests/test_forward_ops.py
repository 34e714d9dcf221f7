"""Operating a forwarder: reload on SIGHUP, drain on SIGTERM, statistics, PROXY headers."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixtures_forward import ENGINES, TcpServer, echo_until_eof, forwarder, recv_all
from portkit.forward import parse_proxy_header


def _config(path: Path, *rules: str) -> Path:
    path.write_text("[defaults]\nidle_timeout = 30\n\n" + "\n".join(rules))
    return path


def _rule(name: str, listen: str, target: str) -> str:
    return f'[[rule]]\nname = "{name}"\nlisten = "{listen}"\ntarget = "{target}"\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tagging_server(tag: bytes) -> TcpServer:
    def handler(conn: socket.socket) -> None:
        conn.settimeout(20)
        while data := conn.recv(65536):
            conn.sendall(tag + data)
        conn.shutdown(socket.SHUT_WR)

    return TcpServer(handler)


def _roundtrip(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as c:
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)
        return recv_all(c)


@pytest.mark.parametrize("engine", ENGINES)
def test_sighup_reload_keeps_existing_connections(engine: str, tmp_path: Path) -> None:
    a, b = _tagging_server(b"A:"), _tagging_server(b"B:")
    port_one, port_two = _free_port(), _free_port()
    config = _config(tmp_path / "forward.toml", _rule("one", f"127.0.0.1:{port_one}", a.address))
    try:
        with forwarder("--config", str(config), tmp_path=tmp_path, engine=engine) as fwd:
            existing = socket.create_connection(("127.0.0.1", port_one), timeout=5)
            existing.sendall(b"before")
            assert existing.recv(100) == b"A:before"
            # Rule one now goes to B, rule two is new.
            _config(
                config,
                _rule("one", f"127.0.0.1:{port_one}", b.address),
                _rule("two", f"127.0.0.1:{port_two}", a.address),
            )
            fwd.send(signal.SIGHUP)
            reload = fwd.wait_event("reload")
            assert (reload["added"], reload["changed"], reload["removed"]) == (1, 1, 0)
            existing.sendall(b"after")
            assert existing.recv(100) == b"A:after"  # the old connection kept its target
            assert _roundtrip(port_one, b"new") == b"B:new"
            assert _roundtrip(port_two, b"two") == b"A:two"
            # Removing a rule stops its listener but not its open connections.
            _config(config, _rule("two", f"127.0.0.1:{port_two}", a.address))
            fwd.send(signal.SIGHUP)
            fwd.wait_event("reload", lambda e: e["removed"] == 1)
            existing.sendall(b"still")
            assert existing.recv(100) == b"A:still"
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(("127.0.0.1", port_one), timeout=5)
            # A broken config is refused and the running rules stay.
            config.write_text("[[rule]]\nlisten = 'nonsense'\ntarget = '127.0.0.1:1'\n")
            fwd.send(signal.SIGHUP)
            assert "nonsense" in fwd.wait_event("error", lambda e: e.get("stage") == "reload")["error"]
            assert _roundtrip(port_two, b"ok") == b"A:ok"
            existing.close()
            assert fwd.stop() == 0
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_sigterm_drains_open_connections_then_exits(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            open_conn = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            open_conn.sendall(b"1")
            assert open_conn.recv(1) == b"1"
            fwd.send(signal.SIGTERM)
            fwd.wait_event("drain")
            with pytest.raises(ConnectionRefusedError):  # no longer listening
                socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            open_conn.sendall(b"2")  # but the open connection still works
            assert open_conn.recv(1) == b"2"
            assert fwd.proc.poll() is None
            open_conn.shutdown(socket.SHUT_WR)
            assert recv_all(open_conn) == b""
            open_conn.close()
            assert fwd.proc.wait(5) == 0
            assert fwd.wait_event("stop")["reason"] == "drained"
    finally:
        server.close()


def test_drain_timeout_closes_stragglers(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("127.0.0.1:0", server.address, "--drain-timeout", "0.5", tmp_path=tmp_path) as fwd:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as c:
                c.sendall(b"x")
                assert c.recv(1) == b"x"
                started = time.monotonic()
                assert fwd.stop() == 0
                assert time.monotonic() - started < 3
                assert recv_all(c) == b""
            assert fwd.wait_event("stop")["reason"] == "drain timeout"
    finally:
        server.close()


def test_stats_on_sigusr1_and_over_the_control_socket(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    env = {**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run")}
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path) as fwd:
            assert _roundtrip(fwd.port, b"x" * 1000) == b"x" * 1000
            fwd.wait_event("close")
            fwd.send(signal.SIGUSR1)
            logged = fwd.wait_event("stats")
            assert (logged["total"], logged["bytes_up"], logged["bytes_down"]) == (1, 1000, 1000)
            out = subprocess.run(
                [sys.executable, "-m", "portkit", "forward", "--stats", "--json"],
                capture_output=True,
                text=True,
                env=env,
                timeout=10,
            )
            assert out.returncode == 0, out.stderr
            (doc,) = json.loads(out.stdout)["forwarders"]
            assert doc["pid"] == fwd.pid and doc["engine"] == "splice"
            (rule,) = doc["rules"]
            assert rule["listen"] == f"127.0.0.1:{fwd.port}" and rule["bytes_down"] == 1000
            human = subprocess.run(
                [sys.executable, "-m", "portkit", "forward", "--stats"],
                capture_output=True,
                text=True,
                env=env,
                timeout=10,
            )
            assert f"forwarder pid {fwd.pid}" in human.stdout and "1000 B" in human.stdout
    finally:
        server.close()
    none = subprocess.run(
        [sys.executable, "-m", "portkit", "forward", "--stats"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert none.returncode == 1 and "no running forwarder" in none.stdout


@pytest.mark.parametrize("engine", ["splice", "asyncio"])  # the header goes out before any relaying
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_tells_the_target_who_the_client_is(engine: str, version: str, tmp_path: Path) -> None:
    seen: list[tuple[tuple[str, int], tuple[str, int], bytes]] = []

    def backend(conn: socket.socket) -> None:
        data = recv_all(conn)
        source, destination, length = parse_proxy_header(data)
        seen.append((source, destination, data[length:]))

    server = TcpServer(backend)
    try:
        with forwarder(
            "127.0.0.1:0", server.address, "--proxy-protocol", version, tmp_path=tmp_path, engine=engine
        ) as fwd:
            with socket.create_connection(
                ("127.0.0.1", fwd.port), timeout=5, source_address=("127.0.0.2", 0)
            ) as c:
                client_port = c.getsockname()[1]
                c.sendall(b"payload")
                c.shutdown(socket.SHUT_WR)
                recv_all(c)
            deadline = time.monotonic() + 5
            while not seen and time.monotonic() < deadline:
                time.sleep(0.02)
            assert seen == [(("127.0.0.2", client_port), ("127.0.0.1", fwd.port), b"payload")]
    finally:
        server.close()


def test_sigint_exits_130(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path) as fwd:
            assert fwd.stop(signal.SIGINT) == 130
    finally:
        server.close()


def test_systemd_notify_ready_reloading_stopping(tmp_path: Path) -> None:
    """The Type=notify contract of contrib/systemd/portkit-forward.service."""
    server = TcpServer(echo_until_eof)
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(5)
    config = _config(tmp_path / "forward.toml", _rule("one", f"127.0.0.1:{_free_port()}", server.address))
    try:
        with forwarder(
            "--config", str(config), tmp_path=tmp_path, env={"NOTIFY_SOCKET": str(tmp_path / "notify")}
        ) as fwd:
            ready = notify.recv(1000).decode()
            assert "READY=1" in ready and f"MAINPID={fwd.pid}" in ready
            fwd.send(signal.SIGHUP)
            assert notify.recv(1000) == b"RELOADING=1"
            assert notify.recv(1000) == b"READY=1"
            assert fwd.stop() == 0
            assert notify.recv(1000) == b"STOPPING=1"
    finally:
        notify.close()
        server.close()


UNIT = Path(__file__).resolve().parents[1] / "contrib" / "systemd" / "portkit-forward.service"
EXAMPLE = UNIT.parents[1] / "forward.example.toml"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_unit_file_verifies_and_its_config_checks(tmp_path: Path) -> None:
    portkit = Path(sys.executable).parent / "portkit"
    if not portkit.exists():
        pytest.skip("the portkit console script is not installed next to this Python")
    unit = tmp_path / "portkit-forward.service"
    text = UNIT.read_text().replace("/usr/local/bin/portkit", str(portkit))
    unit.write_text(text.replace("/etc/portkit/forward.toml", str(EXAMPLE)))
    verify = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0 and verify.stderr.strip() == "", verify.stderr
    # What ExecStartPre runs: the example config is valid.
    check = subprocess.run(
        [str(portkit), "forward", "--config", str(EXAMPLE), "--check"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0 and "3 rule(s) ok" in check.stdout, check.stderr
