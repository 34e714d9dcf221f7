"""Rule 1: every decision "this response means this port state" lives here, in one table.

Theory of operation: a driver observes a `Response` to a probe (a SYN-ACK, a RST, an ICMP
destination-unreachable with some code, a UDP datagram, a connect() outcome, or nothing at
all after the last retry). `classify(scan_type, response)` looks the pair up in `STATES` and
returns the port's `PortState` and the `Reason` nmap would print. Pairs that are not in the
table are responses that say nothing about the port (e.g. a SYN-ACK to an ACK probe); drivers
ignore them and keep waiting, as nmap does. The names and meanings are nmap's
(nmap's `scan_engine_raw.cc`, `scan_engine_connect.cc` and `reason.cc`); `PortState` and
`Reason` are the shared model's (portkit.model).
"""

from __future__ import annotations

import enum

from portkit.model.portstate import PortState, Reason
from portkit.model.protocols import Transport


class ScanType(enum.Enum):
    CONNECT = "connect"
    SYN = "syn"
    UDP = "udp"
    ACK = "ack"

    @property
    def flag(self) -> str:
        return {"connect": "-sT", "syn": "-sS", "udp": "-sU", "ack": "-sA"}[self.value]

    @property
    def protocol(self) -> Transport:
        return Transport.UDP if self is ScanType.UDP else Transport.TCP

    @property
    def raw(self) -> bool:
        return self is not ScanType.CONNECT

    def __str__(self) -> str:
        return self.value


class Response(enum.Enum):
    """What came back for a probe, as a driver sees it."""

    SYN_ACK = "syn-ack"
    RST = "rst"
    UDP_REPLY = "udp-reply"
    ICMP_NET_UNREACH = "icmp 3/0"
    ICMP_HOST_UNREACH = "icmp 3/1"
    ICMP_PROTO_UNREACH = "icmp 3/2"
    ICMP_PORT_UNREACH = "icmp 3/3"
    ICMP_NET_PROHIBITED = "icmp 3/9"
    ICMP_HOST_PROHIBITED = "icmp 3/10"
    ICMP_ADMIN_PROHIBITED = "icmp 3/13"
    CONNECTED = "connected"
    REFUSED = "ECONNREFUSED"
    HOST_UNREACHABLE = "EHOSTUNREACH"
    NET_UNREACHABLE = "ENETUNREACH"
    PROHIBITED = "EACCES"  # ICMPv6 administratively prohibited, as connect() reports it
    NONE = "no response"


# ICMP destination-unreachable code (IPv4) -> Response; IPv6 codes are mapped onto the same.
ICMP_UNREACH: dict[int, Response] = {
    0: Response.ICMP_NET_UNREACH,
    1: Response.ICMP_HOST_UNREACH,
    2: Response.ICMP_PROTO_UNREACH,
    3: Response.ICMP_PORT_UNREACH,
    9: Response.ICMP_NET_PROHIBITED,
    10: Response.ICMP_HOST_PROHIBITED,
    13: Response.ICMP_ADMIN_PROHIBITED,
}
# ICMPv6 type 1 codes: 0 no route, 1 admin prohibited, 3 address unreachable, 4 port unreachable.
ICMP6_UNREACH: dict[int, Response] = {
    0: Response.ICMP_NET_UNREACH,
    1: Response.ICMP_ADMIN_PROHIBITED,
    3: Response.ICMP_HOST_UNREACH,
    4: Response.ICMP_PORT_UNREACH,
}

_ICMP_REASON = {
    Response.ICMP_NET_UNREACH: Reason.NET_UNREACH,
    Response.ICMP_HOST_UNREACH: Reason.HOST_UNREACH,
    Response.ICMP_PROTO_UNREACH: Reason.PROTO_UNREACH,
    Response.ICMP_PORT_UNREACH: Reason.PORT_UNREACH,
    Response.ICMP_NET_PROHIBITED: Reason.NET_PROHIBITED,
    Response.ICMP_HOST_PROHIBITED: Reason.HOST_PROHIBITED,
    Response.ICMP_ADMIN_PROHIBITED: Reason.ADMIN_PROHIBITED,
}

_F, _C, _O = PortState.FILTERED, PortState.CLOSED, PortState.OPEN

STATES: dict[tuple[ScanType, Response], tuple[PortState, Reason]] = {
    # SYN: SYN-ACK open, RST closed, any unreachable or silence filtered.
    (ScanType.SYN, Response.SYN_ACK): (_O, Reason.SYN_ACK),
    (ScanType.SYN, Response.RST): (_C, Reason.RESET),
    **{(ScanType.SYN, r): (_F, reason) for r, reason in _ICMP_REASON.items()},
    (ScanType.SYN, Response.NONE): (_F, Reason.NO_RESPONSE),
    # connect(): the kernel turns ICMP port-unreachable into ECONNREFUSED and
    # admin-prohibited into EHOSTUNREACH, so nmap -sT says closed/conn-refused and filtered/host-unreach.
    (ScanType.CONNECT, Response.CONNECTED): (_O, Reason.SYN_ACK),
    (ScanType.CONNECT, Response.REFUSED): (_C, Reason.CONN_REFUSED),
    (ScanType.CONNECT, Response.HOST_UNREACHABLE): (_F, Reason.HOST_UNREACH),
    (ScanType.CONNECT, Response.NET_UNREACHABLE): (_F, Reason.NET_UNREACH),
    (ScanType.CONNECT, Response.PROHIBITED): (_F, Reason.ADMIN_PROHIBITED),
    (ScanType.CONNECT, Response.NONE): (_F, Reason.NO_RESPONSE),
    # UDP: any datagram open, port-unreachable closed, other unreachables filtered, silence open|filtered.
    (ScanType.UDP, Response.UDP_REPLY): (_O, Reason.UDP_RESPONSE),
    **{
        (ScanType.UDP, r): (_C if r is Response.ICMP_PORT_UNREACH else _F, reason)
        for r, reason in _ICMP_REASON.items()
    },
    (ScanType.UDP, Response.NONE): (PortState.OPEN_FILTERED, Reason.NO_RESPONSE),
    # ACK: a RST means the packet got through (unfiltered); unreachables and silence filtered.
    (ScanType.ACK, Response.RST): (PortState.UNFILTERED, Reason.RESET),
    **{(ScanType.ACK, r): (_F, reason) for r, reason in _ICMP_REASON.items()},
    (ScanType.ACK, Response.NONE): (_F, Reason.NO_RESPONSE),
}


# The drivers' hot path works with small integers instead of enum members (hashing an Enum runs
# Python code): a Response's code is its position, an outcome's code its position in OUTCOMES.
RESPONSES: list[Response] = list(Response)
RESPONSE_CODE: dict[Response, int] = {r: i for i, r in enumerate(RESPONSES)}
NO_RESPONSE = RESPONSE_CODE[Response.NONE]
OUTCOMES: list[tuple[PortState, Reason] | None] = [
    None,
    *sorted(set(STATES.values()), key=lambda o: (o[0].value, o[1].value)),
]
OUTCOME_CODE: dict[tuple[PortState, Reason], int] = {o: i for i, o in enumerate(OUTCOMES) if o is not None}


def outcome_codes(scan_type: ScanType) -> list[int]:
    """Response code -> outcome code (0: the response settles nothing) for one scan type."""
    table = []
    for response in RESPONSES:
        outcome = STATES.get((scan_type, response))
        table.append(OUTCOME_CODE[outcome] if outcome else 0)
    return table


def classify(scan_type: ScanType, response: Response) -> tuple[PortState, Reason] | None:
    """The port state and reason for `response` to a `scan_type` probe, or None if it says nothing."""
    return STATES.get((scan_type, response))


def is_final(scan_type: ScanType, response: Response) -> bool:
    """Whether this response settles the port (everything in the table but silence does)."""
    return response is not Response.NONE and (scan_type, response) in STATES
