"""IP versions, IP protocol numbers and the transports portkit deals in.

`Transport` is the one name for "tcp or udp" across portkit: a socket's kind, a scan's
protocol, a forward rule's protocol, a registry entry's protocol. Each member stands for an
IP protocol number (`Transport.TCP.number == 6`), which is what the kernel and the firewall
see. `RAW` is the kernel's raw IP socket (IPPROTO_RAW in sock_diag): it has no ports, so
`PORT_TRANSPORTS` is what port specs, the registry and the scanner range over.

The firewall matches arbitrary protocol numbers and keeps them as ints; it compares them
with the `IPPROTO_*` constants here, never with bare numbers.

Kept free of `typing` and `dataclasses` at run time: `portkit ls --json` imports it.
"""

from __future__ import annotations

import enum

from portkit.model.errors import UsageError, quote

IPV4 = 4
IPV6 = 6

# IP protocol numbers (IANA "Assigned Internet Protocol Numbers"; <netinet/in.h>).
IPPROTO_ICMP = 1
IPPROTO_TCP = 6
IPPROTO_UDP = 17
IPPROTO_ICMPV6 = 58
IPPROTO_SCTP = 132
IPPROTO_RAW = 255


class Transport(enum.Enum):
    """A transport: TCP, UDP, SCTP (the ones with ports) or RAW (raw IP sockets)."""

    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"
    RAW = "raw"

    def __str__(self) -> str:
        return self.value

    @property
    def number(self) -> int:
        """The IP protocol number this transport stands for."""
        return _NUMBERS[self]

    @property
    def has_ports(self) -> bool:
        return self is not Transport.RAW

    @classmethod
    def from_number(cls, number: int) -> Transport | None:
        """The transport with IP protocol number `number`, or None."""
        return _BY_NUMBER.get(number)

    @classmethod
    def parse(cls, text: str, among: tuple[Transport, ...] | None = None) -> Transport:
        """`tcp`, `UDP`, ... -> Transport, one of `among` (default: those with ports).

        Anything else is a UsageError naming the accepted words.
        """
        accepted = PORT_TRANSPORTS if among is None else among
        try:
            found = cls(text.strip().lower())
        except ValueError:
            found = None
        if found is None or found not in accepted:
            words = ", ".join(t.value for t in accepted)
            raise UsageError(f"invalid protocol {quote(text)}: expected one of {words}")
        return found


# Another name for Transport, kept for callers of the public API that use it.
Protocol = Transport

_NUMBERS = {
    Transport.TCP: IPPROTO_TCP,
    Transport.UDP: IPPROTO_UDP,
    Transport.SCTP: IPPROTO_SCTP,
    Transport.RAW: IPPROTO_RAW,
}
_BY_NUMBER = {number: transport for transport, number in _NUMBERS.items()}

PORT_TRANSPORTS = (Transport.TCP, Transport.UDP, Transport.SCTP)
# What sock_diag's inet handlers list (and `portkit ls --proto` accepts).
SOCKET_TRANSPORTS = (Transport.TCP, Transport.UDP, Transport.RAW)
