"""What `portkit explain` prints, without Click: shared by the Click command (portkit.cli.about)
and the console script's Click-free lane (portkit.cli.entry), so both print the same."""

from __future__ import annotations

from portkit.cli._text import echo, emit_json, emit_pairs, emit_table

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from portkit.explain import PortExplanation
    from portkit.model import Transport
    from portkit.registry import Service


def service_rows(services: list[Service] | tuple[Service, ...]) -> list[tuple[str, str, str, str]]:
    """One row per (ports, protocol, name), naming every source that knows it."""
    rows: dict[tuple[str, Transport, str], tuple[list[str], str]] = {}
    for s in services:
        sources, description = rows.setdefault((s.ports, s.protocol, s.name), ([], s.description))
        if s.source.value not in sources:
            sources.append(s.source.value)
        if not description and s.description:
            rows[(s.ports, s.protocol, s.name)] = (sources, s.description)
    return [
        (f"{ports}/{proto}", name or "-", ",".join(sources), description)
        for (ports, proto, name), (sources, description) in rows.items()
    ]


def _ephemeral_text(result: PortExplanation) -> str:
    where = f"this machine hands out {result.settings.ephemeral} to outgoing connections"
    if result.ephemeral and result.reserved:
        # The kernel's port choice skips ip_local_reserved_ports (inet_is_local_reserved_port).
        return f"in the range but never handed out: reserved ({where})"
    return ("yes" if result.ephemeral else "no") + f" ({where})"


def print_explanation(result: PortExplanation, as_json: bool) -> None:
    """`portkit explain`'s output for one explained port."""
    if as_json:
        emit_json(result.to_json())
        return
    s = result.settings
    if result.port == 0:
        # bind() to port 0 asks for a free ephemeral port (inet_csk_get_port); no privilege.
        bind = f"any user; the kernel picks a free port from {s.ephemeral}"
    elif result.needs_privilege:
        bind = f"needs root or CAP_NET_BIND_SERVICE (ports below {s.unprivileged_start})"
    else:
        bind = f"any user (ports from {s.unprivileged_start} up)"
    if result.needs_privilege:
        bind += "; this process may bind it" if result.can_bind_now else "; this process may not bind it"
    emit_pairs(
        [
            ("port", f"{result.port} ({'/'.join(p.value for p in result.protocols)})"),
            (
                "class",
                f"{result.port_class.name} ({result.port_class.first}-{result.port_class.last}): "
                f"{result.port_class.description}",
            ),
            ("binding", bind),
            ("ephemeral", _ephemeral_text(result)),
            ("reserved", "yes (ip_local_reserved_ports)" if result.reserved else "no"),
        ]
    )
    echo()
    rows = service_rows(result.services)
    emit_table(["PORT", "SERVICE", "SOURCES", "DESCRIPTION"], rows, empty="no service is known on this port")
    for risk in result.risks:
        echo()
        line = f"risk ({risk.name}): {risk.risk}"
        echo(line + (f"; safer: {risk.alternative}" if risk.alternative else ""))
