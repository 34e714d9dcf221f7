"""What runs on a port: one service record, with its TLS layer and its HTTP face.

`ServiceRecord` is nmap's <service> element and everything service detection learns besides:
the port scanner fills it from the port table alone (method `table`), service detection from
what the service said (method `probed`), and both write it out with the same `to_json()`.

Two other types name services and are not this record: the registry's `Service` is a port
range's registered name (a fact about the port-number table, true of no running server), and
the socket overview's `ServiceFacts` is what that registry says of a listening port (name,
category, risk), attached without contacting the service.
"""

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


# nmap's confidence scale: 10 a hard match, 8 tcpwrapped, 3 a guess from the port table;
# portkit rates a name from a soft match alone (the protocol, not the product) 7.
CONFIDENCE_HARD = 10
CONFIDENCE_WRAPPED = 8
CONFIDENCE_SOFT = 7
CONFIDENCE_TABLE = 3


@dataclass(frozen=True)
class TlsInfo:
    """The TLS layer of a port: what was negotiated and the server's certificate."""

    version: str = ""  # the negotiated protocol, e.g. "TLSv1.3"
    cipher: str = ""
    alpn: str = ""
    subject: str = ""  # RFC 4514
    sans: tuple[str, ...] = ()  # "DNS:name", "IP:address", "email:...", "URI:..."
    issuer: str = ""
    not_after: str = ""  # ISO 8601, UTC
    not_before: str = ""

    @property
    def self_signed(self) -> bool | None:
        """Whether the certificate names itself as its issuer (None: no certificate seen)."""
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
            "version": self.version or None,
            "cipher": self.cipher or None,
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
class ServiceRecord:
    """The service on one port: named by what it said (`probed`) or by the port table (`table`).

    A record claims only what it states: without a method it is the port table's guess.
    """

    name: str
    product: str = ""
    version: str = ""
    extrainfo: str = ""  # the service's words; for a table guess, why nothing matched ("silent")
    tunnel: str = ""  # "ssl" when the service speaks inside TLS
    cpe: tuple[str, ...] = ()  # one per part (a, h, o), as nmap keeps them
    method: Method = Method.TABLE
    confidence: int = CONFIDENCE_TABLE  # nmap's conf: 0 nothing known .. 10 a hard match
    tls: TlsInfo | None = None
    http: HttpInfo | None = None
    probe: str = ""  # the probe whose reply matched ("" for table guesses)
    # What the matching rule says of the host behind the service (nmap's h/, o/, d/ fields).
    hostname: str = ""
    ostype: str = ""
    devicetype: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)  # portkit's, e.g. "silent: 14 probes"

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

    def to_json(self, *, notes: bool = True) -> dict[str, Any]:
        """The `service` object of a port (docs/json.md); the TLS layer is `tls.to_json()`.

        `notes=False` leaves out portkit's notes, as the scan's per-port JSON does.
        """
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
        if notes and self.notes:
            doc["notes"] = list(self.notes)
        return doc

    def port_fields(self) -> dict[str, Any]:
        """`{"service": ..., "tls": ...}`, ready to merge into a port's JSON."""
        return {"service": self.to_json(), "tls": self.tls.to_json() if self.tls else None}
