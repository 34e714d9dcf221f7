"""Endpoints (address + port) and flows (the 5-tuple)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from portkit.model.errors import UsageError, quote
from portkit.model.ports import validate_port
from portkit.model.protocols import Transport

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address (brackets and an IPv6 zone are accepted)."""
    raw = text.strip()
    if raw.startswith("[") and raw.endswith("]"):
        raw = raw[1:-1]
    try:
        return ipaddress.ip_address(raw)
    except ValueError:
        raise UsageError(
            f"invalid address {quote(text)}: expected an IPv4 (192.0.2.1) or IPv6 (2001:db8::1) address"
        ) from None


@dataclass(frozen=True, order=True)
class Endpoint:
    """One end of a connection: an IP address and a port. Prints as `1.2.3.4:80` or `[::1]:443`."""

    address: IPAddress
    port: int

    def __post_init__(self) -> None:
        validate_port(self.port)

    @property
    def family(self) -> int:
        return self.address.version

    def __str__(self) -> str:
        if self.address.version == 6:
            return f"[{self.address}]:{self.port}"
        return f"{self.address}:{self.port}"

    @classmethod
    def parse(cls, text: str, *, default_address: str | None = None) -> Endpoint:
        """`1.2.3.4:80`, `[::1]:443`, or `8080` when a default address is given."""
        raw = text.strip()
        if raw.startswith("["):
            host, sep, port = raw[1:].partition("]:")
            if not sep:
                raise UsageError(f"invalid endpoint {quote(text)}: expected [IPv6]:PORT, e.g. [::1]:443")
        elif raw.count(":") == 1:
            host, _, port = raw.partition(":")
        elif raw.isascii() and raw.isdigit() and default_address is not None:
            host, port = default_address, raw
        else:
            raise UsageError(
                f"invalid endpoint {quote(text)}: expected ADDRESS:PORT, e.g. 127.0.0.1:80 or [::1]:443"
            )
        return cls(parse_address(host), validate_port(port))

    def to_json(self) -> dict[str, Any]:
        return {"address": str(self.address), "port": self.port}


@dataclass(frozen=True, order=True)
class Flow:
    """The 5-tuple: protocol, source endpoint, destination endpoint."""

    protocol: Transport
    src: Endpoint
    dst: Endpoint

    def __post_init__(self) -> None:
        if self.src.family != self.dst.family:
            raise UsageError(f"invalid flow {self}: source and destination must both be IPv4 or IPv6")

    def __str__(self) -> str:
        return f"{self.protocol} {self.src} -> {self.dst}"

    @classmethod
    def parse(cls, text: str) -> Flow:
        """`tcp 203.0.113.5:51000 -> 10.0.0.2:443`."""
        parts = text.replace("->", " -> ").split()
        if len(parts) != 4 or parts[2] != "->":
            raise UsageError(
                f"invalid flow {quote(text)}: expected 'PROTO SRC:PORT -> DST:PORT', "
                "e.g. 'tcp 203.0.113.5:51000 -> 10.0.0.2:443'"
            )
        return cls(Transport.parse(parts[0]), Endpoint.parse(parts[1]), Endpoint.parse(parts[3]))

    def to_json(self) -> dict[str, Any]:
        return {"protocol": self.protocol.value, "src": self.src.to_json(), "dst": self.dst.to_json()}
