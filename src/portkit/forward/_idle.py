"""The idle timeout of a forwarded TCP connection, and the kernel's word against it.

An engine knows when it last relayed a byte (`last`). That is not all the activity there is:
a peer that reads slowly but steadily takes bytes from the kernel's send queue, or from the
engine's own buffer, while the engine reads and writes nothing new (asyncio pauses reading the
other side until its write buffer drains below the low-water mark; a splice relay thread sleeps
in one long splice). From the engine that looks like silence; the kernel's counters say
otherwise. `tcp_progress` reads them from TCP_INFO: bytes the peers acknowledged plus bytes
received from them, on both sockets. Acknowledgements advance only as a reader makes room, so a
reader that stopped reading moves nothing (window probes acknowledge no data).

`IdleWatch.check` decides, once per sweep, with no clock or socket of its own: when the
connection has been quiet for half the timeout (or, for a timeout of a few sweeps, one sweep
before it) it notes the counters; at the timeout it reads them again, and bytes moved since
the note make the connection active as of now, the counters noted again. A reader's
acknowledgements come in steps (on loopback, whose segments are 64 KiB, one per 64 KiB read),
so the comparison spans half the timeout rather than one sweep. Bytes moved are seen only when
the counters are compared, so a reader that stops is called idle one to two timeouts after its
last byte. Counters that cannot be read (sockets gone, a kernel before 4.1) leave the engine's
own `last` to decide.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable

# struct tcp_info (linux/tcp.h): __u64 tcpi_bytes_acked, tcpi_bytes_received at byte 120 (Linux 4.1+)
_TCP_INFO_BYTES_AT = 120
_TCP_INFO_BYTES_END = 136


def tcp_progress(socks: Iterable[socket.socket]) -> int | None:
    """Bytes acknowledged by the peers plus received from them, summed over `socks`; None
    when a socket's TCP_INFO cannot be read or is too short to hold the counters."""
    total = 0
    for s in socks:
        try:
            info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_BYTES_END)
        except OSError:
            return None
        if len(info) < _TCP_INFO_BYTES_END:
            return None
        acked, received = struct.unpack_from("QQ", info, _TCP_INFO_BYTES_AT)
        total += acked + received
    return total


class IdleWatch:
    """One connection's idle decision; `check` is called by the engine's sweep."""

    __slots__ = ("noted",)

    def __init__(self) -> None:
        # (last, progress): the counters as noted in the quiet period that began at `last`
        self.noted: tuple[float, int] | None = None

    def check(
        self, now: float, last: float, idle: float, sweep: float, progress: Callable[[], int | None]
    ) -> float | None:
        """The connection's `last` as it now stands (`now` when the kernel moved bytes since the
        note), or None when it has been idle for `idle` seconds."""
        quiet = now - last
        if quiet < min(idle / 2, idle - sweep):
            return last
        noted = self.noted if self.noted is not None and self.noted[0] == last else None
        if noted is None:
            moved = progress()
            if moved is not None:  # compared at a later sweep, at most one late
                self.noted = (last, moved)
                return last
            return last if quiet < idle else None
        if quiet < idle:
            return last
        moved = progress()
        if moved is not None and moved != noted[1]:
            self.noted = (now, moved)
            return now
        return None
