"""`portkit audit`: what is exposed and whether it should be, against an exposure policy."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any

import click

from portkit.cli._text import visible
from portkit.cli.output import ProgressBar, emit_json, emit_table
from portkit.errors import UsageError, quote

SEVERITIES = ("info", "low", "medium", "high", "critical")
DEFAULT_POLICY = "exposure.toml"


def _risk_lookup() -> Any:
    from portkit.firewall import Severity, risky_ports
    from portkit.model import Transport
    from portkit.registry import default_registry

    table = {
        (port, Transport(proto)): (severity, note)
        for port, proto, note, severity in risky_ports(default_registry())
    }

    def lookup(port: int, transport: Transport) -> tuple[Severity, str] | None:
        return table.get((port, transport))

    return lookup


def _reach_cell(item: Any, zone: Any) -> str:
    reach = item.reach_of(zone)
    return {"open": "yes", "blocked": "no", "uncertain": "maybe"}[reach.value]


@click.command()
@click.option("--policy", "policy_path", metavar="FILE", help="The exposure policy (TOML; see README).")
@click.option(
    "--from",
    "vantages",
    multiple=True,
    metavar="NETNS",
    help="Also scan every listener from this network namespace (repeatable).",
)
@click.option(
    "--netns",
    "namespaces",
    multiple=True,
    metavar="NAME",
    help="Audit only the listeners of this network namespace (repeatable; default: all).",
)
@click.option(
    "--init",
    "init",
    is_flag=True,
    help=f"Write a policy from what listens now (to --policy, default {DEFAULT_POLICY}).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema: docs/json.md).")
@click.option("--sarif", "as_sarif", is_flag=True, help="Print SARIF 2.1.0 for CI and code-scanning pages.")
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES),
    metavar="SEVERITY",
    help="Exit 1 when a finding is at least this severe (info, low, medium, high, critical).",
)
def audit(
    policy_path: str | None,
    vantages: tuple[str, ...],
    namespaces: tuple[str, ...],
    init: bool,
    as_json: bool,
    as_sarif: bool,
    fail_on: str | None,
) -> None:
    """Every listener of this host and its namespaces: who may reach it, and whether the policy says so.

    \b
    Findings: UNDECLARED_EXPOSURE, DECLARED_DOWN, STALE_RULE, WRONG_OWNER,
    BROADER_THAN_DECLARED, RISKY_SERVICE, SHADOWED_BY_FIREWALL.
    Exit 0, or 1 with --fail-on when a finding is at least that severe; 2 for bad input.
    """
    from portkit import __version__
    from portkit._textfile import read_text_file
    from portkit.audit import PolicyEntry, parse_exposure_policy, render_policy, render_sarif, run_audit
    from portkit.firewall import Severity

    if as_json and as_sarif:
        raise UsageError("--json and --sarif exclude each other: give one of them")
    if init and vantages:
        raise UsageError("--init writes a policy from the firewall model: give --from without --init")
    both = sorted(set(vantages) & set(namespaces))
    if both:
        raise UsageError(
            f"--from {quote(both[0])} is also given to --netns: the vantage's own listeners are not audited;"
            " scan from another namespace"
        )
    if init and (as_json or as_sarif or fail_on):
        given = "--json" if as_json else "--sarif" if as_sarif else "--fail-on"
        raise UsageError(f"--init writes a policy, not a report: give {given} without --init")
    policy = None
    if policy_path is not None and not init:
        policy = parse_exposure_policy(read_text_file(policy_path, what="policy file"), source=policy_path)
    target = Path(policy_path or DEFAULT_POLICY)
    if init and policy_path != "-" and target.exists():
        raise UsageError(f"{target} exists: remove it, or give another --policy path to write")
    bar = ProgressBar("auditing", "listeners")
    try:
        report = run_audit(
            policy, vantages=vantages, namespaces=namespaces, risk=_risk_lookup(), progress=bar
        )
    finally:
        bar.close()
    if init:
        from portkit.audit import declared_for_init, suggested_policy_reach

        entries = []
        for item in report.listeners:
            owner, note = declared_for_init(item)
            entries.append(
                PolicyEntry(
                    item.listener.port,
                    item.listener.transport,
                    suggested_policy_reach(item),
                    owner,
                    item.netns or "",
                    note,
                )
            )
        text = render_policy(entries)
        if policy_path == "-":
            click.echo(text, nl=False)
        else:
            try:
                with target.open("x", encoding="utf-8") as out:
                    out.write(text)
            except OSError as exc:
                raise UsageError(f"cannot write policy {str(target)!r}: {exc.strerror}") from None
            click.echo(
                f"wrote {target}: {len({(e.port, e.protocol, e.netns) for e in entries})} services declared;"
                " review it",
                err=True,
            )
        return
    if as_sarif:
        # Rebuilt from the parsed options, not sys.argv: main(argv) may run in another program.
        words = ["portkit", "audit", "--sarif"]
        words += [w for v in vantages for w in ("--from", v)]
        words += [w for n in namespaces for w in ("--netns", n)]
        words += ["--policy", policy_path] if policy_path is not None else []
        words += ["--fail-on", fail_on] if fail_on is not None else []
        command = shlex.join(words)
        emit_json(render_sarif(report, version=__version__, command=command))
    elif as_json:
        emit_json(report.to_json())
    else:
        _show(report)
    if fail_on is not None:
        threshold = Severity(fail_on)
        if any(f.severity >= threshold for f in report.findings):
            sys.exit(1)


def _show(report: Any) -> None:
    from portkit.audit import Zone

    rows = []
    for item in report.listeners:
        listener = item.listener
        owner = ", ".join(item.owner_names[:2]) or "-"
        rows.append(
            [
                item.netns or "-",
                f"{listener.port}/{listener.transport}",
                ", ".join(listener.addresses),
                owner,
                item.exposure.value,
                _reach_cell(item, Zone.LOOPBACK),
                _reach_cell(item, Zone.LAN),
                _reach_cell(item, Zone.ANY),
            ]
        )
    emit_table(
        ["NETNS", "PORT", "ADDRESS", "OWNER", "EXPOSURE", "LOOPBACK", "LAN", "ANY"],
        rows,
        title="Listeners and who may reach them (firewall model"
        + (", scans" if report.vantages else "")
        + ")",
    )
    click.echo()
    findings = [[f.severity.value.upper(), f.code.value, f.where, f.message] for f in report.findings]
    emit_table(["SEVERITY", "CODE", "WHERE", "FINDING"], findings, title="Findings", empty="(none)")
    fixes = [f for f in report.findings if f.fix]
    if fixes:
        click.echo()
        for finding in fixes:
            click.echo(visible(f"fix {finding.code.value} {finding.where}: {finding.fix}"))
    if report.policy is None:
        click.echo(
            "\nno policy given: only RISKY_SERVICE, STALE_RULE and SHADOWED_BY_FIREWALL apply;"
            " `portkit audit --init` writes one from what listens now",
            err=True,
        )
    for limit in report.limits:
        click.echo(f"note: {limit}", err=True)
