"""Layer 2: the system's services database, `/etc/services`."""

from __future__ import annotations

from pathlib import Path

from portkit.model import Transport
from portkit.registry._service import Service, Source

ETC_SERVICES = Path("/etc/services")


def parse_etc_services_line(line: str) -> Service | None:
    """`name  port/proto  [aliases...]  [# comment]`; None for comments and unknown protocols."""
    body, _, comment = line.partition("#")
    fields = body.split()
    if len(fields) < 2 or "/" not in fields[1]:
        return None
    port_text, _, proto_text = fields[1].partition("/")
    if not port_text.isdigit() or proto_text not in ("tcp", "udp", "sctp") or int(port_text) > 65535:
        return None
    return Service(
        name=fields[0],
        port=int(port_text),
        protocol=Transport(proto_text),
        source=Source.SYSTEM,
        description=comment.strip(),
        aliases=tuple(fields[2:]),
    )


def parse_etc_services(text: str) -> list[Service]:
    return [s for s in map(parse_etc_services_line, text.splitlines()) if s is not None]


def load_etc_services(path: Path = ETC_SERVICES) -> list[Service]:
    try:
        return parse_etc_services(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return []
