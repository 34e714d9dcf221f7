"""The splice engine's loops: one listening socket per loop (SO_REUSEPORT), connections spread
over them by the kernel, and one set of statistics and connection limits for the rule."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fixtures_forward import TcpServer, echo_until_eof, forwarder, recv_all
from portkit.errors import UsageError
from portkit.forward import Forwarder, make_rule
from portkit.forward._forwarder import default_loops

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the splice engine is Linux only"
)


def _listeners(port: int) -> int:
    out = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
    return len(out.stdout.strip().splitlines())


def _loop_run_ns(pid: int) -> list[int]:
    """Run time (ns, /proc/.../schedstat) of each loop thread of process `pid`."""
    times = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        if (task / "comm").read_text().strip() == "portkit-splice":
            times.append(int((task / "schedstat").read_text().split()[0]))
    return sorted(times)


def _stats(tmp_path: Path, pid: int) -> dict[str, Any]:
    env = {**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run")}
    out = subprocess.run(
        [sys.executable, "-m", "portkit", "forward", "--stats", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=10,
    )
    assert out.returncode == 0, out.stderr
    (doc,) = [d for d in json.loads(out.stdout)["forwarders"] if d["pid"] == pid]
    return dict(doc)


@pytest.mark.parametrize("loops", [1, 2, 3])
def test_each_loop_has_its_own_listening_socket(loops: int, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        env = {"PORTKIT_FORWARD_LOOPS": str(loops)}
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, env=env) as fwd:
            assert fwd.ready["loops"] == loops
            assert _listeners(fwd.port) == loops
            assert len(_loop_run_ns(fwd.pid)) == loops
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as c:
                c.sendall(b"ping")
                c.shutdown(socket.SHUT_WR)
                assert recv_all(c) == b"ping"
    finally:
        server.close()


def test_connections_spread_over_the_loops_and_the_statistics_add_up(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    count, rounds, size = 40, 200, 100
    try:
        env = {"PORTKIT_FORWARD_LOOPS": "2"}
        with forwarder("127.0.0.1:0", server.address, "-q", tmp_path=tmp_path, env=env) as fwd:
            before = _loop_run_ns(fwd.pid)
            clients = [socket.create_connection(("127.0.0.1", fwd.port), timeout=10) for _ in range(count)]
            for _ in range(rounds):
                for c in clients:
                    c.sendall(b"m" * size)
                for c in clients:
                    got = b""
                    while len(got) < size:
                        got += c.recv(size - len(got))
            during = _stats(tmp_path, fwd.pid)
            for c in clients:
                c.close()
            spent = [after - start for after, start in zip(_loop_run_ns(fwd.pid), before, strict=True)]
            # The kernel hashes each connection to one of the two listening sockets: 40
            # connections all on one loop would happen once in 2^39 runs.
            assert min(spent) > 0.1 * sum(spent), spent
            (rule,) = during["rules"]
            assert during["loops"] == 2
            assert (rule["active"], rule["total"]) == (count, count)
            assert rule["bytes_up"] == rule["bytes_down"] == count * rounds * size
    finally:
        server.close()


def test_the_connection_limit_is_one_for_all_loops(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        env = {"PORTKIT_FORWARD_LOOPS": "2"}
        with forwarder(
            "127.0.0.1:0", server.address, "--max-connections", "3", "-q", tmp_path=tmp_path, env=env
        ) as fwd:
            clients = []
            for _ in range(16):
                # A refused connection is accepted and reset at once: on a busy machine the reset
                # can reach the client before its connect() has returned, which then fails.
                try:
                    clients.append(socket.create_connection(("127.0.0.1", fwd.port), timeout=5))
                except ConnectionResetError:
                    continue
            served = 0
            for c in clients:
                try:
                    c.sendall(b"x")
                    served += c.recv(1) == b"x"
                except (ConnectionResetError, BrokenPipeError):
                    pass
            assert served == 3
            (rule,) = _stats(tmp_path, fwd.pid)["rules"]
            assert (rule["active"], rule["refused_limit"]) == (3, 13)
            for c in clients:
                c.close()
    finally:
        server.close()


def test_a_queued_connection_waits_for_a_slot_freed_on_any_loop(tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        env = {"PORTKIT_FORWARD_LOOPS": "2"}
        with forwarder(
            "127.0.0.1:0",
            server.address,
            "--max-connections",
            "2",
            "--overflow",
            "queue",
            "-q",
            tmp_path=tmp_path,
            env=env,
        ) as fwd:
            waiting = [socket.create_connection(("127.0.0.1", fwd.port), timeout=5) for _ in range(10)]
            for c in waiting:
                c.sendall(b"x")
                c.settimeout(0)
            answered: list[socket.socket] = []
            deadline = time.monotonic() + 20
            while waiting and time.monotonic() < deadline:
                for c in list(waiting):
                    try:
                        if c.recv(1) == b"x":
                            answered.append(c)
                            waiting.remove(c)
                    except BlockingIOError:
                        pass
                # Never more than the limit at once, whichever loop accepted them.
                assert len(answered) <= 2
                time.sleep(0.05)
                if len(answered) == 2 or not waiting:
                    (rule,) = _stats(tmp_path, fwd.pid)["rules"]
                    assert rule["active"] <= 2
                    answered.pop(0).close()  # frees a slot on whichever loop served it
            assert not waiting, "a queued connection never got a freed slot"
            assert not fwd.events("refuse")
            for c in answered:
                c.close()
    finally:
        server.close()


def test_loops_is_a_typed_option_of_the_forwarder() -> None:
    rules = [make_rule("0", "127.0.0.1:9")]
    assert 1 <= default_loops() <= 2
    assert Forwarder(rules, engine="splice").loops == default_loops()
    assert Forwarder(rules, engine="splice", loops=3).loops == 3
    assert Forwarder(rules, engine="asyncio", loops=3).loops == 1  # the asyncio engine runs one loop
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(UsageError, match="invalid loops"):
            Forwarder(rules, engine="splice", loops=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["two", "0", "-1", "1.5", "99999", "\u0663", "1_0"])
def test_bad_loop_count_in_the_environment_is_one_line_and_exit_2(cli: Any, value: str) -> None:
    result = cli("forward", "8080", "127.0.0.1:80", "--check", env={"PORTKIT_FORWARD_LOOPS": value})
    assert result.status == 2, result.stderr
    assert "invalid PORTKIT_FORWARD_LOOPS" in result.stderr and repr(value) in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("first_loops", [1, 2])
def test_a_second_forwarder_never_joins_the_first_ones_listeners(first_loops: int, tmp_path: Path) -> None:
    """SO_REUSEPORT lets any socket of the same user that sets it share the port: a second
    forwarder must still find the port in use rather than take half of the connections."""
    server = TcpServer(echo_until_eof)
    try:
        env = {"PORTKIT_FORWARD_LOOPS": str(first_loops)}
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, env=env) as fwd:
            argv = [sys.executable, "-m", "portkit", "forward", f"127.0.0.1:{fwd.port}", server.address]
            second = subprocess.run(
                [*argv, "--json"],
                capture_output=True,
                text=True,
                env={**os.environ, **env, "PORTKIT_FORWARD_LOOPS": "2", "PORTKIT_RUNTIME_DIR": str(tmp_path)},
                timeout=20,
            )
            assert second.returncode == 1, second.stdout
            assert f"cannot listen on tcp/127.0.0.1:{fwd.port}" in second.stderr and "in use" in second.stderr
            assert _listeners(fwd.port) == first_loops
    finally:
        server.close()
