"""The registry's value type: one service on one port range and one protocol."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from portkit.model import Transport


class Source(enum.Enum):
    """Where an answer came from, in the order the registry trusts them."""

    BUILTIN = "builtin"
    SYSTEM = "etc-services"
    IANA = "iana"
    NMAP = "nmap-services"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Service:
    """A named service on `port`..`last_port` over one transport protocol.

    This is a registration (what a port number is assigned to, from IANA, /etc/services or
    nmap-services), true whether or not anything listens. What actually answers on a port is
    a `portkit.model.ServiceRecord`, which names its source (`Method.TABLE` when the name came
    from here) and carries what the service itself said.
    """

    name: str
    port: int
    protocol: Transport
    source: Source
    description: str = ""
    last_port: int = -1
    aliases: tuple[str, ...] = ()
    category: str = ""
    risk: str = ""
    alternative: str = ""
    commonness: int = 0
    frequency: float = field(default=0.0, compare=False)

    def __post_init__(self) -> None:
        if self.last_port < 0:
            object.__setattr__(self, "last_port", self.port)

    @property
    def ports(self) -> str:
        return str(self.port) if self.last_port == self.port else f"{self.port}-{self.last_port}"

    def covers(self, port: int) -> bool:
        return self.port <= port <= self.last_port

    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases) if self.name else self.aliases

    def __str__(self) -> str:
        return f"{self.name or '-'} {self.ports}/{self.protocol}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "port": self.port,
            "last_port": self.last_port,
            "protocol": self.protocol.value,
            "source": self.source.value,
            "description": self.description,
            "aliases": list(self.aliases),
        }
        if self.category:
            out["category"] = self.category
        if self.risk:
            out["risk"] = self.risk
        if self.alternative:
            out["alternative"] = self.alternative
        if self.frequency:
            out["frequency"] = self.frequency
        return out
