"""Layer 4: nmap's `nmap-services`, read at run time when nmap is installed (never bundled).

Its third column is the fraction of scanned hosts on which the port was found open; it
ranks `top:N`. The file is nmap's, so portkit only ever reads the installed copy.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

from portkit.model import Transport
from portkit.registry._paths import NMAP_SERVICES_PATHS as NMAP_SERVICES_PATHS
from portkit.registry._paths import registry_paths
from portkit.registry._service import Service, Source

# Candidates: where to look for nmap-services, first existing file wins; None is the
# process-wide `registry_paths().nmap_services` (NMAP_SERVICES_PATHS unless the caller chose).
Candidates = Sequence[Path] | None


def _candidates(candidates: Candidates) -> tuple[Path, ...]:
    return registry_paths().nmap_services if candidates is None else tuple(candidates)


def find_nmap_services(candidates: Candidates = None) -> Path | None:
    """The nmap-services file in use: the first of `candidates` that is a file."""
    return next((p for p in _candidates(candidates) if p.is_file()), None)


def parse_nmap_line(line: str) -> Service | None:
    """`name  port/proto  frequency  [# comment]`, or None for anything else."""
    if not line or line.startswith("#"):
        return None
    body, _, comment = line.partition("#")
    fields = body.split()
    if len(fields) < 3 or "/" not in fields[1]:
        return None
    port_text, _, proto_text = fields[1].partition("/")
    if not port_text.isdigit() or proto_text not in ("tcp", "udp", "sctp") or int(port_text) > 65535:
        return None
    try:
        frequency = float(fields[2])
    except ValueError:
        return None
    return Service(
        name=fields[0],
        port=int(port_text),
        protocol=Transport(proto_text),
        source=Source.NMAP,
        description=comment.strip(),
        frequency=frequency,
    )


def parse_nmap_services(text: str) -> list[Service]:
    return [s for s in map(parse_nmap_line, text.splitlines()) if s is not None]


def _nmap_text(candidates: Candidates = None) -> str:
    return _read_nmap_services(_candidates(candidates))


@functools.lru_cache(maxsize=4)
def _read_nmap_services(candidates: tuple[Path, ...]) -> str:
    path = find_nmap_services(candidates)
    if path is None:
        return ""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def load_nmap_services(candidates: Candidates = None) -> list[Service]:
    return parse_nmap_services(_nmap_text(candidates))


def query_nmap_services(port: int, protocol: Transport, candidates: Candidates = None) -> list[Service]:
    """The entries for one port, found without parsing the whole file (for fast start-up)."""
    text = _nmap_text(candidates)
    needle = f"{port}/{protocol.value}"
    found: list[Service] = []
    for match in re.finditer(re.escape(needle), text):
        start = match.start()
        if start == 0 or not text[start - 1].isspace() or not text[match.end() : match.end() + 1].isspace():
            continue
        line_start = text.rfind("\n", 0, start) + 1
        line_end = text.find("\n", start)
        service = parse_nmap_line(text[line_start : line_end if line_end >= 0 else len(text)])
        if service is not None and service.port == port and service.protocol is protocol:
            found.append(service)
    return found


def nmap_frequencies(protocol: Transport, candidates: Candidates = None) -> list[tuple[int, float]]:
    """(port, open frequency) for every `protocol` entry, read without building Services."""
    pattern = re.compile(rf"^[^#\s]\S*[ \t]+(\d+)/{protocol.value}[ \t]+([0-9.]+)", re.M)
    return [(int(m.group(1)), float(m.group(2))) for m in pattern.finditer(_nmap_text(candidates))]


def port_names(protocol: Transport, candidates: Candidates = None) -> dict[int, str]:
    """Port -> the name nmap gives a `protocol` port without -sV (its `method="table"` name).

    nmap reads nmap-services and, where that is missing, /etc/services; the first entry for a
    port and protocol wins, and TCP and UDP are named separately (8081/tcp is blackice-icecap,
    8081/udp sunproxyadmin). Its "unknown" entries are names like any other. Ports neither
    file lists have no name (nmap writes no <service> for them). Empty when neither file exists.
    """
    return _port_names(protocol, _candidates(candidates))


@functools.lru_cache(maxsize=8)
def _names_text(candidates: tuple[Path, ...]) -> str:
    """The text nmap names ports from: nmap-services, else /etc/services, else ""."""
    text = _read_nmap_services(candidates)
    if text:
        return text
    from portkit.registry.system import ETC_SERVICES

    try:
        return ETC_SERVICES.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def _entry_pattern(protocol: Transport) -> re.Pattern[str]:
    return re.compile(rf"^([^#\s]\S*)[ \t]+(\d+)/{protocol.value}(?=\s|$)", re.M)


@functools.lru_cache(maxsize=8)
def _port_names(protocol: Transport, candidates: tuple[Path, ...]) -> dict[int, str]:
    names: dict[int, str] = {}
    for m in _entry_pattern(protocol).finditer(_names_text(candidates)):
        port = int(m.group(2))
        if port <= 65535:
            names.setdefault(port, m.group(1))
    return names


def first_port_name(text: str, port: int, protocol: Transport) -> str:
    """`_port_names(...)[port]` (or "") for one port, found without parsing the whole text.

    The table's rule, applied only to the lines that mention `port/protocol`: the first line
    whose own entry (name, then port/protocol) is that port names it. A scan lists a handful of
    ports, and parsing all 27,000 lines of nmap-services for them took ~25 ms of its start-up.
    """
    if not 0 <= port <= 65535:
        return ""
    pattern = _entry_pattern(protocol)
    needle = f"{port}/{protocol.value}"
    at = text.find(needle)
    while at >= 0:
        entry = pattern.match(text, text.rfind("\n", 0, at) + 1)
        if entry is not None and int(entry.group(2)) == port:
            return entry.group(1)
        at = text.find(needle, at + len(needle))
    return ""


class _PortTableNamer:
    """(port, protocol) -> nmap's table name: a few ports looked up one by one, many from the table."""

    LOOKUPS_BEFORE_TABLE = 32  # one lookup reads up to the whole text; past this, parse it once

    def __init__(self, text: str, candidates: tuple[Path, ...]) -> None:
        self.text, self.candidates = text, candidates
        self.known: dict[tuple[int, Transport], str] = {}
        self.lookups = 0

    def __call__(self, port: int, protocol: Transport) -> str:
        name = self.known.get((port, protocol))
        if name is None:
            self.lookups += 1
            if self.lookups > self.LOOKUPS_BEFORE_TABLE:
                name = _port_names(protocol, self.candidates).get(port, "")
            else:
                name = first_port_name(self.text, port, protocol)
            self.known[(port, protocol)] = name
        return name


@functools.lru_cache(maxsize=1)
def table_namer() -> Callable[[int, Transport], str]:
    """(port, protocol) -> the scan's name for a port: `port_names`, as nmap names it.

    Where neither nmap-services nor /etc/services has an entry, portkit's own registry names the port.
    """
    candidates = _candidates(None)
    text = _names_text(candidates)
    if re.search(r"^[^#\s]\S*[ \t]+\d+/(?:tcp|udp)(?=\s|$)", text, re.M):
        return _PortTableNamer(text, candidates)

    from portkit.registry._registry import default_registry

    return default_registry().name_for
