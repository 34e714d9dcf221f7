"""Commands about what a port is: explain, lookup, ranges, free-port."""

from __future__ import annotations

import click

from portkit.cli._about_text import print_explanation, service_rows
from portkit.cli._params import WholeNumber
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import UsageError, quote
from portkit.explain import explain_port, parse_port_proto
from portkit.kernel import read_port_settings
from portkit.model import DYNAMIC, REGISTERED, WELL_KNOWN, PortRange, Transport, parse_decimal
from portkit.registry import default_registry


@click.command()
@click.argument("port")
@json_option
def explain(port: str, as_json: bool) -> None:
    """What PORT[/PROTO] is: range class, services, binding, ephemeral range, risks."""
    number, protocol = parse_port_proto(port)
    print_explanation(explain_port(number, protocol), as_json)


@click.command()
@click.argument("text", nargs=-1, required=True)
@click.option(
    "--limit", default=40, show_default=True, type=WholeNumber(0), help="At most this many rows (0 = all)."
)
@json_option
def lookup(text: tuple[str, ...], limit: int, as_json: bool) -> None:
    """Ports of a service, by name or keyword ('ssh', 'remote desktop', 'postgres')."""
    query = " ".join(text)
    found = default_registry().search(query)
    if as_json:
        emit_json({"query": query, "services": [s.to_json() for s in (found[:limit] if limit else found)]})
        return
    rows = service_rows(found)
    emit_table(
        ["PORT", "SERVICE", "SOURCES", "DESCRIPTION"],
        rows[:limit] if limit else rows,
        empty=f"no service matches {quote(query)}",
    )


@click.command()
@json_option
def ranges(as_json: bool) -> None:
    """IANA's port ranges next to this machine's ephemeral, reserved and unprivileged settings."""
    settings = read_port_settings()
    classes = [WELL_KNOWN, REGISTERED, DYNAMIC]
    if as_json:
        emit_json(
            {
                "iana": [
                    {"name": c.name, "first": c.first, "last": c.last, "description": c.description}
                    for c in classes
                ],
                "host": settings.to_json(),
            }
        )
        return
    emit_table(
        ["RANGE", "PORTS", "MEANING"],
        [(c.name, f"{c.first}-{c.last}", c.description) for c in classes],
        title="IANA port ranges (RFC 6335)",
    )
    click.echo()
    eph = settings.ephemeral
    emit_table(
        ["SETTING", "VALUE", "MEANING"],
        [
            (
                "ephemeral range",
                str(eph),
                f"{len(eph)} ports the kernel picks for outgoing connections (net.ipv4.ip_local_port_range)",
            ),
            (
                "reserved ports",
                ",".join(map(str, settings.reserved)) or "(none)",
                "kept out of the ephemeral range (net.ipv4.ip_local_reserved_ports)",
            ),
            (
                "unprivileged from",
                str(settings.unprivileged_start),
                "binding a lower port needs root or CAP_NET_BIND_SERVICE "
                "(net.ipv4.ip_unprivileged_port_start)",
            ),
        ],
        title="This machine",
    )
    overlap = eph.first < REGISTERED.last
    if overlap:
        click.echo()
        click.echo(
            f"note: the ephemeral range {eph} overlaps IANA's registered range; a service on a port in "
            "it can fail to bind when an outgoing connection holds that port."
        )


def _parse_range(_ctx: click.Context, _param: click.Parameter, value: str | None) -> PortRange | None:
    if value is None:
        return None
    first_text, sep, last_text = value.partition("-")
    first, last = parse_decimal(first_text), parse_decimal(last_text)
    if not sep or first is None or last is None:
        raise UsageError(f"invalid range {quote(value)}: expected A-B, e.g. 20000-30000")
    if last > 65535 or first > last:
        raise UsageError(f"invalid range {quote(value)}: expected A-B with 0 <= A <= B <= 65535")
    return PortRange(first, last)


@click.command("free-port")
@click.option("--proto", "proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--range", "search", callback=_parse_range, help="Search only A-B (default 1024-49151).")
@click.option("--count", default=1, show_default=True, type=WholeNumber(1, 1000))
@json_option
def free_port(proto: str, search: PortRange | None, count: int, as_json: bool) -> int:
    """Ports free to bind now, outside the ephemeral range, avoiding known services."""
    from portkit.freeport import DEFAULT_RANGE, find_free_ports

    protocol = Transport.parse(proto)
    ports = find_free_ports(count, protocol, search)
    if as_json:
        emit_json({"protocol": protocol.value, "ports": ports, "requested": count})
    else:
        for port in ports:
            click.echo(port)
    if len(ports) < count:
        settings = read_port_settings()
        click.echo(
            f"portkit: found only {len(ports)} of {count} free ports in {search or DEFAULT_RANGE} "
            f"(skipped: the ephemeral range {settings.ephemeral}, reserved ports, ports below "
            f"{settings.unprivileged_start} and ports /etc/services or portkit's table assign)",
            err=True,
        )
        return 1
    return 0
