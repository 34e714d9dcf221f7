"""What a port is: its IANA range, the services known on it, and this machine's view of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from portkit.kernel import CAP_NET_BIND_SERVICE, PortSettings, has_capability, read_port_settings
from portkit.model import PortClass, Transport, classify_port, validate_port
from portkit.registry import Registry, Service, default_registry


@dataclass(frozen=True)
class PortExplanation:
    port: int
    protocols: tuple[Transport, ...]
    port_class: PortClass
    services: tuple[Service, ...]
    settings: PortSettings
    can_bind_now: bool

    @property
    def needs_privilege(self) -> bool:
        return self.settings.bind_needs_privilege(self.port)

    @property
    def ephemeral(self) -> bool:
        return self.settings.is_ephemeral(self.port)

    @property
    def reserved(self) -> bool:
        return self.settings.is_reserved(self.port)

    @property
    def risks(self) -> tuple[Service, ...]:
        seen: dict[tuple[str, str], Service] = {}
        for s in self.services:
            if s.risk:
                seen.setdefault((s.name, s.risk), s)
        return tuple(seen.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "protocols": [p.value for p in self.protocols],
            "class": self.port_class.name,
            "class_range": f"{self.port_class.first}-{self.port_class.last}",
            "services": [s.to_json() for s in self.services],
            "bind": {
                "needs_privilege": self.needs_privilege,
                "unprivileged_start": self.settings.unprivileged_start,
                "can_bind_now": self.can_bind_now,
            },
            "ephemeral": self.ephemeral,
            "ephemeral_range": f"{self.settings.ephemeral.first}-{self.settings.ephemeral.last}",
            "reserved": self.reserved,
            "risks": [{"service": s.name, "risk": s.risk, "alternative": s.alternative} for s in self.risks],
        }


def explain_port(
    port: int | str,
    protocol: Transport | None = None,
    *,
    registry: Registry | None = None,
    settings: PortSettings | None = None,
) -> PortExplanation:
    number = validate_port(port)
    registry = registry or default_registry()
    settings = settings or read_port_settings()
    protocols = (protocol,) if protocol else (Transport.TCP, Transport.UDP)
    services = tuple(s for proto in protocols for s in registry.for_port(number, proto))
    can_bind = not settings.bind_needs_privilege(number) or has_capability(CAP_NET_BIND_SERVICE)
    return PortExplanation(number, protocols, classify_port(number), services, settings, can_bind)


def parse_port_proto(text: str) -> tuple[int, Transport | None]:
    """`443`, `443/tcp`, `53/udp` -> (port, protocol or None)."""
    port_text, sep, proto_text = text.strip().partition("/")
    return validate_port(port_text), (Transport.parse(proto_text) if sep else None)
