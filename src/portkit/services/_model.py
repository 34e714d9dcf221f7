"""What service detection reports about one port: the service, its TLS layer, its HTTP face."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Method(enum.Enum):
    """How a service name was obtained, in nmap's words."""

    PROBED = "probed"  # the service said so
    TABLE = "table"  # only the port number's registry entry

    def __str__(self) -> str:
        return self.value


# nmap's confidence scale: 10 a hard match, 8 tcpwrapped, 3 a guess from the port table.
CONFIDENCE_HARD = 10
CONFIDENCE_WRAPPED = 8
CONFIDENCE_SOFT = 7
CONFIDENCE_TABLE = 3


@dataclass(frozen=True)
class TlsInfo:
    """The TLS layer of a port: what was negotiated and the server's certificate."""

    version: str
    cipher: str
    alpn: str = ""
    subject: str = ""
    sans: tuple[str, ...] = ()
    issuer: str = ""
    not_after: str = ""  # ISO 8601, UTC
    not_before: str = ""

    @property
    def self_signed(self) -> bool | None:
        return self.subject == self.issuer if self.subject else None

    def __str__(self) -> str:
        parts = [self.version, self.cipher]
        if self.alpn:
            parts.append(f"alpn={self.alpn}")
        if self.subject:
            parts.append(f"subject={self.subject}")
        if self.not_after:
            parts.append(f"expires={self.not_after}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "cipher": self.cipher,
            "alpn": self.alpn or None,
            "subject": self.subject or None,
            "sans": list(self.sans),
            "issuer": self.issuer or None,
            "not_after": self.not_after or None,
            "not_before": self.not_before or None,
            "self_signed": self.self_signed,
        }


@dataclass(frozen=True)
class HttpInfo:
    """What an HTTP server's answer to `GET /` says about it."""

    status: int
    server: str = ""
    title: str = ""
    location: str = ""

    def __str__(self) -> str:
        parts = [str(self.status)]
        if self.server:
            parts.append(f"server={self.server!r}")
        if self.title:
            parts.append(f"title={self.title!r}")
        if self.location:
            parts.append(f"-> {self.location}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "server": self.server or None,
            "title": self.title or None,
            "location": self.location or None,
        }


@dataclass(frozen=True)
class ServiceMatch:
    """The service found on one port (or the port table's guess when nothing answered)."""

    name: str
    product: str = ""
    version: str = ""
    extrainfo: str = ""
    tunnel: str = ""  # "ssl" when the service speaks inside TLS
    cpe: tuple[str, ...] = ()
    method: Method = Method.PROBED
    confidence: int = CONFIDENCE_HARD
    tls: TlsInfo | None = None
    http: HttpInfo | None = None
    probe: str = ""  # the probe whose reply matched ("" for table guesses)
    hostname: str = ""
    ostype: str = ""
    devicetype: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def display_name(self) -> str:
        """The SERVICE column, as nmap prints it: `ssl/http`, `ssh`, `unknown`, `domain?`."""
        name = self.name or "unknown"
        if self.method is Method.TABLE and name != "unknown":
            name += "?"
        if self.tunnel and name != self.tunnel:
            return f"{self.tunnel}/{name}"
        return name

    @property
    def version_text(self) -> str:
        """The VERSION column, as nmap prints it: `product version (extrainfo)`."""
        words = " ".join(w for w in (self.product, self.version) if w)
        if self.extrainfo:
            words = f"{words} ({self.extrainfo})" if words else f"({self.extrainfo})"
        return words

    def __str__(self) -> str:
        text = self.display_name
        if self.version_text:
            text += f" {self.version_text}"
        return text

    def to_json(self) -> dict[str, Any]:
        """The `service` object of a port (the TLS layer is separate: `tls.to_json()`)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "product": self.product,
            "version": self.version,
            "extrainfo": self.extrainfo,
            "tunnel": self.tunnel,
            "cpe": list(self.cpe),
            "method": self.method.value,
            "confidence": self.confidence,
        }
        if self.http is not None:
            doc["http"] = self.http.to_json()
        if self.hostname:
            doc["hostname"] = self.hostname
        if self.ostype:
            doc["ostype"] = self.ostype
        if self.devicetype:
            doc["devicetype"] = self.devicetype
        if self.notes:
            doc["notes"] = list(self.notes)
        return doc

    def port_fields(self) -> dict[str, Any]:
        """`{"service": ..., "tls": ...}`, ready to merge into a scan's per-port JSON."""
        return {"service": self.to_json(), "tls": self.tls.to_json() if self.tls else None}
