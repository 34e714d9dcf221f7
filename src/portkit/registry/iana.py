"""Layer 3: IANA's Service Name and Transport Transport Port Number Registry.

`import_iana(path)` reads IANA's CSV or XML format, accounts for every record (imported,
or skipped with a reason), and stores the usable rows in a per-user cache that later
look-ups read. `download_iana()` fetches the registry from IANA when the network allows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from portkit._textfile import read_text_file
from portkit.errors import PortkitError, UsageError, quote
from portkit.model import Transport, parse_decimal
from portkit.registry._cache import write_cache
from portkit.registry._service import Service, Source

IANA_CSV_URL = "https://www.iana.org/assignments/service-names-port-numbers/service-names-port-numbers.csv"


@dataclass
class ImportReport:
    """What an import did with every record of the source."""

    source: str
    records: int = 0
    imported: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    cache: str = ""

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "records": self.records,
            "imported": self.imported,
            "skipped": self.skipped_total,
            "skipped_by_reason": dict(sorted(self.skipped.items())),
            "cache": self.cache,
        }


@dataclass(frozen=True)
class IanaRecord:
    """One record as IANA publishes it, before it is judged."""

    name: str
    number: str
    protocol: str
    description: str


def _read_csv(text: str, source: str = "CSV") -> Iterator[IanaRecord]:
    import csv
    import io

    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        yield from _csv_records(reader)
    except csv.Error as exc:  # a field over csv's 128 KiB limit, a NUL byte, ...
        where = f"{quote(source)}: line {reader.line_num}"
        raise UsageError(f"invalid IANA registry file {where}: {exc}") from None


def _csv_records(reader: Iterator[list[str]]) -> Iterator[IanaRecord]:
    header = next(reader, None)
    if not header or [h.strip().lower() for h in header[:4]] != [
        "service name",
        "port number",
        "transport protocol",
        "description",
    ]:
        raise UsageError(
            "not an IANA port registry CSV: the first row must start "
            "'Service Name,Port Number,Transport Transport,Description'"
        )
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        row = row + [""] * (4 - len(row))
        yield IanaRecord(row[0].strip(), row[1].strip(), row[2].strip().lower(), row[3].strip())


def _read_xml(text: str) -> Iterator[IanaRecord]:
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UsageError(f"not a readable IANA registry XML file: {exc}") from None
    # Records are the children of a <registry>, their fields the records' children: reading
    # exactly that much keeps the work linear however deeply a malformed file nests elements.
    for registry in root.iter():
        if not isinstance(registry.tag, str) or registry.tag.rsplit("}", 1)[-1] != "registry":
            continue
        for elem in registry:
            if isinstance(elem.tag, str) and elem.tag.rsplit("}", 1)[-1] == "record":
                yield _xml_record(elem)


def _xml_record(elem: Any) -> IanaRecord:
    values: dict[str, str] = {}
    for child in elem:
        if isinstance(child.tag, str):  # (comments and processing instructions are not fields)
            inline = "".join((g.text or "") + (g.tail or "") for g in child)  # <xref/> in a description
            values[child.tag.rsplit("}", 1)[-1]] = ((child.text or "") + inline).strip()
    return IanaRecord(
        values.get("name", ""),
        values.get("number", ""),
        values.get("protocol", "").lower(),
        values.get("description", ""),
    )


def read_records(text: str, source: str = "CSV") -> Iterator[IanaRecord]:
    """IANA records from CSV or XML text (the format is recognised from the content)."""
    if text.lstrip().startswith("<"):
        return _read_xml(text)
    return _read_csv(text, source)


def judge_record(record: IanaRecord) -> tuple[list[Service], str]:
    """The services a record yields, or the reason it yields none."""
    description = " ".join(record.description.split())
    lowered = description.lower()
    if not record.number:
        return [], "no port number (service name only)"
    if not record.name and (lowered.startswith("unassigned") or lowered.startswith("reserved")):
        return [], "unassigned" if lowered.startswith("unassigned") else "reserved"
    if not record.protocol:
        return [], "no transport protocol"
    if record.protocol not in ("tcp", "udp", "sctp"):
        return [], f"unsupported protocol {record.protocol}"
    first_text, _, last_text = record.number.partition("-")
    first, last = parse_decimal(first_text), parse_decimal(last_text or first_text)
    if first is None or last is None or not 0 <= first <= last <= 65535:
        return [], "malformed port number"
    service = Service(
        name=record.name,
        port=first,
        last_port=last,
        protocol=Transport(record.protocol),
        source=Source.IANA,
        description=description,
    )
    return [service], ""


def import_records(records: Iterable[IanaRecord], source: str) -> tuple[list[Service], ImportReport]:
    report = ImportReport(source=source)
    services: list[Service] = []
    for record in records:
        report.records += 1
        found, reason = judge_record(record)
        if found:
            report.imported += 1
            services.extend(found)
        else:
            report.skipped[reason] += 1
    return services, report


def import_iana(path: str | Path, *, cache: Path | None = None) -> ImportReport:
    """Import IANA's CSV or XML registry from a file into the per-user cache."""
    file = Path(path)
    text = read_text_file(file, what="IANA registry file")
    services, report = import_records(read_records(text, str(file)), source=str(file))
    if report.imported == 0:
        raise UsageError(f"cannot import {str(path)!r}: no usable IANA records in it")
    report.cache = str(write_cache(services, report, cache))
    return report


def download_iana(
    url: str = IANA_CSV_URL, *, timeout: float = 30.0, cache: Path | None = None
) -> ImportReport:
    """Fetch the registry from IANA and import it; a clear PortkitError when offline."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PortkitError(
            f"cannot download the IANA registry from {url}: {reason}; "
            "download it elsewhere and run 'portkit registry import FILE'"
        ) from None
    services, report = import_records(read_records(text), source=url)
    report.cache = str(write_cache(services, report, cache))
    return report
