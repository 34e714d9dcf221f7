"""`portkit fw`: show, check, lint, export and apply firewall rules (a thin client of portkit.firewall)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import click

from portkit.cli._params import WholeNumber, parse_duration
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.cli._text import visible
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import UsageError

_SOURCE_HELP = "Rules file (nft script or JSON, iptables-save, ufw dir/user.rules, portkit policy)."


def _load(netns: str | None, rules: str | None, fmt: str | None = None) -> Any:
    from portkit.firewall import load_file, read_live
    from portkit.registry import DEFAULT_NAMES

    if netns and rules:
        raise UsageError("give either --netns NAME or a rules FILE, not both")
    if rules:
        return load_file(rules, fmt=fmt, names=DEFAULT_NAMES)
    return read_live(netns)


def _record(ledger: Any, ruleset: Any, decisions: Any = ()) -> None:
    """The ruleset's fingerprint (and `fw check`'s decisions) into the ledger, when recording."""
    if ledger is not None:
        with ledger:
            ledger.record_ruleset(ruleset, decisions, host=this_host())


def _notes(ruleset: Any) -> None:
    from portkit.firewall import render_embedded_json

    for note in ruleset.notes:
        # nft's JSON for an unmodelled statement, written as nft syntax for the reader.
        click.echo(visible(f"note: {render_embedded_json(note)}"), err=True)


_FORMATS = click.Choice(["nft-json", "nft", "iptables", "ufw", "policy"])


@click.group(name="fw")
def fw() -> None:
    """What the firewall does to a packet, and why.

    Rules come from this host (default, needs root), a network namespace (--netns) or a
    file: nft script or `nft -j` JSON, iptables-save, ufw's rules, or a portkit policy.
    """


@fw.command()
@click.argument("rules", required=False, metavar="[FILE]")
@click.option("--netns", help="Read the live rules of this network namespace.")
@click.option("--format", "fmt", type=_FORMATS, help="Format of FILE (detected by default).")
@record_options
@json_option
def show(
    rules: str | None,
    netns: str | None,
    fmt: str | None,
    as_json: bool,
    record: bool | None,
    db: str | None,
) -> None:
    """Show tables, chains and rules, in the order the kernel runs them."""
    ledger = recording_ledger(record, db)
    ruleset = _load(netns, rules, fmt)
    _record(ledger, ruleset)
    if as_json:
        emit_json(ruleset.to_json())
        return
    _line(f"# {ruleset.source}: {len(ruleset.tables)} tables, {ruleset.rule_count} rules")
    if not ruleset.tables:
        _line("(no rules: every packet is accepted)")
    for t in ruleset.tables:
        _line(f"table {t}")
        for s in t.sets:
            elems = s.to_json()["elements"]
            _line(f"  set {s.name} ({s.type}): {', '.join(elems[:12])}{' ...' if len(elems) > 12 else ''}")
        for c in t.chains:
            _line(f"  {c}")
            for i, r in enumerate(c.rules, start=1):
                where = f" ({r.where})" if r.where else ""
                _line(f"    {i:>3}{where}: {r}")
    _notes(ruleset)


def _flow_from_flags(
    flow: str | None,
    proto: str | None,
    src: str | None,
    sport: int | None,
    dst: str | None,
    dport: int | None,
    iif: str | None,
    oif: str | None,
    state: str | None,
    icmp_type: str | None,
) -> Any:
    from portkit.firewall import Packet, parse_icmp_type, parse_interface, parse_l4proto, parse_state
    from portkit.model import parse_address

    iif = parse_interface(iif) if iif is not None else None
    oif = parse_interface(oif) if oif is not None else None
    if flow:
        packet = Packet.parse(flow)
        from dataclasses import replace

        changes: dict[str, Any] = {}
        if iif:
            changes["iif"] = iif
        if oif:
            changes["oif"] = oif
        if state:
            changes["state"] = parse_state(state)
        return replace(packet, **changes) if changes else packet
    if not dst:
        raise UsageError("no flow given: pass 'tcp SRC:PORT -> DST:PORT' or at least --dst (and --dport)")
    d = parse_address(dst)
    s = parse_address(src) if src else parse_address("192.0.2.1" if d.version == 4 else "2001:db8::1")
    l4 = parse_l4proto(proto or "tcp")
    packet = Packet(
        l4,
        s,
        d,
        sport if sport is not None else 50000,
        dport,
        iif=iif or "",
        oif=oif or "",
        state=parse_state(state or "new"),
    )
    if icmp_type and packet.is_icmp:
        from dataclasses import replace

        packet = replace(packet, icmp_type=parse_icmp_type(icmp_type, d.version), icmp_code=0)
    return packet


@fw.command()
@click.argument("flow", required=False)
@click.option("--rules", "rules", metavar="FILE", help=_SOURCE_HELP)
@click.option("--netns", help="Use the live rules of this network namespace.")
@click.option("--format", "fmt", type=_FORMATS, help="Format of --rules FILE (detected by default).")
@click.option("--proto", help="tcp, udp, sctp, icmp, icmpv6 or a number (default tcp).")
@click.option("--src", help="Source address (default 192.0.2.1 / 2001:db8::1).")
@click.option("--sport", type=WholeNumber(0, 65535), help="Source port (default 50000).")
@click.option("--dst", help="Destination address.")
@click.option("--dport", type=WholeNumber(0, 65535), help="Destination port.")
@click.option("--in", "iif", metavar="IFACE", help="Input interface (e.g. eth0, lo).")
@click.option("--out", "oif", metavar="IFACE", help="Output interface (forwarded or outgoing traffic).")
@click.option("--state", help="Conntrack state: new (default), established, related, invalid.")
@click.option("--icmp-type", help="ICMP type for --proto icmp/icmpv6 (default echo-request).")
@click.option(
    "--direction",
    type=click.Choice(["input", "forward", "output"]),
    help="Force the packet's path (default: from interfaces and NAT).",
)
@click.option(
    "--forwarding",
    "forwarding_flag",
    type=click.Choice(["on", "off"]),
    help="Whether the host forwards packets (ip_forward); read from the kernel for live rules, "
    "else unknown: a DNAT to another host is then uncertain.",
)
@click.option(
    "--limits",
    "limits_flag",
    type=click.Choice(["unreached", "reached"]),
    help="State rate limits, quotas and connection counts: unreached (ordinary traffic) or "
    "reached (a flood). Unstated, a rule that hinges on one is uncertain.",
)
@click.option(
    "--flows",
    "flows_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Check every flow in FILE (one per line, same syntax as FLOW; - for stdin).",
)
@record_options
@json_option
def check(
    flow: str | None,
    rules: str | None,
    netns: str | None,
    fmt: str | None,
    proto: str | None,
    src: str | None,
    sport: int | None,
    dst: str | None,
    dport: int | None,
    iif: str | None,
    oif: str | None,
    state: str | None,
    icmp_type: str | None,
    direction: str | None,
    forwarding_flag: str | None,
    limits_flag: str | None,
    flows_file: str | None,
    as_json: bool,
    record: bool | None,
    db: str | None,
) -> None:
    """Say what the rules do to a flow: verdict, the trace that explains it, what a scanner sees.

    FLOW is one string like 'tcp 203.0.113.5:51000 -> 10.0.0.2:443 in eth0 state new', or
    use the flags. Exit status 0 when the flow is certainly accepted, 1 when it is certainly
    dropped or rejected, 3 when the answer is uncertain (a match portkit cannot decide
    leads to different outcomes; all are shown). With --flows: 1 if any flow is certainly
    not accepted, else 3 if any is uncertain, else 0.
    """
    from portkit.firewall import (
        Direction,
        evaluate,
        forwarding_state,
        local_addresses,
        masquerade_lookup,
        route_lookup,
    )

    ledger = recording_ledger(record, db)
    ruleset = _load(netns, rules, fmt)
    local = None
    route = None
    forwarding = None
    masquerade = None
    if not rules:
        import ipaddress

        masquerade = masquerade_lookup(netns)
        local = frozenset(ipaddress.ip_address(a) for a in local_addresses(netns)) or None
        route = route_lookup(netns)
        forwarding = forwarding_state(netns)
    if forwarding_flag:
        forwarding = {4: forwarding_flag == "on", 6: forwarding_flag == "on"}
    per_iif: dict[str, Any] = {}

    def forwarding_for(p: Any) -> Any:
        """IPv4 forwarding is the input interface's setting (live rules)."""
        if forwarding_flag or rules or not p.iif:
            return forwarding
        if p.iif not in per_iif:
            per_iif[p.iif] = forwarding_state(netns, p.iif) or forwarding
        return per_iif[p.iif]

    forced = Direction(direction) if direction else None
    limits = None if limits_flag is None else limits_flag == "unreached"
    if flows_file:
        packets = _read_flows(flows_file)
        decisions = [
            evaluate(
                ruleset,
                p,
                direction=forced,
                local_addresses=local,
                route=route,
                forwarding=forwarding_for(p),
                masquerade_source=masquerade,
                limits=limits,
            )
            for p in packets
        ]
        _record(ledger, ruleset, decisions)
        if as_json:
            emit_json(
                {
                    "source": ruleset.source,
                    "count": len(decisions),
                    "accepted": sum(d.verdict.value == "accept" and d.certain for d in decisions),
                    "uncertain": sum(not d.certain for d in decisions),
                    "results": [d.to_json() for d in decisions],
                }
            )
        else:
            emit_table(
                ["flow", "verdict", "direction", "scanner", "decided by"],
                [
                    [
                        str(d.packet),
                        d.outcome if d.certain else "uncertain: " + " or ".join(sorted(d.possible)),
                        d.direction,
                        "?" if not d.certain else str(d.scanner.state) if d.scanner else "",
                        d.reason if d.certain else f"first branch: {d.reason}",
                    ]
                    for d in decisions
                ],
                title=f"# {ruleset.source}",
            )
            _notes(ruleset)
        sys.exit(max((_status(d) for d in decisions), key=_STATUS_RANK.index, default=0))
    packet = _flow_from_flags(flow, proto, src, sport, dst, dport, iif, oif, state, icmp_type)
    decision = evaluate(
        ruleset,
        packet,
        direction=forced,
        local_addresses=local,
        route=route,
        forwarding=forwarding_for(packet),
        masquerade_source=masquerade,
        limits=limits,
    )
    _record(ledger, ruleset, [decision])
    if as_json:
        doc = decision.to_json()
        doc["source"] = ruleset.source
        doc["notes"] = list(ruleset.notes)
        emit_json(doc)
    else:
        _print_decision(decision, ruleset.source)
        _notes(ruleset)
    sys.exit(_status(decision))


# Exit statuses of `fw check`, from least to most telling for a set of flows.
EXIT_ACCEPTED, EXIT_NOT_ACCEPTED, EXIT_UNCERTAIN = 0, 1, 3
_STATUS_RANK = [EXIT_ACCEPTED, EXIT_UNCERTAIN, EXIT_NOT_ACCEPTED]


def _status(d: Any) -> int:
    if not d.certain:
        return EXIT_UNCERTAIN
    return EXIT_ACCEPTED if d.verdict.value == "accept" else EXIT_NOT_ACCEPTED


def _read_flows(path: str) -> list[Any]:
    from portkit._textfile import read_text_file
    from portkit.firewall import Packet

    text = read_text_file(path, what="flows file")
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            out.append(Packet.parse(line))
        except UsageError as exc:
            raise UsageError(f"{path}:{lineno}: {exc}") from None
    return out


def _line(text: str = "") -> None:
    """A line of rules or of a verdict: rule text and comments are whoever wrote the rules', so
    their control characters are written out, never sent to the terminal."""
    click.echo(visible(text))


def _print_decision(d: Any, source: str) -> None:
    verdict = d.verdict.value.upper() + (f" with {d.reject_with}" if d.reject_with else "")
    _line(f"flow:      {d.packet}")
    _line(f"rules:     {source}")
    if d.final_packet is not None and (d.final_packet.dst, d.final_packet.dport) != (
        d.packet.dst,
        d.packet.dport,
    ):
        _line(
            f"nat:       destination rewritten -> {d.final_packet.dst}"
            + (f":{d.final_packet.dport}" if d.final_packet.dport is not None else "")
        )
    if d.snat is not None:
        _line(f"nat:       source rewritten -> {d.snat}")
    _line(f"path:      {d.direction} ({' -> '.join(h.value for h in _hooks(d))})")
    if not d.certain:
        _line(
            f"verdict:   UNCERTAIN: {' or '.join(sorted(d.possible))} "
            f"(some conditions on the way cannot be decided; every outcome follows"
            f"{', but not every branch was followed' if d.truncated else ''})"
        )
        for n, o in enumerate(d.outcomes, start=1):
            said = o.verdict.value.upper() + (f" with {o.reject_with}" if o.reject_with else "")
            _line(f"outcome {n}: {said} (path {o.direction})")
            for rule, held in o.assumed:
                _line(f"  given:   {rule}  [{'holds' if held else 'does not hold'}]")
            _line(f"  why:     {o.reason}")
            if o.scanner:
                _line(f"  scanner: {o.scanner.scan}")
            _line("  trace:")
            for step in o.trace:
                _line(f"    {step}")
        for stated in d.stated:
            _line(f"stated:    {stated}")
        return
    _line(f"verdict:   {verdict}")
    _line(f"why:       {d.reason}")
    if d.scanner:
        _line(f"connect(): {d.scanner.connect}")
        _line(f"scanner:   {d.scanner.scan}")
    for u in d.uncertain:
        _line(f"undecided: {u}; the verdict is the same either way")
    for stated in d.stated:
        _line(f"stated:    {stated}")
    _line("trace:" if d.trace else "trace:     (no base chain on this path)")
    for step in d.trace:
        _line(f"  {step}")


def _hooks(d: Any) -> list[Any]:
    from portkit.firewall import PATHS

    return list(PATHS[d.direction])


@fw.command()
@click.argument("rules", required=False, metavar="[FILE]")
@click.option("--netns", help="Lint the live rules of this network namespace.")
@click.option("--format", "fmt", type=_FORMATS, help="Format of FILE (detected by default).")
@click.option(
    "--fail-on",
    type=click.Choice(["info", "low", "medium", "high", "critical", "never"]),
    default="high",
    show_default=True,
    help="Exit 1 when a finding is at least this severe.",
)
@click.option(
    "--ssh/--no-ssh", default=True, help="Check that the rules keep this SSH session (from $SSH_CONNECTION)."
)
@record_options
@json_option
def lint(
    rules: str | None,
    netns: str | None,
    fmt: str | None,
    fail_on: str,
    ssh: bool,
    as_json: bool,
    record: bool | None,
    db: str | None,
) -> None:
    """Find shadowed, redundant and dead rules, loops, risky exposures and lock-outs."""
    from portkit.firewall import Severity, default_route_interfaces, lint_ruleset
    from portkit.registry import default_registry

    ledger = recording_ledger(record, db)
    ruleset = _load(netns, rules, fmt)
    _record(ledger, ruleset)
    # Live rules (here or in --netns): the default route's interface faces the internet.
    wan = default_route_interfaces(netns=netns) if rules is None else frozenset()
    findings = lint_ruleset(
        ruleset,
        ssh_connection=os.environ.get("SSH_CONNECTION") if ssh else None,
        wan_interfaces=wan,
        registry=default_registry(),
    )
    threshold = None if fail_on == "never" else Severity(fail_on)
    failing = threshold is not None and any(f.severity >= threshold for f in findings)
    if as_json:
        emit_json(
            {
                "source": ruleset.source,
                "rules": ruleset.rule_count,
                "fail_on": fail_on,
                "failed": failing,
                "findings": [f.to_json() for f in findings],
            }
        )
    else:
        emit_table(
            ["severity", "check", "where", "finding"],
            [[f.severity, f.check, f.where, f.message] for f in findings],
            title=f"# {ruleset.source}: {ruleset.rule_count} rules, {len(findings)} findings",
            empty="no findings",
        )
        _notes(ruleset)
    sys.exit(1 if failing else 0)


@fw.command()
@click.argument("rules", required=False, metavar="[FILE]")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Choice(["nft", "iptables", "ip6tables", "ufw", "firewalld"]),
    help="Output dialect.",
)
@click.option("--netns", help="Export the live rules of this network namespace.")
@click.option("--format", "fmt", type=_FORMATS, help="Format of FILE (detected by default).")
@click.option("--strict", is_flag=True, help="Exit 1 if anything could not be rendered faithfully.")
@click.option(
    "--force",
    is_flag=True,
    help="Leave out rules that cannot be rendered even where that could accept more (warned).",
)
@click.option(
    "--check",
    is_flag=True,
    help="Load the export with nft / iptables-restore in a scratch network namespace first (root).",
)
@record_options
@json_option
def export(
    rules: str | None,
    target: str,
    netns: str | None,
    fmt: str | None,
    strict: bool,
    force: bool,
    check: bool,
    as_json: bool,
    record: bool | None,
    db: str | None,
) -> None:
    """Write the rules for another tool, never accepting more than they do.

    A rule the target cannot express is left out whole when that can only narrow (an accept in
    a filter chain), with a note on stderr; otherwise the export fails (exit 1) naming the rules,
    and --force leaves them out too, with a warning."""
    from portkit.firewall import ExportRefused, check_export, export_ruleset

    ledger = recording_ledger(record, db)
    ruleset = _load(netns, rules, fmt)
    _record(ledger, ruleset)
    try:
        rendering = export_ruleset(ruleset, target, force=force)
        if check:
            check_export(rendering.text, target)
    except ExportRefused as exc:
        if not as_json:
            raise
        emit_json(_export_json(ruleset.source, target, exc.rendering, refused=True))
        sys.exit(exc.exit_status)
    if as_json:
        emit_json(_export_json(ruleset.source, target, rendering, refused=False))
    else:
        click.echo(rendering.text, nl=False)
        for note in rendering.notes:
            click.echo(f"not rendered faithfully: {note}", err=True)
        for o in rendering.omitted:
            label = "note" if o.narrows else "warning: --force"
            click.echo(f"{label}: {o}", err=True)
    sys.exit(1 if strict and rendering.problems else 0)


def _export_json(source: str, target: str, rendering: Any, *, refused: bool) -> dict[str, Any]:
    return {
        "source": source,
        "to": target,
        "ok": not refused,
        "text": "" if refused else rendering.text,
        "unrendered": rendering.problems,
        "omitted": [o.to_json() for o in rendering.omitted],
    }


def _emit_outcome(result: Any, as_json: bool) -> None:
    """An apply/confirm/rollback outcome as JSON or its one-line summary; exit 1 unless ok."""
    if as_json:
        emit_json(result.to_json())
    else:
        click.echo(str(result))
    sys.exit(0 if result.ok else 1)


@fw.command()
@click.argument("rules", metavar="FILE")
@click.option("--netns", help="Apply inside this network namespace instead of this host.")
@click.option("--format", "fmt", type=_FORMATS, help="Format of FILE (detected by default).")
@click.option(
    "--confirm-within",
    "confirm_within",
    default="30s",
    show_default=True,
    help="Roll back unless `portkit fw confirm` runs within this time.",
)
@click.option(
    "--wait",
    is_flag=True,
    help="Ask for confirmation on this terminal instead of returning (like iptables-apply).",
)
@json_option
def apply(
    rules: str, netns: str | None, fmt: str | None, confirm_within: str, wait: bool, as_json: bool
) -> None:
    """Validate (nft -c), apply atomically, and roll back unless confirmed in time.

    Without --wait the command returns at once and a background guard restores the
    previous ruleset when the time is up, unless `portkit fw confirm` runs first.
    """
    from portkit.firewall import apply_ruleset, load_file
    from portkit.registry import DEFAULT_NAMES

    seconds = parse_duration(confirm_within, "--confirm-within", minimum=1, maximum=3600)
    ruleset = load_file(rules, fmt=fmt, names=DEFAULT_NAMES)
    result = apply_ruleset(
        ruleset, netns=netns, confirm_within=seconds, interactive=wait, state_root=_state_root(os.environ)
    )
    _emit_outcome(result, as_json)


@fw.command()
@click.option("--netns", help="Confirm a pending apply in this network namespace.")
@json_option
def confirm(netns: str | None, as_json: bool) -> None:
    """Keep the rules a pending `portkit fw apply` loaded (stops the roll-back)."""
    from portkit.firewall import confirm_apply

    result = confirm_apply(netns=netns, state_root=_state_root(os.environ))
    _emit_outcome(result, as_json)


@fw.command()
@click.option("--netns", help="Roll back a pending apply in this network namespace.")
@json_option
def rollback(netns: str | None, as_json: bool) -> None:
    """Restore the rules saved by a pending `portkit fw apply` now."""
    from portkit.firewall import rollback_apply

    result = rollback_apply(netns=netns, state_root=_state_root(os.environ))
    _emit_outcome(result, as_json)


def _state_root(environ: Mapping[str, str]) -> Path | None:
    """Where `fw apply`/`confirm`/`rollback` keep their state: $PORTKIT_FW_STATE when set,
    else the library's default (portkit.firewall's STATE_ROOT, /run/portkit/fw)."""
    value = environ.get("PORTKIT_FW_STATE", "")
    return Path(value) if value else None
