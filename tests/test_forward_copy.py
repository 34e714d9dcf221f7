"""The splice engine's loop paths agree: the copy fast path in the loop, `pump`'s copy path and
its splice path carry the same conversation byte for byte, in process, on real sockets.

The whole TCP suite also runs through each path in a forwarder process (fixtures_forward's
variants); this module pins down the fast path against `pump` itself (`engine.quick`), and
that a conversation which mixes messages with bulk moves between copying and splicing.
"""

from __future__ import annotations

import io
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from fixtures_forward import TcpServer, echo_until_eof, recv_all
from portkit.forward._log import EventLog
from portkit.forward._rules import make_rule
from portkit.forward._sockets import open_listener
from portkit.forward._splice import COPY_BUFFER, SpliceEngine, _Connection, _Direction, _quickio, available
from portkit.forward._stats import RuleStats

pytestmark = pytest.mark.skipif(not available(), reason="no splice(2) on this platform")

# Messages around the copy buffer's edges, and bulk far beyond it, in one conversation.
SIZES = [1, 3, 100, 1448, COPY_BUFFER - 1, COPY_BUFFER, COPY_BUFFER + 1, 7, 300_000, 2, 1_000_003, 40]


@contextmanager
def engine_forwarding(
    target: str, *, copy: str, quick: bool, in_c: bool = False, stats: RuleStats | None = None
) -> Iterator[tuple[SpliceEngine, int]]:
    """A SpliceEngine in this process forwarding a loopback port to `target` (no relay threads).
    `quick`: the copy fast path; `in_c`: its C turn (`_quickio`), else `_copy_quick`."""
    engine = SpliceEngine(EventLog(io.StringIO(), quiet=True), thread_after=-1, copy=copy)
    engine.quick = quick
    engine.in_c = in_c
    rule = make_rule("127.0.0.1:0", target)
    listener = open_listener(rule.listen, rule.protocol)
    port = listener.getsockname()[1]
    engine.start()
    stats = stats or RuleStats("test", "tcp", f"127.0.0.1:{port}", target, "splice")
    engine.add_rule(listener, rule, stats)
    try:
        yield engine, port
    finally:
        engine.stop()


def converse(port: int, seed: int) -> list[bytes]:
    """Request/response through `port` against an echo server: each message sent, its echo read
    back whole, then a half-close and the rest up to EOF. Returns what came back, message by message."""
    rng = random.Random(seed)
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
        for size in SIZES:
            message = rng.randbytes(size)
            client.sendall(message)
            got = bytearray()
            while len(got) < size:
                chunk = client.recv(size - len(got))
                assert chunk, f"EOF after {len(got)} of {size} bytes"
                got += chunk
            assert bytes(got) == message, f"message of {size} bytes came back altered"
            replies.append(bytes(got))
        client.shutdown(socket.SHUT_WR)
        assert recv_all(client) == b""  # the target's FIN, passed on after everything else
    return replies


@pytest.mark.parametrize(
    ("copy", "quick"), [("auto", True), ("auto", False), ("always", True), ("always", False), ("never", True)]
)
def test_every_loop_path_carries_the_same_conversation(copy: str, quick: bool) -> None:
    server = TcpServer(echo_until_eof)
    handled = {True: 0, False: 0}  # events the fast path took, and events it left to on_event
    try:
        with engine_forwarding(server.address, copy=copy, quick=quick, in_c=False) as (engine, port):
            original = engine._copy_quick

            def counted(d: _Direction, mask: int) -> bool:
                took = original(d, mask)
                handled[took] += 1
                return took

            engine._copy_quick = counted  # type: ignore[method-assign]
            replies = converse(port, seed=11)
            deadline = time.monotonic() + 5
            while engine.connections and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not engine.connections, "the connection did not close after both FINs"
    finally:
        server.close()
    rng = random.Random(11)
    assert replies == [rng.randbytes(size) for size in SIZES]
    # The fast path takes events where the loop copies (with `quick`), and nowhere else.
    if not quick:
        assert handled == {True: 0, False: 0}
    elif copy == "never":
        assert handled[True] == 0 and handled[False] > 0
    else:
        assert handled[True] > 0


@pytest.mark.skipif(_quickio is None, reason="the C module _quickio is not built (no compiler at install)")
@pytest.mark.parametrize("copy", ["auto", "always", "never"])
def test_the_c_turn_carries_the_same_conversation_and_counts_every_byte(copy: str) -> None:
    """The loop turn in C (`_quickio`) against the same conversation: the same bytes, the
    copies it made counted into the rule's stats, and none where the loop never copies."""
    server = TcpServer(echo_until_eof)
    stats = RuleStats("test", "tcp", "127.0.0.1:0", server.address, "splice")
    by_c = [0]
    try:
        forwarding = engine_forwarding(server.address, copy=copy, quick=True, in_c=True, stats=stats)
        with forwarding as (engine, port):
            original = engine.fold

            def counted(connection: _Connection) -> None:
                for d in (connection.up, connection.down):
                    if d.src < len(engine.moved):
                        by_c[0] += engine.moved[d.src]
                original(connection)

            engine.fold = counted  # type: ignore[method-assign]
            replies = converse(port, seed=12)
            deadline = time.monotonic() + 5
            while engine.connections and time.monotonic() < deadline:
                time.sleep(0.01)
            assert not engine.connections, "the connection did not close after both FINs"
            assert all(entry == -1 for entry in engine.peers), "a closed socket is still the C turn's"
    finally:
        server.close()
    rng = random.Random(12)
    assert replies == [rng.randbytes(size) for size in SIZES]
    assert stats.bytes_up == stats.bytes_down == sum(SIZES)
    if copy == "never":
        assert by_c[0] == 0
    else:
        assert by_c[0] > 0


TURNS = [False] + ([True] if _quickio is not None else [])  # the loop turn in Python, and in C where built


@pytest.mark.parametrize("in_c", TURNS)
def test_auto_moves_a_direction_to_splice_for_bulk_and_back(
    monkeypatch: pytest.MonkeyPatch, in_c: bool
) -> None:
    """A full copy buffer moves the direction to splice; a short splice read moves it back."""
    server = TcpServer(echo_until_eof)
    spliced: list[int] = []
    real_splice = os.splice

    def watching(src: int, dst: int, count: int, *args: object, **kwargs: object) -> int:
        n = real_splice(src, dst, count, *args, **kwargs)  # type: ignore[arg-type]
        spliced.append(n)
        return n

    monkeypatch.setattr(os, "splice", watching)
    try:
        with (
            engine_forwarding(server.address, copy="auto", quick=True, in_c=in_c) as (engine, port),
            socket.create_connection(("127.0.0.1", port), timeout=10) as client,
        ):
            client.sendall(b"ping")
            assert client.recv(16) == b"ping"
            assert spliced == []  # small messages never touch a pipe
            bulk = os.urandom(4 << 20)
            sender = threading.Thread(target=client.sendall, args=(bulk,))  # the echo comes back meanwhile
            sender.start()
            got = bytearray()
            while len(got) < len(bulk):
                got += client.recv(1 << 20)
            sender.join(10)
            assert bytes(got) == bulk
            assert sum(spliced) > len(bulk)  # most of it went through pipes (both ways)
            before = len(spliced)
            for _ in range(20):
                client.sendall(b"small")
                assert client.recv(16) == b"small"
            # Back to copying: at most the one short splice per direction that switched back.
            assert len(spliced) - before <= 4
            directions = [d for c in engine.connections for d in (c.up, c.down)]
            assert directions and all(d.copying for d in directions)
    finally:
        server.close()
