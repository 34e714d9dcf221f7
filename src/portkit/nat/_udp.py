"""The UDP driver of NAT-PMP and PCP: send what `_pmp`/`_pcp` encode to the gateway's port 5351,
retransmit on their schedule, hand back the first response that answers, all within a timeout.

The socket is connected to the gateway, so the kernel drops datagrams from any other source
(both RFCs require a client to ignore those) and reports an ICMP port unreachable as
ECONNREFUSED: a gateway that runs neither protocol says so at once instead of timing out.
"""

from __future__ import annotations

import random
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from portkit.nat import _pcp, _pmp

T = TypeVar("T")


@dataclass(frozen=True)
class NoAnswer:
    """Why an exchange ended without a response: a timeout, a refusal by ICMP, garbage only."""

    reason: str


def exchange(
    gateway: str,
    port: int,
    payload: bytes,
    accept: Callable[[bytes], T | None],
    delays: Iterator[float],
    timeout: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> T | NoAnswer:
    """Send `payload` and resend after each of `delays` until `accept` returns a value for a
    datagram (None: not the answer, keep waiting; ValueError: malformed, keep waiting) or
    `timeout` seconds have passed."""
    deadline = clock() + timeout
    malformed = ""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.connect((gateway, port))
        sends = 0
        for delay in delays:
            now = clock()
            if now >= deadline:
                break
            try:
                sock.send(payload)
            except ConnectionRefusedError:
                return NoAnswer(f"port {port} unreachable")
            except OSError as exc:
                return NoAnswer(exc.strerror or str(exc))
            sends += 1
            until = min(deadline, now + delay)
            while (left := until - clock()) > 0:
                ready, _, _ = select.select([sock], [], [], left)
                if not ready:
                    break
                try:
                    datagram = sock.recv(2048)
                except ConnectionRefusedError:
                    return NoAnswer(f"port {port} unreachable")
                except OSError as exc:
                    return NoAnswer(exc.strerror or str(exc))
                try:
                    answer = accept(datagram)
                except ValueError as exc:
                    malformed = f"; ignored a malformed reply ({exc})"
                    continue
                if answer is not None:
                    return answer
        return NoAnswer(f"no answer in {timeout:g}s ({sends} send{'s' if sends != 1 else ''}){malformed}")


def pmp_ask(gateway: str, request: _pmp.Request, timeout: float) -> _pmp.Response | NoAnswer:
    """One NAT-PMP request and its response."""

    def accept(datagram: bytes) -> _pmp.Response | None:
        response = _pmp.decode_response(datagram)
        return response if _pmp.answers(request, response) else None

    return exchange(gateway, _pmp.PORT, request.encode(), accept, _pmp.retransmit_delays(), timeout)


def pcp_ask(
    gateway: str, request: _pcp.PcpRequest, timeout: float
) -> _pcp.PcpResponse | _pcp.VersionReply | NoAnswer:
    """One PCP request and its response."""

    def accept(datagram: bytes) -> _pcp.PcpResponse | _pcp.VersionReply | None:
        response = _pcp.decode_response(datagram)
        return response if _pcp.answers(request, response) else None

    delays = _pcp.retransmit_delays(random.uniform)
    return exchange(gateway, _pcp.PORT, request.encode(), accept, delays, timeout)
