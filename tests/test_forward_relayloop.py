"""The C relay loop (`portkit.forward._relayloop.relay`) on its own, against real loopback TCP
sockets and pipes: every status it can return, bad arguments and descriptors, and that it
really runs without the GIL. The forwarder tests run both loops end to end (the engine
variants `splice-threads` and `splice-threads-pure` in fixtures_forward)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from fixtures_forward import TcpServer, echo_until_eof, forwarder, recv_all

relayloop: ModuleType | None
try:
    from portkit.forward import _relayloop as relayloop
except ImportError:  # not built: tests/test_build.py says whether it should have been
    relayloop = None

needs_c = pytest.mark.skipif(relayloop is None, reason="portkit.forward._relayloop was not built")

PIPE = 1 << 20


def _timeval(seconds: float) -> bytes:
    return struct.pack("ll", int(seconds), int(seconds % 1 * 1_000_000))


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair (outside end, relay end)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        outside = socket.create_connection(listener.getsockname(), timeout=5)
        inside, _ = listener.accept()
    inside.setblocking(True)
    try:
        yield outside, inside
    finally:
        outside.close()
        inside.close()


@contextlib.contextmanager
def relay_setup(
    rcvtimeo: float = 0.05, sndtimeo: float = 0.25
) -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket, tuple[int, int]]]:
    """sender -> [src ... relay ... dst] -> receiver, with the relay's sockets set up as the
    splice engine sets up a threaded connection, and a 1 MiB blocking pipe."""
    with tcp_pair() as (sender, src), tcp_pair() as (receiver, dst):
        src.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(rcvtimeo))
        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, _timeval(sndtimeo))
        r, w = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE)
        try:
            yield sender, src, dst, receiver, (r, w)
        finally:
            for fd in (r, w):
                with contextlib.suppress(OSError):
                    os.close(fd)


def closed_fd() -> int:
    """A descriptor number that is not open (right now: take it just before use)."""
    fd = os.open("/dev/null", os.O_RDONLY)
    os.close(fd)
    return fd


@needs_c
def test_moves_every_byte_in_budgeted_calls_then_reports_eof() -> None:
    assert relayloop is not None
    payload = os.urandom(24 << 20)
    received: list[bytes] = []
    with relay_setup() as (sender, src, dst, receiver, (r, w)):
        reader = threading.Thread(target=lambda: received.append(recv_all(receiver, 20)), daemon=True)
        reader.start()

        def send() -> None:
            sender.sendall(payload)
            sender.shutdown(socket.SHUT_WR)

        threading.Thread(target=send, daemon=True).start()
        statuses: list[int] = []
        pending = got_total = sent_total = 0
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, got, sent, err = relayloop.relay(
                src.fileno(), dst.fileno(), r, w, pending, PIPE, 2 << 20, 5.0
            )
            assert err == 0
            pending += got - sent
            got_total += got
            sent_total += sent
            statuses.append(status)
            if status == relayloop.EOF:
                break
        assert statuses[-1] == relayloop.EOF and pending == 0
        # 2 MiB budgets: the caller saw the counters move many times during the transfer.
        assert statuses.count(relayloop.BUDGET) >= 8
        assert got_total == sent_total == len(payload)
        dst.shutdown(socket.SHUT_WR)
        reader.join(20)
    assert hashlib.sha256(received[0]).digest() == hashlib.sha256(payload).digest()


@needs_c
def test_time_budget_returns_during_a_trickle() -> None:
    assert relayloop is not None
    with relay_setup(rcvtimeo=2.0) as (sender, src, dst, receiver, (r, w)):
        stop = threading.Event()

        def trickle() -> None:
            while not stop.is_set():
                sender.send(b"x" * 100)
                time.sleep(0.01)

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        try:
            started = time.monotonic()
            status, got, sent, _ = relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 30, 0.2)
            took = time.monotonic() - started
        finally:
            stop.set()
            trickler.join(5)
        assert status == relayloop.BUDGET
        assert got == sent > 0
        assert 0.15 < took < 1.5  # the trickle never pauses for SO_RCVTIMEO (2 s): the clock ended it
        receiver.settimeout(5)
        assert len(receiver.recv(1 << 20)) > 0


@needs_c
def test_idle_when_src_has_nothing_for_the_receive_timeout() -> None:
    assert relayloop is not None
    with relay_setup(rcvtimeo=0.1) as (_sender, src, dst, _receiver, (r, w)):
        started = time.monotonic()
        assert relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 20, 5.0) == (
            relayloop.IDLE,
            0,
            0,
            0,
        )
        assert 0.05 < time.monotonic() - started < 2


@needs_c
def test_blocked_on_a_slow_reader_keeps_the_bytes_then_resumes() -> None:
    assert relayloop is not None
    payload = os.urandom(8 << 20)
    with relay_setup(rcvtimeo=0.5, sndtimeo=0.1) as (sender, src, dst, receiver, (r, w)):
        dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 << 10)
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)

        def send() -> None:
            sender.sendall(payload)
            sender.shutdown(socket.SHUT_WR)

        sender_thread = threading.Thread(target=send, daemon=True)
        sender_thread.start()
        pending = 0
        status = relayloop.BUDGET
        for _ in range(200):
            status, got, sent, err = relayloop.relay(
                src.fileno(), dst.fileno(), r, w, pending, PIPE, 1 << 30, 5.0
            )
            pending += got - sent
            if status == relayloop.BLOCKED:
                break
        assert status == relayloop.BLOCKED and err == 0 and 0 < pending <= PIPE
        # The reader comes back: the same pipe is flushed, and every byte arrives in order.
        received = bytearray()

        def read() -> None:
            receiver.settimeout(10)
            while len(received) < len(payload):
                chunk = receiver.recv(1 << 20)
                if not chunk:
                    return
                received.extend(chunk)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        for _ in range(1000):
            status, got, sent, err = relayloop.relay(
                src.fileno(), dst.fileno(), r, w, pending, PIPE, 1 << 30, 5.0
            )
            pending += got - sent
            if status in (relayloop.EOF, relayloop.SRC_ERROR, relayloop.DST_ERROR):
                break
        assert (status, pending, err) == (relayloop.EOF, 0, 0)
        reader.join(10)
        sender_thread.join(10)
    assert bytes(received) == payload


@needs_c
def test_reset_from_src_is_src_error_with_its_errno() -> None:
    assert relayloop is not None
    with relay_setup(rcvtimeo=2.0) as (sender, src, dst, _receiver, (r, w)):
        sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sender.close()
        status, got, sent, err = relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 20, 5.0)
        assert (status, got, sent, err) == (relayloop.SRC_ERROR, 0, 0, errno.ECONNRESET)


@needs_c
def test_reset_from_dst_is_dst_error_and_the_bytes_stay_pending() -> None:
    assert relayloop is not None
    with relay_setup() as (sender, src, dst, receiver, (r, w)):
        receiver.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        receiver.close()
        time.sleep(0.05)  # the RST reaches dst
        sender.sendall(b"y" * 1000)
        status, got, sent, err = relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 20, 5.0)
        assert status == relayloop.DST_ERROR and err in (errno.ECONNRESET, errno.EPIPE)
        assert (got, sent) == (1000, 0)  # the caller discards the pipe: 1000 bytes are still in it


@needs_c
def test_shutdown_rd_wakes_a_blocked_reader_as_eof() -> None:
    """How the engine ends a threaded connection: shutdown(SHUT_RD) on src, nothing on the wire."""
    assert relayloop is not None
    with relay_setup(rcvtimeo=5.0) as (_sender, src, dst, _receiver, (r, w)):
        threading.Timer(0.1, src.shutdown, args=(socket.SHUT_RD,)).start()
        started = time.monotonic()
        assert relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 20, 10.0)[0] == relayloop.EOF
        assert time.monotonic() - started < 3


@needs_c
def test_the_gil_is_released_while_it_waits() -> None:
    assert relayloop is not None
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    with relay_setup(rcvtimeo=0.3) as (_sender, src, dst, _receiver, (r, w)):
        spinner = threading.Thread(target=spin, daemon=True)
        spinner.start()
        time.sleep(0.02)
        before = ticks
        # This thread holds no GIL for 0.3 s; with the GIL held the spinner would not move at all.
        relayloop.relay(src.fileno(), dst.fileno(), r, w, 0, PIPE, 1 << 20, 5.0)
        during = ticks - before
        stop.set()
        spinner.join(5)
    assert during > 1000


@needs_c
@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((-1, 5, 6, 7, 0, PIPE, 1, 1.0), "descriptors"),
        ((4, 5, 6, -7, 0, PIPE, 1, 1.0), "descriptors"),
        ((4, 5, 6, 7, 0, 0, 1, 1.0), "chunk"),  # splice(len 0) returns 0: it would read as EOF
        ((4, 5, 6, 7, 0, -1, 1, 1.0), "chunk"),
        ((4, 5, 6, 7, 0, PIPE, 0, 1.0), "max_bytes"),
        ((4, 5, 6, 7, 0, PIPE, 1, 0.0), "max_seconds"),
        ((4, 5, 6, 7, 0, PIPE, 1, float("nan")), "max_seconds"),
        ((4, 5, 6, 7, -1, PIPE, 1, 1.0), "pending"),
    ],
)
def test_bad_numbers_are_refused_before_any_syscall(args: tuple[object, ...], message: str) -> None:
    assert relayloop is not None
    with pytest.raises(ValueError, match=message):
        relayloop.relay(*args)


@needs_c
def test_wrong_types_and_counts_raise_type_errors() -> None:
    assert relayloop is not None
    with pytest.raises(TypeError):
        relayloop.relay("3", 4, 5, 6, 0, PIPE, 1, 1.0)
    with pytest.raises(TypeError):
        relayloop.relay(3, 4, 5, 6, 0, PIPE, 1)
    with pytest.raises(OverflowError):
        relayloop.relay(1 << 40, 4, 5, 6, 0, PIPE, 1, 1.0)


@needs_c
def test_bad_descriptors_are_errors_not_crashes() -> None:
    assert relayloop is not None
    with relay_setup() as (_sender, src, dst, _receiver, (r, w)):
        bad = closed_fd()
        # A closed src: the read side failed.
        assert relayloop.relay(bad, dst.fileno(), r, w, 0, PIPE, 1, 1.0) == (
            relayloop.SRC_ERROR,
            0,
            0,
            errno.EBADF,
        )
        # A closed dst with bytes in the pipe: the write side failed, the bytes are still pending.
        os.write(w, b"z" * 10)
        assert relayloop.relay(src.fileno(), bad, r, w, 10, PIPE, 1, 1.0) == (
            relayloop.DST_ERROR,
            0,
            0,
            errno.EBADF,
        )
        # A src that cannot splice at all (a directory).
        directory = os.open("/", os.O_RDONLY)
        try:
            status, _, _, err = relayloop.relay(directory, dst.fileno(), r, w, 0, PIPE, 1, 1.0)
        finally:
            os.close(directory)
        assert status == relayloop.SRC_ERROR and err in (errno.EINVAL, errno.EISDIR, errno.EBADF)


@needs_c
def test_a_pipe_without_a_reader_is_an_error() -> None:
    assert relayloop is not None
    with relay_setup() as (sender, src, dst, _receiver, (r, w)):
        os.close(r)
        sender.sendall(b"a" * 100)
        status, got, sent, err = relayloop.relay(src.fileno(), dst.fileno(), closed_fd(), w, 0, PIPE, 1, 1.0)
        assert (status, got, sent, err) == (relayloop.SRC_ERROR, 0, 0, errno.EPIPE)


@needs_c
def test_a_pipe_whose_writer_is_gone_reads_as_a_broken_dst() -> None:
    """`pending` larger than what the pipe holds, writer closed: splice returns 0 with bytes
    supposedly left; the loop must report it, not spin on it."""
    assert relayloop is not None
    with relay_setup() as (_sender, src, dst, receiver, (r, w)):
        os.write(w, b"b" * 10)
        os.close(w)
        status, got, sent, err = relayloop.relay(src.fileno(), dst.fileno(), r, closed_fd(), 20, PIPE, 1, 1.0)
        assert (status, got, sent, err) == (relayloop.DST_ERROR, 0, 10, errno.EPIPE)
        receiver.settimeout(5)
        assert receiver.recv(100) == b"b" * 10


# --- which loop the forwarder runs --------------------------------------------------------------


@pytest.mark.parametrize("engine", ["splice-threads", "splice-threads-pure"])
def test_forwarder_says_which_relay_loop_runs(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("127.0.0.1:0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            start = fwd.wait_event("start")
            maps = Path(f"/proc/{fwd.pid}/maps").read_text()
            payload = os.urandom(3 << 20)
            with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:

                def send() -> None:
                    client.sendall(payload)
                    client.shutdown(socket.SHUT_WR)

                threading.Thread(target=send, daemon=True).start()
                assert recv_all(client) == payload
    finally:
        server.close()
    if engine == "splice-threads-pure" or relayloop is None:
        assert start["relay"] == "python" and "_relayloop" not in maps
    else:
        assert start["relay"] == "c" and "_relayloop" in maps
