"""Layer 1: the built-in table written for portkit (see `_builtin_table.py`)."""

from __future__ import annotations

from portkit.model import Protocol
from portkit.registry._service import Service, Source


def parse_builtin_table(text: str) -> list[Service]:
    """Parse `name | ports | protocols | category | commonness | description | risk -> alternative`."""
    services: list[Service] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
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
                    protocol=Protocol(proto.strip()),
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


def load_builtin() -> list[Service]:
    from portkit.registry._builtin_table import TABLE

    return parse_builtin_table(TABLE)
