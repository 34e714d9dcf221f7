"""Layer 1: the built-in table written for portkit (see `_builtin_table.py`)."""

from __future__ import annotations

import re

from portkit.model import Transport
from portkit.registry._service import Service, Source


def parse_builtin_table(text: str) -> list[Service]:
    """Parse `name | ports | protocols | category | commonness | description | risk -> alternative`."""
    services: list[Service] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        services.extend(parse_builtin_line(line, lineno))
    return services


def parse_builtin_line(line: str, lineno: int = 0) -> list[Service]:
    """One table line -> a Service per protocol it names (none for blanks and comments)."""
    line = line.strip()
    services: list[Service] = []
    if not line or line.startswith("#"):
        return services
    fields = [f.strip() for f in line.split("|")]
    if len(fields) != 7:
        raise ValueError(f"built-in table line {lineno}: expected 7 fields, got {len(fields)}")
    names, ports, protos, category, commonness, description, risk_text = fields
    name, *aliases = [n.strip() for n in names.split("/") if n.strip()]
    first_text, _, last_text = ports.partition("-")
    first = int(first_text)
    last = int(last_text) if last_text else first
    risk, _, alternative = risk_text.partition("->")
    for proto in protos.split(","):
        services.append(
            Service(
                name=name,
                port=first,
                last_port=last,
                protocol=Transport(proto.strip()),
                source=Source.BUILTIN,
                description=description,
                aliases=tuple(aliases),
                category=category,
                risk=risk.strip(),
                alternative=alternative.strip(),
                commonness=int(commonness),
            )
        )
    return services


_RANGE_LINE_RE = re.compile(r"^[^|\n]*\|\s*(\d+)-(\d+)\s*\|[^\n]*$", re.M)


def query_builtin(port: int, protocol: Transport) -> list[Service]:
    """The entries covering one port, found without parsing the whole table (for fast start-up)."""
    from portkit.registry._builtin_table import TABLE

    exact = re.compile(rf"^[^|\n]*\|\s*{port}\s*\|[^\n]*$", re.M)
    lines = [m.group(0) for m in exact.finditer(TABLE)]
    lines += [
        m.group(0) for m in _RANGE_LINE_RE.finditer(TABLE) if int(m.group(1)) <= port <= int(m.group(2))
    ]
    return [s for line in lines for s in parse_builtin_line(line) if s.protocol is protocol]


def load_builtin() -> list[Service]:
    from portkit.registry._builtin_table import TABLE

    return parse_builtin_table(TABLE)
