"""`portkit nat map`, `nat unmap`, `nat router`: ask the gateway for a port mapping over PCP,
NAT-PMP or UPnP-IGD, remove it, or see what the gateway answers.

These are the only commands that send discovery traffic (a unicast SSDP search of the gateway,
and SSDP multicast on the LAN when that gets no answer); nothing else in portkit does.
"""

from __future__ import annotations

import ipaddress
import signal
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from portkit.cli._params import FiniteNumber, WholeNumber
from portkit.cli.output import emit_json, emit_pairs, emit_table, json_option
from portkit.errors import Terminated, UsageError, quote
from portkit.model import Transport, parse_decimal

if TYPE_CHECKING:
    from portkit.nat import Attempt, Gateway, Mapping, MapRequest, Via

MACHINE_ID = Path("/etc/machine-id")
MAX_LEASE = 0xFFFFFFFF


class MappedPort(click.ParamType):  # type: ignore[type-arg]
    """A port a mapping can name: 1-65535 (0 means "any" to the protocols, not a port)."""

    name = "port"

    def __init__(self, what: str) -> None:
        self.what = what

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        port = value if isinstance(value, int) else parse_decimal(str(value).strip())
        if port is None or not 1 <= port <= 65535:
            raise UsageError(f"invalid {self.what} {quote(str(value))}: expected a port 1-65535")
        return port


def _gateway_address(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        address = None
    if not isinstance(address, ipaddress.IPv4Address) or address.is_unspecified or address.is_multicast:
        raise UsageError(
            f"invalid --gateway {quote(value)}: expected the gateway's IPv4 address, e.g. 192.168.1.1"
        )
    return str(address)


# miniupnpc sends the description into the SOAP body unescaped ('<' made miniupnpd store an
# empty one) and lists at most 63 bytes of it in UTF-8 (a mapping with a longer one was made but
# missing from `nat router`): both measured against miniupnpd in tests/test_nat_map.py.
MAX_DESCRIPTION = 63


def _check_description(text: str) -> None:
    if len(text.encode()) > MAX_DESCRIPTION or any(ch in "<>&" or not ch.isprintable() for ch in text):
        raise UsageError(
            f"invalid --description {quote(text)}: expected at most {MAX_DESCRIPTION} bytes (UTF-8) of "
            "printable characters, none of < > &"
        )


def _find_gateway(given: str | None) -> Gateway:
    from portkit.nat import Gateway, NoGatewayAnswer, default_gateway

    address = _gateway_address(given)
    if address is not None:
        return Gateway(address, "--gateway")
    found = default_gateway()
    if found is None:
        raise NoGatewayAnswer("no gateway: this network namespace has no IPv4 default route "
                              "(read from /proc/net/route); give one with --gateway ADDR")  # fmt: skip
    return found


def _order(via: str, *, removing: bool = False) -> tuple[Via, ...]:
    from portkit.nat import AUTO_ORDER, UNMAP_AUTO_ORDER, Via

    if via != "auto":
        return (Via(via),)
    return UNMAP_AUTO_ORDER if removing else AUTO_ORDER


def _secret() -> bytes:
    """This host's PCP nonce key: /etc/machine-id is private to the host and stable across runs."""
    try:
        return MACHINE_ID.read_bytes().strip()
    except OSError:
        return b""


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "never (until removed)"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def _mapping_rows(mappings: list[Mapping]) -> list[tuple[str, ...]]:
    return [
        (
            m.via.title,
            m.protocol.value,
            f"{m.external_address or '?'}:{m.external_port}",
            f"{m.internal_address}:{m.internal_port}",
            "permanent" if m.lifetime == 0 else f"{m.lifetime}s",
            _when(m.expires_at),
            m.description,
        )
        for m in mappings
    ]


MAPPING_COLUMNS = ["VIA", "PROTO", "EXTERNAL", "INTERNAL", "LEASE", "EXPIRES", "DESCRIPTION"]


def _document(event: str, gateway: Gateway, mapping: Mapping, attempts: list[Attempt]) -> dict[str, Any]:
    return {
        "event": event,
        "gateway": gateway.to_json(),
        "mapping": mapping.to_json(),
        "attempts": [a.to_json() for a in attempts],
    }


def _show(event: str, gateway: Gateway, mapping: Mapping, attempts: list[Attempt], as_json: bool,
          *, stream: bool) -> None:  # fmt: skip
    if as_json:
        if stream:
            import json

            click.echo(json.dumps(_document(event, gateway, mapping, attempts)))
        else:
            emit_json(_document(event, gateway, mapping, attempts))
        return
    moved = (
        f"; the gateway chose port {mapping.external_port}, not {mapping.requested_port}"
        if mapping.moved
        else ""
    )
    emit_table(MAPPING_COLUMNS, _mapping_rows([mapping]), title=f"{event} (gateway {gateway.address}, "
               f"{gateway.source}; tried: {'; '.join(str(a) for a in attempts)}{moved})")  # fmt: skip


def _renewal_wait(mapping: Mapping) -> float:
    """Seconds until the next renewal: half of what is left of the lease (RFC 6886 section 3.3,
    RFC 6887 section 11.2.1), at least one second; an hour for a lease without end."""
    expires = mapping.expires_at
    if expires is None:
        return 3600.0
    return max(1.0, (expires - time.time()) / 2)


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Terminated


timeout_option = click.option(
    "--timeout",
    type=FiniteNumber(0.1, 120),
    default=3.0,
    show_default=True,
    help="Seconds to wait for each protocol's answer.",
)
via_option = click.option(
    "--via",
    type=click.Choice(["auto", "pcp", "natpmp", "upnp"]),
    default="auto",
    show_default=True,
    help="Protocol: auto tries PCP, then NAT-PMP, then UPnP-IGD.",
)
proto_option = click.option(
    "--proto", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True, help="Transport."
)
gateway_option = click.option(
    "--gateway", metavar="ADDR", help="The gateway's address [the default route's next hop]."
)


@click.command(name="map")
@click.argument("public_port", type=MappedPort("public port"))
@click.argument("internal_port", type=MappedPort("internal port"), required=False)
@proto_option
@click.option(
    "--lease",
    type=WholeNumber(1, MAX_LEASE),
    default=3600,
    show_default=True,
    help="Lifetime to ask for, seconds (the gateway may grant another).",
)
@via_option
@gateway_option
@click.option(
    "--renew",
    is_flag=True,
    help="Stay in the foreground renewing at half the lease; remove the mapping on exit.",
)
@click.option("--description", default="portkit", show_default=True, help="UPnP mapping description.")
@timeout_option
@json_option
def map_cmd(
    public_port: int,
    internal_port: int | None,
    proto: str,
    lease: int,
    via: str,
    gateway: str | None,
    renew: bool,
    description: str,
    timeout: float,
    as_json: bool,
) -> None:
    """Ask the gateway to forward PUBLIC_PORT to INTERNAL_PORT (default: the same) of this host.

    Exit status 1 when no gateway answers (the error names what was tried) or it refuses.
    """
    from portkit.nat import MapRequest, NoGatewayAnswer, map_port, unmap_port

    _check_description(description)
    where = _find_gateway(gateway)
    request = MapRequest(Transport.parse(proto), public_port, internal_port or public_port, lease,
                         _secret(), description, timeout)  # fmt: skip
    mapping, attempts = map_port(where, request, _order(via))
    _show("mapped", where, mapping, attempts, as_json, stream=renew)
    if not renew:
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        while True:
            time.sleep(_renewal_wait(mapping))
            try:
                mapping, attempts = map_port(where, request, (mapping.via,))
            except NoGatewayAnswer:
                # A lost renewal is retried while the lease lasts (RFC 6887 section 11.2.1).
                if time.time() >= (mapping.expires_at or 0.0):
                    raise
                continue
            _show("renewed", where, mapping, attempts, as_json, stream=True)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            _, attempts = unmap_port(where, request, (mapping.via,))
            _show("removed", where, mapping, attempts, as_json, stream=True)
        finally:
            signal.signal(signal.SIGTERM, previous)


def _request(public_port: int, internal_port: int | None, proto: str, timeout: float) -> MapRequest:
    from portkit.nat import MapRequest

    return MapRequest(Transport.parse(proto), public_port, internal_port or public_port, 0, _secret(),
                      timeout=timeout)  # fmt: skip


@click.command(name="unmap")
@click.argument("public_port", type=MappedPort("public port"))
@click.argument("internal_port", type=MappedPort("internal port"), required=False)
@proto_option
@via_option
@gateway_option
@timeout_option
@json_option
def unmap_cmd(
    public_port: int,
    internal_port: int | None,
    proto: str,
    via: str,
    gateway: str | None,
    timeout: float,
    as_json: bool,
) -> None:
    """Remove the mapping of PUBLIC_PORT (to INTERNAL_PORT, default the same) from the gateway.

    UPnP finds a mapping by its public port, NAT-PMP and PCP by its internal port. --via auto asks
    UPnP first (it can check that the public port maps to this host), then PCP, then NAT-PMP.
    """
    from portkit.nat import unmap_port

    where = _find_gateway(gateway)
    request = _request(public_port, internal_port, proto, timeout)
    removed, attempts = unmap_port(where, request, _order(via, removing=True))
    if as_json:
        emit_json(
            {
                "gateway": where.to_json(),
                "protocol": request.protocol.value,
                "external_port": request.external_port,
                "internal_port": request.internal_port,
                "removed_via": removed.value,
                "attempts": [a.to_json() for a in attempts],
            }
        )
        return
    emit_table(
        ["VIA", "GATEWAY", "OUTCOME"],
        [(a.via.title, a.gateway, a.outcome) for a in attempts],
        title=f"unmapped {request.external_port}/{request.protocol} (internal port {request.internal_port}) "
        f"via {removed.title}",
    )


@click.command(name="router")
@via_option
@gateway_option
@timeout_option
@json_option
def router_cmd(via: str, gateway: str | None, timeout: float, as_json: bool) -> None:
    """What the gateway is, which protocols it answers, its external address and its mappings.

    Only UPnP-IGD can list a gateway's mappings. Exit status 1 when no protocol answers.
    """
    from portkit.nat import Attempt, NoGatewayAnswer, survey, tried

    where = _find_gateway(gateway)
    found = survey(where, _order(via), timeout)
    if not found.answering:
        attempts = [Attempt(p.via, where.address, p.detail) for p in found.protocols]
        raise NoGatewayAnswer(f"no gateway answered {tried(attempts)}")
    if as_json:
        emit_json(found.to_json())
        return
    emit_pairs(
        [
            ("gateway", f"{where.address} ({where.source})"),
            ("this host", found.client_address),
            ("external address", found.external_address or "unknown"),
        ]
    )
    click.echo()
    emit_table(
        ["PROTOCOL", "ANSWERS", "DETAIL"],
        [(p.via.title, "yes" if p.answers else "no", p.detail) for p in found.protocols],
    )
    if found.mappings_listed:
        click.echo()
        emit_table(MAPPING_COLUMNS, _mapping_rows(found.mappings), title="mappings (listed over UPnP-IGD)")
