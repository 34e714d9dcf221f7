"""The C path of a raw TCP scan of one host: `portkit.scan._rawio` with what it needs, set up once.

A SYN or ACK scan of one host (the case where per-packet cost decides the wall time, e.g. all
65,535 ports of a host) sends its first tries and reads every reply through the optional C
module: probes built and sent a batch per sendmmsg(2), replies read a batch per recvmmsg(2),
parsed (IPv4/IPv6 TCP, ICMP, ICMPv6), cookie-checked and returned as columns. Everything the
C does not decide comes from here, i.e. from the Python cores: the response codes of the one
state table (`_states`), the keyed cookie's per-host lane (`Cookie`), the port order. The
Schedule and the collector stay in Python and take the columns as they are.

The pure-Python path in `_raw` remains: without a compiler (no `_rawio`), when
`ScanOptions.pure_python` asks for it (tests run both paths and compare), for UDP scans and
for scans of several hosts. `ScanOptions.debug` is told which path ran (`io=c|python`).
"""

from __future__ import annotations

import socket
import struct
from array import array
from collections import deque
from collections.abc import Sequence
from types import ModuleType

from portkit.scan._hosts import ScanHost
from portkit.scan._packets import Cookie
from portkit.scan._states import ICMP6_UNREACH, ICMP_UNREACH, RESPONSE_CODE, Response

IGNORE = 0xFF  # _rawio's "this response settles nothing for this scan type"
V4_TCP, V4_ICMP, V6_TCP, V6_ICMP = range(4)


def rawio() -> ModuleType | None:
    """The C module, or None when it was not built."""
    try:
        from portkit.scan import _rawio
    except ImportError:
        return None
    return _rawio


def sockaddr(host: ScanHost) -> bytes:
    """The host's struct sockaddr_in / sockaddr_in6, as sendmmsg's msg_name wants it (both paths)."""
    address, _, scope = host.address.partition("%")
    if host.family == socket.AF_INET6:
        scope_id = (int(scope) if scope.isdigit() else socket.if_nametoindex(scope)) if scope else 0
        return (
            struct.pack("=H", socket.AF_INET6)
            + struct.pack("!HI16s", 0, 0, socket.inet_pton(socket.AF_INET6, address))
            + struct.pack("=I", scope_id)
        )
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", 0, socket.inet_aton(address))


class OneHostIO:
    """The C module's arguments for one host's TCP probes and replies; `send` and `drain` use them.

    `final` is the scan type's response code -> outcome table: responses it maps to 0 are
    passed to the C as IGNORE, so the C accepts exactly what the Python path accepts.
    """

    def __init__(
        self,
        module: ModuleType,
        host: ScanHost,
        host_index: int,
        ports: Sequence[int],
        cookie: Cookie,
        our_port: int,
        flags: int,
        with_ack: bool,
        checksum_base: int,
        final: Sequence[int],
        send_fd: int,
        receive: Sequence[tuple[int, int]],
    ) -> None:
        self.module = module
        self.sockaddr = sockaddr(host)
        self.address = socket.inet_pton(host.family, host.address.partition("%")[0])
        self.offset = host_index * len(ports)
        self.lane = hash(cookie.host_key(host.number))
        self.ports = array("H", ports).tobytes()
        index_of = array("i", [-1]) * 65536
        deque(map(index_of.__setitem__, ports, range(len(ports))), maxlen=0)  # in C, not port by port
        self.index_of = index_of.tobytes()
        self.our_port, self.flags, self.with_ack = our_port, flags, with_ack
        self.checksum_base = checksum_base  # -1: the kernel computes it (IPv6, IPV6_CHECKSUM)
        self.send_fd = send_fd
        self.receive = list(receive)  # (fd, kind)

        def code(response: Response) -> int:
            value = RESPONSE_CODE[response]
            return value if final[value] else IGNORE

        self.rst, self.syn_ack = code(Response.RST), code(Response.SYN_ACK)
        self.icmp4 = bytes(code(ICMP_UNREACH[c]) if c in ICMP_UNREACH else IGNORE for c in range(256))
        self.icmp6 = bytes(code(ICMP6_UNREACH[c]) if c in ICMP6_UNREACH else IGNORE for c in range(256))
        self.agrees = all(
            module.cookie(self.lane, port) == cookie(host.number, port) for port in (0, 1, 80, 65535)
        )

    def send(self, keys: list[int]) -> None:
        """First tries (try 0) of `keys`, all this host's."""
        self.module.send_tcp(
            self.send_fd,
            self.sockaddr,
            keys,
            self.ports,
            self.offset,
            self.lane,
            self.checksum_base,
            self.our_port,
            self.flags,
            self.with_ack,
        )

    def drain(self) -> list[tuple[list[int], bytes, bytes, bytes]]:
        """Every queued reply that answers one of our probes, as (keys, trynos, codes, ttls) per socket."""
        out = []
        for fd, kind in self.receive:
            icmp = self.icmp6 if kind == V6_ICMP else self.icmp4
            columns = self.module.drain(
                fd,
                kind,
                self.address,
                self.index_of,
                self.offset,
                self.lane,
                self.our_port,
                self.rst,
                self.syn_ack,
                icmp,
            )
            if columns[0]:
                out.append(columns)
        return out
