"""The idle timeout's decision (`portkit.forward._idle`), driven by a simulated sweep.

The engines' slow-reader tests (tests/test_forward_tcp.py) drive it with real sockets; here
the kernel's counters are a function of time, so each case is exact.
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit.forward._idle import IdleWatch, tcp_progress

SWEEP = 0.25


def closed_at(
    idle: float, last: float, counters: Callable[[float], int | None], phase: float
) -> float | None:
    """Sweep every SWEEP seconds from `phase` for 20 s; when the connection was called idle."""
    watch = IdleWatch()
    for k in range(int(20.0 / SWEEP)):
        now = phase + k * SWEEP
        kept = watch.check(now, last, idle, SWEEP, functools.partial(counters, now))
        if kept is None:
            return now
        last = kept
    return None


@given(st.floats(min_value=0.0, max_value=SWEEP, exclude_max=True), st.sampled_from([0.4, 1.0, 1.5, 5.0]))
def test_a_connection_that_moves_nothing_is_idle_at_the_first_sweep_past_the_timeout(
    phase: float, idle: float
) -> None:
    when = closed_at(idle, 0.0, lambda _now: 1000, phase)
    assert when is not None and idle <= when < idle + SWEEP + 1e-9


@given(st.floats(min_value=0.0, max_value=SWEEP, exclude_max=True))
def test_a_reader_acknowledging_in_steps_within_half_the_timeout_is_never_idle(phase: float) -> None:
    # One 64 KiB acknowledgement every 0.45 s (a loopback reader at about 145 kB/s).
    assert closed_at(1.5, 0.0, lambda now: int(now / 0.45) * 65536, phase) is None


def test_a_reader_that_stops_is_idle_one_to_two_timeouts_after_its_last_step() -> None:
    """Bytes moved are seen when the counters are compared, at the timeout: the timeout then
    runs from that sweep, which may be up to one timeout after the last byte moved."""
    for stop in (4.2, 4.5, 5.0):

        def counters(now: float, stop: float = stop) -> int:
            return int(min(now, stop) / 0.2) * 65536

        when = closed_at(1.0, 0.0, counters, 0.1)
        assert when is not None and stop + 1.0 <= when <= stop + 2.0 + SWEEP


def test_counters_that_cannot_be_read_leave_the_engines_own_clock() -> None:
    when = closed_at(1.0, 0.0, lambda _now: None, 0.05)
    assert when is not None and 1.0 <= when < 1.0 + SWEEP


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_tcp_progress_counts_bytes_acknowledged_and_received(family: int) -> None:
    address = "127.0.0.1" if family == socket.AF_INET else "::1"
    with socket.socket(family) as listener:
        listener.bind((address, 0))
        listener.listen()
        with socket.create_connection(listener.getsockname()[:2]) as client:
            server, _ = listener.accept()
            with server:
                before = tcp_progress([client, server])
                client.sendall(b"x" * 1000)
                assert server.recv(1000, socket.MSG_WAITALL) == b"x" * 1000
                deadline = time.monotonic() + 5
                while (after := tcp_progress([client, server])) != (before or 0) + 2000:
                    assert time.monotonic() < deadline, (before, after)  # the ACK may trail a little
                    time.sleep(0.01)
                assert before is not None  # 1000 acknowledged to the client, 1000 received by the server
            assert tcp_progress([socket.socket(socket.AF_UNIX)]) is None
