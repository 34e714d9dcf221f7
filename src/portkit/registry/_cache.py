"""The per-user cache of the IANA layer: written by the importer, read by look-ups.

A tab-separated file, one service a line, so that a look-up of one port can find its
lines without parsing the rest. Every function takes the file's path; without one, the
process-wide choice (`registry_paths().cache_file`, ~/.cache/portkit/ unless the caller
chose otherwise).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING

from portkit.model import Transport
from portkit.registry._paths import registry_paths
from portkit.registry._service import Service, Source

if TYPE_CHECKING:
    from portkit.registry.iana import ImportReport

_CACHE_MAGIC = "# portkit iana cache v1 "


def cache_path() -> Path:
    """The IANA cache file of the process-wide `registry_paths()`."""
    return registry_paths().cache_file


def write_cache(services: list[Service], report: ImportReport, path: Path | None = None) -> Path:
    path = path or cache_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"source": report.source, "imported_at": int(time.time()), "imported": report.imported}
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(_CACHE_MAGIC + json.dumps(meta) + "\n")
        for s in services:
            desc = s.description.replace("\t", " ").replace("\n", " ")
            out.write(f"{s.name}\t{s.port}\t{s.last_port}\t{s.protocol.value}\t{desc}\n")
    tmp.replace(path)
    return path


def _cache_text(path: Path | None = None) -> str:
    try:
        text = (path or cache_path()).read_text(encoding="utf-8")
    except OSError:
        return ""
    return text if text.startswith(_CACHE_MAGIC) else ""


def _cache_service(line: str) -> Service:
    name, port, last, proto, desc = line.split("\t", 4)
    return Service(name, int(port), Transport(proto), Source.IANA, desc, last_port=int(last))


def load_cache(path: Path | None = None) -> list[Service]:
    """The cached IANA layer, or nothing when no import has been done."""
    return [_cache_service(line) for line in _cache_text(path).splitlines()[1:]]


_CACHE_RANGE_RE = re.compile(r"^[^\t\n]*\t(\d+)\t(\d+)\t[^\n]*$", re.M)


def query_cache(port: int, protocol: Transport, path: Path | None = None) -> list[Service]:
    """The cached entries covering one port, found without parsing the whole cache."""
    text = _cache_text(path)
    if not text:
        return []
    exact = re.compile(rf"^[^\t\n]*\t{port}\t{port}\t{protocol.value}\t[^\n]*$", re.M)
    found = [_cache_service(m.group(0)) for m in exact.finditer(text)]
    for m in _CACHE_RANGE_RE.finditer(text):
        first, last = int(m.group(1)), int(m.group(2))
        if first != last and first <= port <= last:
            service = _cache_service(m.group(0))
            if service.protocol is protocol:
                found.append(service)
    return found
