"""`portkit nat`: port forwards behind NAT: list them, write and remove their rules, check one
from outside (a thin client of portkit.nat). `nat map`/`unmap`/`router` (asking a gateway
over UPnP-IGD, NAT-PMP or PCP) live in portkit.cli.nat_map and join this group when present."""

from __future__ import annotations

import importlib
import importlib.util
import ipaddress
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import click

from portkit.cli._params import parse_duration
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import UsageError, quote


@click.group()
def nat() -> None:
    """Port forwards behind NAT: list, add, remove and check them from outside.

    `nat add` writes the complete rules for a forward (DNAT, the forward-path accept, hairpin
    masquerade) for nft, iptables, firewalld or ufw; `nat ls` lists every forward in force with
    whether it works; `nat check` probes one from a network namespace. `nat map`, `unmap` and
    `router` ask a home router for a mapping (UPnP-IGD, NAT-PMP, PCP).
    """


def _check_netns(netns: str | None) -> None:
    if netns is not None:
        from portkit.nat import check_namespace

        check_namespace(netns)


def _port(text: str, what: str) -> int:
    from portkit.nat import parse_port

    return parse_port(text, what)


@nat.command("ls")
@click.option("--netns", help="List the forwards of this network namespace (e.g. the router's).")
@click.option("--no-listeners", is_flag=True, help="Do not look for listening sockets at the targets.")
@json_option
def ls_cmd(netns: str | None, no_listeners: bool, as_json: bool) -> None:
    """Every port forward in force: DNAT/REDIRECT rules with what decides whether they work.

    For each: public address:port -> target, the rule (table, chain, handle), ip_forward, the
    forward-path filter's verdict (uncertain when it cannot be decided), hairpin, and whether
    anything listens at a target on this host or a local namespace. Exit 1 when a forward has
    a problem (nothing listens, forwarding off, the filter drops it).
    """
    from portkit.nat import list_forwards

    _check_netns(netns)
    forwards, notes = list_forwards(netns, inspect_listeners=not no_listeners)
    if as_json:
        emit_json(
            {
                "netns": netns,
                "forwards": [f.to_json() for f in forwards],
                "notes": list(notes),
            }
        )
    else:
        rows = [
            (
                f.protocol,
                f.public + (f" in {f.iif}" if f.iif else ""),
                f.target,
                f"{f.table} {f.chain}" + (f" #{f.handle}" if f.handle is not None else ""),
                {True: "on", False: "OFF", None: "-"}[f.forwarding],
                f.filter,
                f.hairpin,
                f.listening.state,
                f.tag.removeprefix("portkit-nat:") if f.tag else "",
            )
            for f in forwards
        ]
        emit_table(
            ("PROTO", "PUBLIC", "TARGET", "RULE", "FWD", "FILTER", "HAIRPIN", "LISTEN", "ID"),
            rows,
            title=f"port forwards in {'netns ' + netns if netns else 'this host'}",
            empty="(no DNAT or REDIRECT rules)",
        )
        for f in forwards:
            for problem in f.problems:
                click.echo(f"! {f.protocol} {f.public} -> {f.target}: {problem}")
    if any(f.problems for f in forwards):
        sys.exit(1)


@nat.command("add")
@click.argument("public_port")
@click.argument("target")
@click.option("--proto", "protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--in", "iif", default="", help="Only traffic arriving on this interface (e.g. the WAN side).")
@click.option(
    "--public-addr",
    "public_addr",
    default=None,
    help="Only traffic to this address (default: any address of this host).",
)
@click.option(
    "--hairpin", is_flag=True, help="Also for clients on the target's side and this host (DNAT + masquerade)."
)
@click.option(
    "--lan", default=None, help="The hairpin clients' subnet (default: the target's connected subnet)."
)
@click.option(
    "--to",
    "fmt",
    type=click.Choice(["nft", "iptables", "firewalld", "ufw"]),
    default="nft",
    show_default=True,
)
@click.option("--zone", default="", help="firewalld zone (default: the zone of --in, else the default zone).")
@click.option("--netns", help="Plan against (and with --apply, load into) this network namespace.")
@click.option(
    "--apply",
    "do_apply",
    is_flag=True,
    help="Load the rules (nft) through `portkit fw apply`'s guarded apply.",
)
@click.option(
    "--confirm-within",
    default="30s",
    show_default=True,
    help="With --apply: roll back unless `portkit fw confirm` runs in time.",
)
@json_option
def add_cmd(
    public_port: str,
    target: str,
    protocol: str,
    iif: str,
    public_addr: str | None,
    hairpin: bool,
    lan: str | None,
    fmt: str,
    zone: str,
    netns: str | None,
    do_apply: bool,
    confirm_within: str,
    as_json: bool,
) -> None:
    """Write the rules that forward PUBLIC_PORT to TARGET_HOST:PORT.

    The complete set goes to stdout, loadable as it is (`nft -f -`, `iptables-restore -n`, the
    firewall-cmd lines, ufw's before.rules text); what is not a rule (ip_forward, a missing
    route) goes to stderr. Every rule carries the comment portkit-nat:ID; `portkit nat rm ID`
    deletes them. --apply loads nft rules with validation and automatic roll-back.
    """
    from portkit.model import Transport
    from portkit.nat import PortForward, apply_forward, parse_address_or_name, parse_target, plan_forward

    port = _port(public_port, "public port")
    address, target_port = parse_target(target)
    public = parse_address_or_name(public_addr, "--public-addr") if public_addr is not None else None
    subnet = None
    if lan is not None:
        try:
            subnet = ipaddress.ip_network(lan, strict=False)
        except ValueError:
            raise UsageError(
                f"invalid --lan {quote(lan)}: expected a subnet such as 192.168.1.0/24"
            ) from None
    _check_netns(netns)
    fwd = PortForward(port, address, target_port, Transport(protocol), iif, public, hairpin, subnet)
    seconds = parse_duration(confirm_within, "--confirm-within", minimum=1, maximum=3600)
    if do_apply and fmt != "nft":
        raise UsageError(f"--apply loads nft rules only: with --to {fmt}, load the printed rules yourself")
    if zone and fmt != "firewalld":
        raise UsageError(f"--zone {quote(zone)} is a firewalld zone: give it with --to firewalld")
    if zone and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", zone):
        raise UsageError(f"invalid --zone {quote(zone)}: expected a firewalld zone name, e.g. public, dmz")
    generated = plan_forward(fwd, fmt, netns=netns, zone=zone)
    result = None
    if do_apply:
        result = apply_forward(
            generated, netns=netns, confirm_within=seconds, state_root=_state_root(os.environ)
        )
    if as_json:
        doc = generated.to_json()
        doc["apply"] = result.to_json() if result is not None else None
        emit_json(doc)
    else:
        click.echo(generated.text, nl=False)
        for note in generated.notes:
            click.echo(f"note: {note}", err=True)
        click.echo(f"note: load with: {generated.load}; remove with: portkit nat rm {fwd.id}", err=True)
        if result is not None:
            click.echo(str(result), err=True)
    if result is not None and not result.ok:
        sys.exit(1)


@nat.command("rm")
@click.argument("forward_id")
@click.option("--netns", help="Remove from this network namespace.")
@click.option(
    "--apply", "do_apply", is_flag=True, help="Delete the rules now (otherwise print the commands)."
)
@json_option
def rm_cmd(forward_id: str, netns: str | None, do_apply: bool, as_json: bool) -> None:
    """Remove exactly the rules `nat add` made for FORWARD_ID (e.g. tcp-8443).

    Finds the nft and iptables rules tagged portkit-nat:FORWARD_ID in the live ruleset and
    prints the commands that delete them; --apply runs them. Exit 1 when none is found.
    """
    from portkit.nat import find_removal, parse_forward_id, remove_forward

    ident = parse_forward_id(forward_id)
    _check_netns(netns)
    removal = find_removal(ident, netns)
    if do_apply and not removal.empty:
        remove_forward(removal, netns)
    if as_json:
        emit_json({**removal.to_json(), "applied": do_apply and not removal.empty})
    elif removal.empty:
        click.echo(
            f"no rules tagged portkit-nat:{ident} in {'netns ' + netns if netns else 'this host'}", err=True
        )
    else:
        if do_apply:
            for text in removal.rules:
                click.echo(f"removed {text}")
        else:
            click.echo(removal.script(), nl=False)
    if removal.empty:
        sys.exit(1)


@nat.command("check")
@click.argument("public")
@click.option("--from", "vantage", required=True, help="The network namespace to probe from (the outside).")
@click.option("--proto", "protocol", type=click.Choice(["tcp", "udp"]), default="tcp", show_default=True)
@click.option("--timeout", default="3s", show_default=True, help="How long the probe waits.")
@click.option("--router", "router", default=None, help="The router's network namespace (default: found).")
@json_option
def check_cmd(
    public: str, vantage: str, protocol: str, timeout: str, router: str | None, as_json: bool
) -> None:
    """Is PUBLIC_ADDR:PORT reachable from outside? Probe it from the namespace --from.

    When the public address is this host's or a local namespace's (the router is local), the
    DNAT rule counters and the conntrack entry the probe created are shown too; a failed check
    names the cause. Exit 0 reachable, 1 not.
    """
    from portkit.model import Transport
    from portkit.nat import check_forward, parse_target

    address, port = parse_target(public)
    if not isinstance(address, ipaddress.IPv4Address | ipaddress.IPv6Address):  # pragma: no cover
        raise UsageError(f"invalid address {quote(public)}")
    seconds = parse_duration(timeout, "--timeout", minimum=0.05, maximum=60)
    _check_netns(vantage)
    _check_netns(router)
    result = check_forward(
        address, port, from_netns=vantage, protocol=Transport(protocol), timeout=seconds, router_netns=router
    )
    if as_json:
        emit_json(result.to_json())
    else:
        verdict = "reachable" if result.reachable else "NOT reachable"
        click.echo(
            f"{result.protocol} {result.public} from netns {vantage}: {verdict} "
            f"({result.probe.outcome}, {result.probe.seconds * 1000:.1f} ms)"
        )
        if result.probe.received:
            click.echo(f"  answer: {len(result.probe.received)} bytes")
        if result.router is not None:
            where = f"netns {result.router}" if result.router else "this host"
            click.echo(f"  router: {where}")
            for hit in result.hits:
                click.echo(
                    f"  rule hit: {hit.table} {hit.chain} handle {hit.handle}: "
                    f"+{hit.packets} packets {hit.rule}".rstrip()
                )
            for conn in result.conntrack:
                click.echo(f"  conntrack: {conn}" + (" [dnat]" if conn.dnat else ""))
        if result.cause:
            click.echo(f"  cause: {result.cause}")
        diagnosis = result.diagnosis or {}
        for finding in diagnosis.get("findings", [])[:1]:
            click.echo(f"  diagnose: {finding.get('code')}: {finding.get('summary')}")
        if "error" in diagnosis:
            click.echo(f"  diagnose: {diagnosis['error']}")
        for note in result.notes:
            click.echo(f"  note: {note}")
    if not result.reachable:
        sys.exit(1)


def _state_root(environ: Mapping[str, str]) -> Path | None:
    value = environ.get("PORTKIT_FW_STATE", "")
    return Path(value) if value else None


# `nat map`, `nat unmap`, `nat router` (UPnP-IGD, NAT-PMP, PCP) come from their own module.
if importlib.util.find_spec("portkit.cli.nat_map") is not None:
    _map = importlib.import_module("portkit.cli.nat_map")
    for _name, _cmd in (("map", "map_cmd"), ("unmap", "unmap_cmd"), ("router", "router_cmd")):
        _command = getattr(_map, _cmd, None)
        if isinstance(_command, click.Command):
            nat.add_command(_command, _name)
