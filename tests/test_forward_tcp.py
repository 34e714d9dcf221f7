"""TCP forwarding through a real `portkit forward` process, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fixtures_forward import (
    ENGINES,
    LOOP_ONLY,
    TcpServer,
    assert_reset,
    closed_port,
    echo_until_eof,
    forwarder,
    raise_fd_limit,
    recv_all,
    reset,
    splice_loops,
)

pytestmark = pytest.mark.parametrize("engine", ENGINES)

# Payload sizes around the interesting edges: empty, one byte, one segment, pipe and buffer sizes.
SIZES = [0, 1, 2, 100, 1448, 1449, 4096, 65535, 65536, 65537, 262_143, 262_145, 1_000_003]
CONCURRENT = 1000


async def _echo_server(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.write_eof()
    await writer.drain()
    writer.close()


async def _one_client(port: int, size: int, rng: random.Random, start: asyncio.Event) -> tuple[str, str]:
    payload = rng.randbytes(size)
    await start.wait()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    writer.write_eof()
    received = hashlib.sha256()
    while data := await reader.read(65536):
        received.update(data)
    writer.close()
    return hashlib.sha256(payload).hexdigest(), received.hexdigest()


async def _many(port: int, count: int) -> list[tuple[str, str]]:
    rng = random.Random(7)
    start = asyncio.Event()
    # Mostly small payloads with every size from SIZES among them, so 1,000 run at once in seconds.
    sizes = [
        SIZES[i % len(SIZES)] if i % 40 == 0 or SIZES[i % len(SIZES)] < 70_000 else 4096 for i in range(count)
    ]
    tasks = [asyncio.create_task(_one_client(port, size, rng, start)) for size in sizes]
    start.set()
    return await asyncio.wait_for(asyncio.gather(*tasks), 60)


def test_byte_exact_both_ways_with_1000_concurrent_connections(engine: str, tmp_path: Path) -> None:
    raise_fd_limit()

    async def main() -> list[tuple[str, str]]:
        server = await asyncio.start_server(_echo_server, "127.0.0.1", 0, backlog=4096)
        target = server.sockets[0].getsockname()[1]
        try:
            with forwarder(
                "127.0.0.1:0", f"127.0.0.1:{target}", "-q", tmp_path=tmp_path, engine=engine
            ) as fwd:
                results = await _many(fwd.port, CONCURRENT)
                assert fwd.stop() == 0
                stopped = fwd.proc.stdout.read()  # type: ignore[union-attr]
                return [*results, ("stopped", stopped)]
        finally:
            server.close()

    results = asyncio.run(main())
    stopped = results.pop()[1]
    assert len(results) == CONCURRENT
    mismatched = [i for i, (sent, got) in enumerate(results) if sent != got]
    assert not mismatched, f"{len(mismatched)} connections corrupted, first {mismatched[:5]}"
    assert f'"total": {CONCURRENT}' in stopped


def test_half_close_reply_after_eof_arrives(engine: str, tmp_path: Path) -> None:
    def reply_after_eof(conn: socket.socket) -> None:
        request = recv_all(conn)  # until the client's FIN
        conn.sendall(b"got " + hashlib.sha256(request).hexdigest().encode())
        conn.shutdown(socket.SHUT_WR)

    server = TcpServer(reply_after_eof)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            request = os.urandom(300_000)
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
                client.sendall(request)
                client.shutdown(socket.SHUT_WR)
                reply = recv_all(client)
            assert reply == b"got " + hashlib.sha256(request).hexdigest().encode()
            closed = fwd.wait_event("close")
            assert closed["how"] == "closed"
            assert closed["bytes_up"] == len(request)
    finally:
        server.close()


def test_target_half_close_keeps_client_direction_flowing(engine: str, tmp_path: Path) -> None:
    got: list[bytes] = []

    def greet_then_listen(conn: socket.socket) -> None:
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)  # the server is done talking, not done listening
        got.append(recv_all(conn))

    server = TcpServer(greet_then_listen)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
                assert recv_all(client) == b"hello"  # EOF arrived, connection still open
                client.sendall(b"still here")
                client.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 5
            while not got and time.monotonic() < deadline:
                time.sleep(0.02)
            assert got == [b"still here"]
    finally:
        server.close()


def test_reset_from_target_reaches_client_as_reset(engine: str, tmp_path: Path) -> None:
    def read_then_reset(conn: socket.socket) -> None:
        conn.recv(100)
        reset(conn)

    server = TcpServer(read_then_reset)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
                client.sendall(b"x")
                with pytest.raises(ConnectionResetError):
                    while client.recv(100):
                        pass
            assert fwd.wait_event("close")["how"] == "reset-by-target"
    finally:
        server.close()


def test_reset_from_client_reaches_target_as_reset(engine: str, tmp_path: Path) -> None:
    outcome: list[str] = []

    def wait_for_end(conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            while conn.recv(100):
                pass
            outcome.append("eof")
        except ConnectionResetError:
            outcome.append("reset")

    server = TcpServer(wait_for_end)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            client = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            client.sendall(b"x")
            fwd.wait_event("connect")
            time.sleep(0.1)
            reset(client)
            deadline = time.monotonic() + 5
            while not outcome and time.monotonic() < deadline:
                time.sleep(0.02)
            assert outcome == ["reset"]
            assert fwd.wait_event("close")["how"] == "reset-by-client"
    finally:
        server.close()


def test_target_down_refuses_client_quickly_and_logs(engine: str, tmp_path: Path) -> None:
    holder, port = closed_port()
    try:
        with forwarder("127.0.0.1:0", f"127.0.0.1:{port}", tmp_path=tmp_path, engine=engine) as fwd:
            started = time.monotonic()
            assert_reset(fwd.port)
            assert time.monotonic() - started < 1.5  # vs the 5 s connect timeout: refused, not timed out
            error = fwd.wait_event("error")
            assert error["stage"] == "connect" and "ECONNREFUSED" in error["error"]
    finally:
        holder.close()


def test_idle_connection_is_closed(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder(
            "127.0.0.1:0", server.address, "--idle-timeout", "0.5", tmp_path=tmp_path, engine=engine
        ) as fwd:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
                client.sendall(b"ping")
                assert client.recv(10) == b"ping"
                started = time.monotonic()
                assert client.recv(10) == b""  # the forwarder closed it
                assert 0.3 < time.monotonic() - started < 3
            assert fwd.wait_event("close")["how"] == "idle-timeout"
    finally:
        server.close()


def test_a_connection_busy_with_small_messages_is_not_idle(engine: str, tmp_path: Path) -> None:
    """Small messages every 0.1 s for three idle timeouts: never closed for idleness (the
    splice loop's C turn counts its copies as activity in bulk, at each sweep)."""
    server = TcpServer(echo_until_eof)
    try:
        with forwarder(
            "127.0.0.1:0", server.address, "--idle-timeout", "0.5", tmp_path=tmp_path, engine=engine
        ) as fwd:
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
                deadline = time.monotonic() + 1.5
                while time.monotonic() < deadline:
                    client.sendall(b"tick")
                    assert client.recv(10) == b"tick", "closed while busy"
                    time.sleep(0.1)
                client.sendall(b"last")
                assert client.recv(10) == b"last"
                started = time.monotonic()
                assert client.recv(10) == b""  # then quiet: closed for idleness
                assert 0.3 < time.monotonic() - started < 3
            assert fwd.wait_event("close")["how"] == "idle-timeout"
    finally:
        server.close()


@pytest.mark.parametrize(
    ("total", "rate", "idle"),
    [
        # bytes, bytes/s, idle timeout: what the forwarder holds (a pipe, asyncio's write buffer,
        # its socket's send queue) takes longer than the timeout to drain into the reader
        (2_500_000, 1_000_000, "0.4"),
        # Slower: on loopback the reader acknowledges in 64 KiB steps, one every 0.33 s.
        (1_000_000, 200_000, "1.5"),
    ],
    ids=["1MB/s", "200kB/s"],
)
def test_a_slow_steady_reader_is_not_idle(
    engine: str, total: int, rate: int, idle: str, tmp_path: Path
) -> None:
    """Bytes written to a client that reads slowly but never stops are activity: the forwarder
    holding a pipe or buffer for it must not call the connection idle and cut the stream."""
    payload = random.Random(11).randbytes(total)

    def send_all(conn: socket.socket) -> None:
        conn.recv(1)
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)

    server = TcpServer(send_all)
    try:
        with (
            forwarder(
                "127.0.0.1:0", server.address, "--idle-timeout", idle, tmp_path=tmp_path, engine=engine
            ) as fwd,
            socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client,
        ):
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
            client.sendall(b"go")
            received = bytearray()
            started = time.monotonic()
            while chunk := client.recv(4096):
                received += chunk
                ahead = len(received) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # never more than a few ms between reads
            got = len(received)
            assert got == total, f"stream cut after {got} of {total} bytes"
            assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()
            client.close()
            # What the forwarder had buffered may all arrive although it called the connection
            # idle (a close flushes the buffers): its close event says which it was.
            assert fwd.wait_event("close")["how"] == "closed"
    finally:
        server.close()


def test_a_reader_that_stopped_with_bytes_queued_is_idle(engine: str, tmp_path: Path) -> None:
    """The other side of the test above: bytes waiting for a reader that no longer reads do
    not keep the connection alive."""

    def flood(conn: socket.socket) -> None:
        conn.recv(2)
        chunk = os.urandom(1 << 20)
        with contextlib.suppress(OSError):
            while True:  # until the forwarder gives up on the connection
                conn.sendall(chunk)

    server = TcpServer(flood)
    try:
        with (
            forwarder(
                "127.0.0.1:0", server.address, "--idle-timeout", "0.5", tmp_path=tmp_path, engine=engine
            ) as fwd,
            socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client,
        ):
            client.sendall(b"go")
            assert client.recv(1000)  # and no more
            started = time.monotonic()
            closed = fwd.wait_event("close", timeout=5)
            assert closed["how"] == "idle-timeout"
            assert time.monotonic() - started < 2.5
    finally:
        server.close()


def test_a_new_connection_never_gets_a_closed_ones_late_events(engine: str, tmp_path: Path) -> None:
    """One batch of epoll events can hold: X's target reset, a new client Y, X's client reset.
    Handling the first closes X's sockets, accepting Y takes the same descriptor numbers, and
    the third event, about X's old client socket, must not reach Y (it would reset Y)."""
    targets: list[socket.socket] = []

    def hold(conn: socket.socket) -> None:
        conn.recv(10)
        conn.sendall(b"ok")
        targets.append(conn)
        time.sleep(10)

    server = TcpServer(hold)
    try:
        # One loop, so that Y lands where X was; the forwarder is stopped while the three
        # events queue up in its epoll set, in that order.
        one_loop = {"PORTKIT_FORWARD_LOOPS": "1"}
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine, env=one_loop) as fwd:
            x = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            x.sendall(b"x")
            assert x.recv(2) == b"ok"
            os.kill(fwd.pid, signal.SIGSTOP)
            try:
                time.sleep(0.1)
                reset(targets[0])
                time.sleep(0.05)
                y = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)  # the kernel completes it
                time.sleep(0.05)
                reset(x)
                time.sleep(0.05)
            finally:
                os.kill(fwd.pid, signal.SIGCONT)
            with y:
                y.sendall(b"y")
                assert y.recv(2) == b"ok"
            fwd.wait_event("close")
            hows = [event["how"] for event in fwd.events("close")]
            assert sum(how.startswith("reset") for how in hows) == 1, hows  # X alone
    finally:
        server.close()


def test_allow_list_refuses_other_sources(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder(
            "127.0.0.1:0", server.address, "--allow", "127.0.0.1/32", tmp_path=tmp_path, engine=engine
        ) as fwd:
            assert_reset(fwd.port, source="127.0.0.2")
            refusal = fwd.wait_event("refuse")
            assert refusal["reason"] == "allow-list" and refusal["client"].startswith("127.0.0.2:")
            with socket.create_connection(
                ("127.0.0.1", fwd.port), timeout=5, source_address=("127.0.0.1", 0)
            ) as c:
                c.sendall(b"allowed")
                c.shutdown(socket.SHUT_WR)
                assert recv_all(c) == b"allowed"
            assert server.accepted == 1
    finally:
        server.close()


def test_max_connections_refuse(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder(
            "127.0.0.1:0", server.address, "--max-connections", "2", tmp_path=tmp_path, engine=engine
        ) as fwd:
            held = [socket.create_connection(("127.0.0.1", fwd.port), timeout=5) for _ in range(2)]
            for c in held:
                c.sendall(b"x")
                assert c.recv(1) == b"x"
            assert_reset(fwd.port)
            assert fwd.wait_event("refuse")["reason"] == "max-connections"
            for c in held:
                c.close()
    finally:
        server.close()


def test_max_connections_queue(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder(
            "127.0.0.1:0",
            server.address,
            "--max-connections",
            "1",
            "--overflow",
            "queue",
            tmp_path=tmp_path,
            engine=engine,
        ) as fwd:
            first = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            first.sendall(b"1")
            assert first.recv(1) == b"1"
            second = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)  # waits in the backlog
            second.sendall(b"2")
            second.settimeout(0.5)
            with pytest.raises(TimeoutError):
                second.recv(1)
            first.close()
            second.settimeout(5)
            assert second.recv(1) == b"2"
            second.close()
            assert not fwd.events("refuse")
    finally:
        server.close()


def test_slow_reader_bounds_memory_and_loses_nothing(engine: str, tmp_path: Path) -> None:
    gate = threading.Event()
    digest: list[str] = []

    def slow_reader(conn: socket.socket) -> None:
        gate.wait(20)
        digest.append(hashlib.sha256(recv_all(conn)).hexdigest())

    server = TcpServer(slow_reader)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            client = socket.create_connection(("127.0.0.1", fwd.port), timeout=5)
            client.setblocking(False)
            chunk = os.urandom(1 << 20)
            sent = hashlib.sha256()
            total = 0
            stalled_since = time.monotonic()
            while time.monotonic() - stalled_since < 0.5 and total < 512 << 20:
                try:
                    n = client.send(chunk)
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                sent.update(chunk[:n])
                total += n
                stalled_since = time.monotonic()
            # Everything in flight sits in kernel buffers and the forwarder's bounded buffer.
            assert total < 64 << 20, f"{total} bytes accepted with nobody reading: no backpressure"
            rss = int(Path(f"/proc/{fwd.pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            assert rss < 150 << 20
            status = Path(f"/proc/{fwd.pid}/status").read_text().splitlines()
            threads = int(next(line for line in status if line.startswith("Threads:")).split()[1])
            if engine == "splice-threads":
                assert threads >= 4  # main, the loop, and a relay thread per direction
                # Relay threads are scheduled as bulk work (SCHED_BATCH, policy 3 in
                # /proc/PID/task/TID/stat field 41); main and the loop keep the default (0).
                policies = sorted(
                    int((task / "stat").read_text().rsplit(")", 1)[1].split()[38])
                    for task in Path(f"/proc/{fwd.pid}/task").iterdir()
                )
                assert policies.count(os.SCHED_BATCH) == 2 and policies.count(os.SCHED_OTHER) >= 2
            elif engine in LOOP_ONLY:
                assert threads == 1 + splice_loops(engine)  # main and the loops
            if engine.startswith("splice"):  # OS thread names, as top -H, ps -L and perf show them
                names = sorted(
                    (task / "comm").read_text().strip() for task in Path(f"/proc/{fwd.pid}/task").iterdir()
                )
                relays = {"splice-threads": {2}, **{v: {0} for v in LOOP_ONLY}}.get(engine, {0, 2})
                loops = names.count("portkit-splice")
                assert names.count("portkit-relay") in relays and loops == splice_loops(engine), names
            gate.set()
            client.setblocking(True)
            client.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + 10
            while not digest and time.monotonic() < deadline:
                time.sleep(0.02)
            assert digest == [sent.hexdigest()]
            client.close()
    finally:
        gate.set()
        server.close()


def test_listen_backlog_is_somaxconn(engine: str, tmp_path: Path) -> None:
    """asyncio's default backlog of 100 drops bursts; ss shows a listener's backlog as Send-Q."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    with forwarder("127.0.0.1:0", "127.0.0.1:9", tmp_path=tmp_path, engine=engine) as fwd:
        out = subprocess.run(
            ["ss", "-ltnH", f"sport = :{fwd.port}"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.split()
        assert out[0] == "LISTEN" and int(out[2]) == somaxconn


def test_connect_timeout_resets_the_client(engine: str, tmp_path: Path) -> None:
    # A target whose accept queue is full drops new SYNs: the connect hangs until our timeout.
    target = socket.socket()
    target.bind(("127.0.0.1", 0))
    target.listen(0)
    port = target.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            fillers.append(filler)
        time.sleep(0.2)
        with forwarder(
            "127.0.0.1:0", f"127.0.0.1:{port}", "--connect-timeout", "0.5", tmp_path=tmp_path, engine=engine
        ) as fwd:
            started = time.monotonic()
            assert_reset(fwd.port)
            assert 0.4 < time.monotonic() - started < 3
            assert fwd.wait_event("error")["error"] == "connect timeout"
    finally:
        for filler in fillers:
            filler.close()
        target.close()


def test_ipv6_listen_and_target(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof, host="::1")
    try:
        with forwarder("[::1]:0", f"[::1]:{server.port}", tmp_path=tmp_path, engine=engine) as fwd:
            assert fwd.ready["rules"][0]["bound"]["address"] == "::1"
            with socket.create_connection(("::1", fwd.port), timeout=5) as c:
                c.sendall(b"over six")
                c.shutdown(socket.SHUT_WR)
                assert recv_all(c) == b"over six"
    finally:
        server.close()
