"""The packet the evaluator is asked about: what a firewall rule can look at, and its parser.

A `Packet` is the first packet of a flow as the firewall sees it: protocol, addresses,
ports, interfaces, and the conntrack state the kernel would attach (`new` by default).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.errors import UsageError, quote
from portkit.firewall._model import ICMP_TYPES, ICMPV6_TYPES, IPPROTO, IPPROTO_NAMES, PORT_PROTOS, CtState
from portkit.model import Endpoint, parse_address, parse_decimal
from portkit.model.endpoints import IPAddress
from portkit.model.protocols import IPPROTO_ICMP, IPPROTO_ICMPV6, IPV4, IPV6

_FLOW_HELP = (
    "expected 'PROTO SRC[:PORT] -> DST[:PORT] [in IF] [out IF] [state S]', "
    "e.g. 'tcp 192.0.2.5 -> 10.0.0.2:443'"
)


def _byte(text: str) -> int | None:
    """A number 0-255 in ASCII digits (int() would also take '²'), else None."""
    number = parse_decimal(text)
    return number if number is not None and number < 256 else None


def parse_l4proto(text: str) -> int:
    t = text.strip().lower()
    number = _byte(t)
    if number is not None:
        return number
    if t in IPPROTO:
        return IPPROTO[t]
    raise UsageError(
        f"invalid protocol {quote(text)}: expected tcp, udp, sctp, icmp, icmpv6 or a number 0-255"
    )


def parse_state(text: str) -> CtState:
    try:
        return CtState(text.strip().lower())
    except ValueError:
        accepted = ", ".join(s.value for s in CtState)
        raise UsageError(f"invalid conntrack state {quote(text)}: expected one of {accepted}") from None


def parse_interface(text: str) -> str:
    """An interface name as Linux accepts one (dev_valid_name): 1-15 bytes, not `.` or `..`, and
    no `/`, `:` or whitespace. A flow through a name no device can have is no flow at all."""
    name = text.strip()
    size = len(name.encode("utf-8", "surrogateescape"))
    if not 0 < size < 16 or name in (".", "..") or any(c in "/:" or c.isspace() for c in name):
        raise UsageError(
            f"invalid interface name {quote(text, 30)}: Linux names have 1-15 bytes, "
            "without '/', ':' or spaces (e.g. eth0, br-lan)"
        )
    return name


def parse_icmp_type(text: str, ip_version: int) -> int:
    table = ICMP_TYPES if ip_version == IPV4 else ICMPV6_TYPES
    t = text.strip().lower()
    number = _byte(t)
    if number is not None:
        return number
    if t in table:
        return table[t]
    raise UsageError(f"invalid ICMP type {quote(text)}: expected a number 0-255 or a name like echo-request")


@dataclass(frozen=True)
class Packet:
    """The first packet of a flow (or a later one, with `state=established`)."""

    l4proto: int
    src: IPAddress
    dst: IPAddress
    sport: int | None = None
    dport: int | None = None
    iif: str = ""
    oif: str = ""
    state: CtState = CtState.NEW
    icmp_type: int | None = None
    icmp_code: int | None = None
    # Set by the evaluator once prerouting/output NAT rewrote the destination: the
    # connection then carries conntrack's DNAT status bit (`ct status dnat`).
    dnat: bool = field(default=False, compare=False)
    # Set by the evaluator once postrouting/input NAT rewrote the source (`ct status snat`).
    snat: bool = field(default=False, compare=False)
    # Whether the destination is one of the host's addresses (`fib daddr type local`); set by
    # the evaluator when it knows the host's addresses, None when nobody knows.
    dst_local: bool | None = field(default=None, compare=False)
    # The interface the host's route back to the source leaves through (the reverse-path
    # check's lookup): "" when the host has no route to it, None when nobody knows. Set by the
    # evaluator from live routes, when a rule asks.
    src_route: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.src.version != self.dst.version:
            raise UsageError(f"invalid flow {self}: source and destination must both be IPv4 or IPv6")
        if self.has_ports and (self.sport is None or self.dport is None):
            object.__setattr__(self, "sport", self.sport if self.sport is not None else 0)
            object.__setattr__(self, "dport", self.dport if self.dport is not None else 0)
        if self.is_icmp and self.icmp_type is None:
            object.__setattr__(self, "icmp_type", 8 if self.family == IPV4 else 128)
            object.__setattr__(self, "icmp_code", 0)

    @property
    def family(self) -> int:
        return self.src.version

    @property
    def has_ports(self) -> bool:
        return self.l4proto in PORT_PROTOS

    @property
    def is_icmp(self) -> bool:
        return (self.l4proto == IPPROTO_ICMP and self.family == IPV4) or (
            self.l4proto == IPPROTO_ICMPV6 and self.family == IPV6
        )

    @property
    def proto_name(self) -> str:
        return IPPROTO_NAMES.get(self.l4proto, str(self.l4proto))

    def with_destination(self, address: IPAddress | None, port: int | None) -> Packet:
        return replace(
            self,
            dst=address if address is not None else self.dst,
            dport=port if port is not None and self.has_ports else self.dport,
        )

    def __str__(self) -> str:
        def end(addr: IPAddress, port: int | None) -> str:
            if port is None:
                return str(addr)
            return str(Endpoint(addr, port))

        text = f"{self.proto_name} {end(self.src, self.sport)} -> {end(self.dst, self.dport)}"
        if self.is_icmp:
            text += f" type {self.icmp_type}"
        if self.iif:
            text += f" in {self.iif}"
        if self.oif:
            text += f" out {self.oif}"
        return text + f" state {self.state}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "protocol": self.proto_name,
            "family": self.family,
            "src": str(self.src),
            "dst": str(self.dst),
            "sport": self.sport,
            "dport": self.dport,
            "in": self.iif or None,
            "out": self.oif or None,
            "state": self.state.value,
        }
        if self.is_icmp:
            out.update(icmp_type=self.icmp_type, icmp_code=self.icmp_code)
        return out

    @classmethod
    def parse(cls, text: str) -> Packet:
        """`tcp 203.0.113.5:51000 -> 10.0.0.2:443 in eth0 state new`, `icmp 192.0.2.1 -> 192.0.2.2`."""
        tokens = text.replace("->", " -> ").split()
        if len(tokens) < 4 or tokens[2] != "->":
            raise UsageError(f"invalid flow {quote(text)}: {_FLOW_HELP}")
        proto = parse_l4proto(tokens[0])
        src, sport = _end(tokens[1], text)
        dst, dport = _end(tokens[3], text)
        opts: dict[str, str] = {}
        rest = tokens[4:]
        if len(rest) % 2:
            raise UsageError(f"invalid flow {quote(text)}: {_FLOW_HELP}")
        for key, value in zip(rest[::2], rest[1::2], strict=True):
            if key not in ("in", "out", "state", "type", "code"):
                raise UsageError(f"invalid flow {quote(text)}: unknown word {quote(key)}; {_FLOW_HELP}")
            opts[key] = value
        icmp_type = parse_icmp_type(opts["type"], src.version) if "type" in opts else None
        icmp_code = _byte(opts["code"]) if "code" in opts else (0 if icmp_type is not None else None)
        if "code" in opts and icmp_code is None:
            raise UsageError(f"invalid ICMP code {quote(opts['code'])}: expected a number 0-255")
        return cls(
            proto,
            src,
            dst,
            sport,
            dport,
            iif=parse_interface(opts["in"]) if "in" in opts else "",
            oif=parse_interface(opts["out"]) if "out" in opts else "",
            state=parse_state(opts.get("state", "new")),
            icmp_type=icmp_type,
            icmp_code=icmp_code,
        )


def _end(token: str, text: str) -> tuple[IPAddress, int | None]:
    """`1.2.3.4:80`, `[::1]:443`, `1.2.3.4`, `::1`."""
    if token.startswith("[") or token.count(":") == 1:
        ep = Endpoint.parse(token)
        return ep.address, ep.port
    try:
        return ipaddress.ip_address(token), None
    except ValueError:
        return parse_address(token), None
