"""A port mapping a gateway granted, the protocols that ask for one, and where the gateway is.

Three protocols ask a home router for a mapping: PCP (RFC 6887), NAT-PMP (RFC 6886, PCP's
predecessor on the same UDP port 5351) and UPnP-IGD (SSDP discovery, then SOAP over HTTP).
`AUTO_ORDER` is the order `--via auto` tries them in: PCP first, as RFC 6887 section 9 asks of a
client that speaks both; NAT-PMP next, since a NAT-PMP-only gateway answers a PCP request with
"unsupported version" in one round trip; UPnP last, because it needs discovery and HTTP.

The gateway is the IPv4 default route's next hop, read from /proc/net/route (what
`ip route show default` prints, without starting a process). Reading it sends nothing: no
packet leaves the host until a command asks a gateway for something.
"""

from __future__ import annotations

import enum
import ipaddress
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portkit.errors import PortkitError
from portkit.model import Transport

ROUTE_TABLE = Path("/proc/net/route")


class Via(enum.Enum):
    """A protocol that asks a gateway for a port mapping."""

    PCP = "pcp"
    NATPMP = "natpmp"
    UPNP = "upnp"

    def __str__(self) -> str:
        return self.value

    @property
    def title(self) -> str:
        return _TITLES[self]


_TITLES = {Via.PCP: "PCP", Via.NATPMP: "NAT-PMP", Via.UPNP: "UPnP-IGD"}
AUTO_ORDER: tuple[Via, ...] = (Via.PCP, Via.NATPMP, Via.UPNP)
# Removing: UPnP first, since it can look the external port up and remove exactly that mapping.
UNMAP_AUTO_ORDER: tuple[Via, ...] = (Via.UPNP, Via.PCP, Via.NATPMP)


class NoGatewayAnswer(PortkitError):
    """No gateway answered (or none was found); the message lists what was tried. Exit 1."""

    exit_status = 1


class GatewayRefused(PortkitError):
    """A gateway answered and refused (a result code, a SOAP fault). Exit 1."""

    exit_status = 1


@dataclass(frozen=True)
class Attempt:
    """One protocol tried against one gateway, and what came of it."""

    via: Via
    gateway: str
    outcome: str  # "ok", or why not: "no answer in 3.0s", "refused: NOT_AUTHORIZED", ...

    def __str__(self) -> str:
        return f"{self.via.title} at {self.gateway}: {self.outcome}"

    def to_json(self) -> dict[str, Any]:
        return {"via": self.via.value, "gateway": self.gateway, "outcome": self.outcome}


def tried(attempts: Iterable[Attempt]) -> str:
    """The attempts as one clause for an error line: `at GATEWAY: PCP: why; NAT-PMP: why` when
    they share a gateway (they always do in one command), else each with its own."""
    made = list(attempts)
    if not made:
        return "nothing tried"
    gateways = {a.gateway for a in made}
    if len(gateways) == 1:
        return f"at {made[0].gateway}: " + "; ".join(f"{a.via.title}: {a.outcome}" for a in made)
    return "; ".join(str(a) for a in made)


@dataclass(frozen=True)
class Mapping:
    """A mapping a gateway holds: `external_address:external_port/protocol` reaches
    `internal_address:internal_port`, for `lifetime` seconds from `granted_at` (Unix time)
    (0: until removed, which only UPnP grants)."""

    via: Via
    protocol: Transport
    external_port: int
    internal_address: str
    internal_port: int
    lifetime: int
    gateway: str
    external_address: str | None = None
    description: str = ""
    granted_at: float = field(default_factory=time.time)
    requested_port: int | None = None  # the external port asked for, when the gateway gave another

    @property
    def moved(self) -> bool:
        """The gateway mapped another external port than the one asked for (NAT-PMP and PCP may)."""
        return self.requested_port is not None and self.requested_port != self.external_port

    @property
    def expires_at(self) -> float | None:
        return None if self.lifetime == 0 else self.granted_at + self.lifetime

    def __str__(self) -> str:
        outside = f"{self.external_address or '?'}:{self.external_port}"
        lease = "permanent" if self.lifetime == 0 else f"{self.lifetime}s"
        return (
            f"{outside}/{self.protocol} -> {self.internal_address}:{self.internal_port} "
            f"via {self.via.title} ({lease})"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "via": self.via.value,
            "gateway": self.gateway,
            "protocol": self.protocol.value,
            "external_address": self.external_address,
            "external_port": self.external_port,
            "internal_address": self.internal_address,
            "internal_port": self.internal_port,
            "lifetime": self.lifetime,
            "expires_at": self.expires_at,
            "description": self.description,
            "requested_port": self.requested_port,
        }


@dataclass(frozen=True)
class Gateway:
    """Where requests go: an address, and how it was found ("default route via eth0", "--gateway")."""

    address: str
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "source": self.source}


def parse_route_table(text: str) -> list[tuple[str, str, int]]:
    """The IPv4 default routes in /proc/net/route text: (interface, gateway, metric), best first.

    The file's addresses are the kernel's 32-bit words printed in hex in host byte order
    (little-endian on every machine portkit runs on). Lines that do not parse are skipped.
    """
    found: list[tuple[str, str, int]] = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 8:
            continue
        try:
            destination, gateway, flags = int(cols[1], 16), int(cols[2], 16), int(cols[3], 16)
            mask, metric = int(cols[7], 16), int(cols[6])
        except ValueError:
            continue
        rtf_up, rtf_gateway = 0x1, 0x2
        if destination or mask or flags & (rtf_up | rtf_gateway) != rtf_up | rtf_gateway:
            continue
        address = str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
        found.append((cols[0], address, metric))
    return sorted(found, key=lambda r: r[2])


def default_gateway(route_table: Path = ROUTE_TABLE) -> Gateway | None:
    """The next hop of this namespace's IPv4 default route, or None when there is none."""
    try:
        routes = parse_route_table(route_table.read_text())
    except OSError:
        return None
    if not routes:
        return None
    interface, address, _ = routes[0]
    return Gateway(address, f"default route via {interface}")


def source_address_towards(gateway: str) -> str:
    """The local address the kernel would send from to reach `gateway` (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect((gateway, 9))
        return str(probe.getsockname()[0])
