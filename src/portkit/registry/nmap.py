"""Layer 4: nmap's `nmap-services`, read at run time when nmap is installed (never bundled).

Its third column is the fraction of scanned hosts on which the port was found open; it
ranks `top:N`. The file is nmap's, so portkit only ever reads the installed copy.
"""

from __future__ import annotations

import os
from pathlib import Path

from portkit.model import Protocol
from portkit.registry._service import Service, Source

NMAP_SERVICES_PATHS = (
    Path("/usr/share/nmap/nmap-services"),
    Path("/usr/local/share/nmap/nmap-services"),
)


def find_nmap_services() -> Path | None:
    override = os.environ.get("PORTKIT_NMAP_SERVICES")
    if override is not None:
        return Path(override) if override and Path(override).is_file() else None
    return next((p for p in NMAP_SERVICES_PATHS if p.is_file()), None)


def parse_nmap_services(text: str) -> list[Service]:
    services: list[Service] = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        body, _, comment = line.partition("#")
        fields = body.split()
        if len(fields) < 3 or "/" not in fields[1]:
            continue
        port_text, _, proto_text = fields[1].partition("/")
        if not port_text.isdigit() or proto_text not in ("tcp", "udp", "sctp"):
            continue
        try:
            frequency = float(fields[2])
        except ValueError:
            continue
        services.append(
            Service(
                name=fields[0],
                port=int(port_text),
                protocol=Protocol(proto_text),
                source=Source.NMAP,
                description=comment.strip(),
                frequency=frequency,
            )
        )
    return services


def load_nmap_services() -> list[Service]:
    path = find_nmap_services()
    if path is None:
        return []
    try:
        return parse_nmap_services(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []
