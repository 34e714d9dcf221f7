"""Port specifications in nmap's syntax, used by every command that takes ports.

Accepted, comma-separated: `22`, `1-1024`, `-` (1-65535), `-1024`, `60000-`, service names
(`ssh,https`), `top:N` (the N most commonly open ports), and protocol prefixes `T:`, `U:`,
`S:` that apply to the items after them (`T:80,443,U:53,161`). Items without a prefix apply
to every protocol a command works on. Parsing yields a normalised, concrete `PortSpec`
(names and `top:N` already resolved), and `str(spec)` renders it back so that
`parse_port_spec(str(spec)) == spec`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol as TypingProtocol

from portkit.model.errors import UsageError, quote
from portkit.model.ports import (
    DECIMAL_CAP,
    MAX_PORT,
    PortRange,
    normalise_ranges,
    parse_decimal,
    ranges_from_ports,
)
from portkit.model.protocols import PORT_TRANSPORTS, Transport

_PREFIXES = {"T": Transport.TCP, "U": Transport.UDP, "S": Transport.SCTP}
_PREFIX_OF = {proto: letter for letter, proto in _PREFIXES.items()}
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9._+/-]*\Z")
_RANGE_RE = re.compile(r"([0-9]*)-([0-9]*)\Z", re.ASCII)
MAX_TOP = 65536
_NO_NAMES = "service names and top:N need a service registry here; use port numbers"


class PortNames(TypingProtocol):
    """What the parser needs from a service registry to resolve names and `top:N`."""

    def ports_for_name(self, name: str) -> list[tuple[int, Transport]]: ...

    def top_ports(self, count: int, protocol: Transport) -> list[int]: ...


@dataclass(frozen=True)
class PortSpec:
    """A concrete set of ports: some for every protocol, some for one protocol only."""

    any: tuple[PortRange, ...] = ()
    tcp: tuple[PortRange, ...] = ()
    udp: tuple[PortRange, ...] = ()
    sctp: tuple[PortRange, ...] = ()
    source: str = field(default="", compare=False)

    @classmethod
    def of(cls, ports: Iterable[int], protocol: Transport | None = None) -> PortSpec:
        ranges = ranges_from_ports(ports)
        if protocol is None:
            return cls(any=ranges)
        if protocol is Transport.TCP:
            return cls(tcp=ranges)
        if protocol is Transport.UDP:
            return cls(udp=ranges)
        return cls(sctp=ranges)

    def ranges(self, protocol: Transport) -> tuple[PortRange, ...]:
        """The ranges that apply to `protocol`: the unprefixed ones and its own."""
        own: tuple[PortRange, ...] = getattr(self, protocol.value)
        return normalise_ranges(self.any + own)

    def ports(self, protocol: Transport) -> Iterator[int]:
        """Every port for `protocol`, ascending, without building a list."""
        for rng in self.ranges(protocol):
            yield from rng

    def count(self, protocol: Transport) -> int:
        return sum(len(r) for r in self.ranges(protocol))

    def contains(self, port: int, protocol: Transport) -> bool:
        return any(port in r for r in self.ranges(protocol))

    def is_empty(self) -> bool:
        return not (self.any or self.tcp or self.udp or self.sctp)

    def __str__(self) -> str:
        parts = [",".join(str(r) for r in self.any)] if self.any else []
        for proto in PORT_TRANSPORTS:
            own: tuple[PortRange, ...] = getattr(self, proto.value)
            if own:
                parts.append(f"{_PREFIX_OF[proto]}:" + ",".join(str(r) for r in own))
        return ",".join(parts)


def _spec_error(text: str, token: str, position: int, why: str) -> UsageError:
    shown = "" if token == text and len(text) > 30 else f"{quote(token, 30)} "  # not twice when long
    where = f"{shown}at position {position}"
    return UsageError(f"invalid port spec {quote(text)}: {where}: {why}")


def _parse_number(text: str, token: str, position: int, digits: str) -> int:
    number = parse_decimal(digits)
    if number is None:
        raise _spec_error(text, token, position, "expected a port number of ASCII digits 0-9")
    if number > MAX_PORT:
        shown = f"port {number}" if number < DECIMAL_CAP else f"a {len(digits)}-digit port"
        raise _spec_error(text, token, position, f"{shown} is out of range: ports are 0-65535")
    return number


def parse_port_spec(text: str, names: PortNames | None = None) -> PortSpec:
    """Parse an nmap-style port list; see the module docstring for the syntax.

    `names` resolves service names and `top:N` (portkit.registry.DEFAULT_NAMES is portkit's
    registry); without it only numbers and ranges are accepted.
    """
    if not text or not text.strip():
        raise UsageError("invalid port spec '': expected ports such as 22, 1-1024, 80,443 or T:80,U:53")
    buckets: dict[Transport | None, list[PortRange]] = {None: [], **{p: [] for p in PORT_TRANSPORTS}}
    current: Transport | None = None
    position = 1
    for raw in text.split(","):
        token = raw.strip()
        offset = position + (len(raw) - len(raw.lstrip()))
        position += len(raw) + 1
        if not token:
            raise _spec_error(text, raw, offset, "empty item: remove the extra comma")
        if len(token) >= 2 and token[1] == ":" and token[0].upper() in _PREFIXES:
            current = _PREFIXES[token[0].upper()]
            token = token[2:].strip()
            if not token:
                raise _spec_error(
                    text, raw.strip(), offset, "a protocol prefix needs ports after it, e.g. T:80"
                )
        for proto, rng in _parse_item(text, token, offset, current, names):
            buckets[proto].append(rng)
    return PortSpec(
        any=normalise_ranges(buckets[None]),
        tcp=normalise_ranges(buckets[Transport.TCP]),
        udp=normalise_ranges(buckets[Transport.UDP]),
        sctp=normalise_ranges(buckets[Transport.SCTP]),
        source=text,
    )


def _parse_item(
    text: str, token: str, position: int, current: Transport | None, names: PortNames | None
) -> list[tuple[Transport | None, PortRange]]:
    if token.isascii() and token.isdigit():
        port = _parse_number(text, token, position, token)
        return [(current, PortRange(port, port))]
    match = _RANGE_RE.match(token)
    if match:
        lo_digits, hi_digits = match.groups()
        first = _parse_number(text, token, position, lo_digits) if lo_digits else 1
        last = _parse_number(text, token, position, hi_digits) if hi_digits else MAX_PORT
        if first > last:
            raise _spec_error(text, token, position, f"reversed range: write {last}-{first}")
        return [(current, PortRange(first, last))]
    if token.lower().startswith("top:"):
        count = parse_decimal(token[4:])
        if count is None or not 1 <= count <= MAX_TOP:
            raise _spec_error(text, token, position, "top:N needs a count N from 1 to 65536")
        if names is None:
            raise _spec_error(text, token, position, _NO_NAMES)
        protos = [current] if current is not None else [Transport.TCP, Transport.UDP]
        return [
            (proto, PortRange(p, p)) for proto in protos for p in names.top_ports(count, proto)
        ]
    if _NAME_RE.match(token):
        if names is None:
            raise _spec_error(text, token, position, _NO_NAMES)
        found: list[tuple[Transport | None, PortRange]] = [
            (proto if current is None else current, PortRange(port, port))
            for port, proto in names.ports_for_name(token)
            if current is None or proto is current
        ]
        if not found:
            raise _spec_error(text, token, position, "unknown service name (try 'portkit lookup NAME')")
        return found
    raise _spec_error(
        text, token, position, "expected a port 0-65535, a range A-B, a service name or top:N"
    )
