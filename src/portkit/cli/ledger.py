"""`portkit history`, `portkit ledger` (info, prune, export) and `portkit diff`: thin clients of
portkit.ledger and portkit.diff.

Exit status: history 0, or 1 when the ledger knows nothing of the port; diff 0 when nothing
changed, 1 when something did (as diff(1) and ndiff); 2 for bad input, including a ledger file
that is not a portkit ledger; 1 for a ledger written by a newer portkit or missing.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import UTC
from typing import TYPE_CHECKING, Any

import click

from portkit.cli._record import db_option, open_ledger, this_host
from portkit.cli._text import visible
from portkit.cli.output import emit_json, emit_table, json_option
from portkit.errors import PortkitError, UsageError, quote

if TYPE_CHECKING:
    from portkit.diff import Ref, Side
    from portkit.ledger import Ledger, PortHistory


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


# --- history ---------------------------------------------------------------------------------


@click.command()
@click.argument("port_proto", metavar="PORT[/PROTO]")
@click.option("--host", metavar="H", help="Only what was seen on host H (a scanned address or a host name).")
@db_option
@json_option
def history(port_proto: str, host: str | None, db: str | None, as_json: bool) -> None:
    """A port's story from the ledger: first and last seen, owners and bind addresses over time,
    the firewall's decisions, what scans saw.

    Exit status 0, or 1 when nothing about the port was recorded.
    """
    from portkit.ledger import port_history
    from portkit.sockets import parse_port_proto

    port, transport = parse_port_proto(port_proto)
    protocol = transport.value if transport else None
    with open_ledger(db, create=False) as ledger:
        story = port_history(ledger, port, protocol, host)
    if as_json:
        emit_json(story.to_json())
    else:
        _print_history(story)
    if story.empty:
        raise click.exceptions.Exit(1)


def _print_history(story: PortHistory) -> None:
    label = f"{story.port}/{story.protocol}" if story.protocol else f"{story.port} (tcp and udp)"
    where = f" on {story.host}" if story.host else ""
    if story.empty:
        click.echo(f"Nothing recorded about port {label}{where}.")
        return
    click.echo(f"Port {label}{where}")
    if story.first_seen is None:
        click.echo("never seen listening or open")
    else:
        click.echo(f"first seen {_when(story.first_seen)}, last seen {_when(story.last_seen)}")
    if story.gone_since is not None:
        click.echo(f"not listening since {_when(story.gone_since)} (the first complete snapshot without it)")
    if story.bindings:
        click.echo()
        emit_table(
            ["FROM", "TO", "SNAPSHOTS", "PROTO", "NETNS", "ADDRESS", "EXPOSURE", "OWNER"],
            [
                [
                    _when(b.first),
                    _when(b.last),
                    b.snapshots,
                    b.protocol,
                    b.netns or "-",
                    b.address,
                    b.exposure or "-",
                    ", ".join(str(o) for o in b.owners) or "-",
                ]
                for b in story.bindings
            ],
            title="Owners and bind addresses",
        )
    if story.rules:
        click.echo()
        emit_table(
            ["TIME", "RULES", "FINGERPRINT", "FLOW", "VERDICT", "DECIDED BY"],
            [
                [
                    _when(s.time),
                    s.source,
                    str(s.fact.detail.get("fingerprint", ""))[:12],
                    s.fact.detail.get("flow", ""),
                    s.fact.state,
                    s.fact.detail.get("rule", ""),
                ]
                for s in story.rules
            ],
            title="Firewall decisions",
        )
    if story.scans:
        click.echo()
        emit_table(
            ["TIME", "HOST", "PROTO", "STATE", "SERVICE", "SCAN"],
            [
                [_when(s.time), s.fact.host, s.fact.protocol, s.fact.state, s.fact.service or "-", s.source]
                for s in story.scans
            ],
            title="What scans saw",
        )
    if story.diagnoses:
        click.echo()
        emit_table(
            ["TIME", "HOST", "PROTO", "CODE"],
            [[_when(s.time), s.fact.host, s.fact.protocol, s.fact.state] for s in story.diagnoses],
            title="Diagnoses",
        )
    if story.events:
        click.echo()
        emit_table(
            ["TIME", "EVENT", "HOST", "FIELDS"],
            [
                [
                    _when(e.time),
                    e.kind,
                    e.host or "-",
                    " ".join(f"{k}={v}" for k, v in e.fields.items())[:100],
                ]
                for e in story.events
            ],
            title="Events",
        )


def _fields_text(fields: Any) -> str:
    return " ".join(f"{k}={v}" for k, v in fields.items())[:100]


# --- ledger ----------------------------------------------------------------------------------


@click.group(name="ledger")
def ledger() -> None:
    """The ledger file: what it holds, retention, export."""


@ledger.command()
@db_option
@json_option
def info(db: str | None, as_json: bool) -> None:
    """Where the ledger is, its schema version, and how much it holds."""
    with open_ledger(db, create=False) as store:
        doc = {"path": str(store.path), "schema_version": store.schema_version, **store.counts()}
    if as_json:
        emit_json(doc)
        return
    for key, value in doc.items():
        click.echo(f"{key + ':':<16}{value}")


_AGE = re.compile(r"([0-9]{1,6})([smhdw])\Z")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """`90d`, `12h`, `2w`, `30m`, `45s` -> seconds."""
    match = _AGE.match(text.strip().lower())
    if not match:
        raise UsageError(f"invalid --older-than {quote(text)}: expected an age such as 90d, 12h, 2w or 30m")
    return int(match[1]) * _AGE_UNITS[match[2]]


@ledger.command()
@click.option("--older-than", "older_than", required=True, metavar="AGE", help="90d, 12h, 2w, 30m.")
@db_option
@json_option
def prune(older_than: str, db: str | None, as_json: bool) -> None:
    """Delete observations and events older than AGE."""
    before = time.time() - parse_age(older_than)
    with open_ledger(db, create=False) as store:
        result = store.prune(before)
    if as_json:
        emit_json({"before": before, **result.to_json()})
        return
    click.echo(
        f"Pruned {result.observations} observations ({result.facts} port facts) and {result.events} "
        f"events older than {_when(before)}."
    )
    if result.observations or result.events:
        click.echo(
            f"The file went from {result.size_before:,} to {result.size_after:,} bytes."
            if result.compacted
            else "The file was not compacted: another process holds it open (run prune again later)."
        )


EXPORT_COLUMNS = [
    "record",
    "id",
    "time",
    "kind",
    "host",
    "source",
    "port",
    "protocol",
    "state",
    "address",
    "netns",
    "exposure",
    "owners",
    "service",
    "detail",
]


@ledger.command()
@click.option("--json", "fmt", flag_value="json", default=True, help="One JSON document (default).")
@click.option("--csv", "fmt", flag_value="csv", help="CSV: one row per port fact and per event.")
@db_option
def export(fmt: str, db: str | None) -> None:
    """Everything the ledger holds, as JSON (docs/json.md) or CSV."""
    with open_ledger(db, create=False) as store:
        if fmt == "csv":
            _export_csv(store)
        else:
            _export_json(store)


def _export_json(store: Ledger) -> None:
    import json

    out = sys.stdout
    out.write(f'{{"schema_version": {store.schema_version}, "observations": [')
    for i, observation in enumerate(store.observations()):
        out.write(("," if i else "") + "\n" + json.dumps(observation.to_json(), default=str))
    out.write('\n], "events": [')
    for i, event in enumerate(store.events()):
        out.write(("," if i else "") + "\n" + json.dumps(event.to_json(), default=str))
    out.write("\n]}\n")
    out.flush()


def _export_csv(store: Ledger) -> None:
    import json

    from portkit._spreadsheet import write_csv_row

    out = sys.stdout
    write_csv_row(out, EXPORT_COLUMNS)
    for observation in store.observations():
        for fact in observation.facts:
            write_csv_row(
                out,
                [
                    "fact",
                    observation.id,
                    _iso(observation.time),
                    observation.kind,
                    fact.host,
                    observation.source,
                    fact.port,
                    fact.protocol,
                    fact.state,
                    fact.address,
                    fact.netns,
                    fact.exposure,
                    "; ".join(str(o) for o in fact.owners),
                    fact.service,
                    json.dumps(dict(fact.detail), sort_keys=True) if fact.detail else "",
                ]
            )
    for event in store.events():
        write_csv_row(
            out,
            [
                "event",
                event.id,
                _iso(event.time),
                event.kind,
                event.host,
                "",
                event.port,
                event.protocol,
                "",
                "",
                "",
                "",
                "",
                "",
                json.dumps(dict(event.fields), sort_keys=True),
            ]
        )
    sys.stdout.flush()


def _iso(stamp: float) -> str:
    from datetime import datetime

    return datetime.fromtimestamp(stamp, UTC).isoformat(timespec="seconds")


# --- diff ------------------------------------------------------------------------------------


@click.command()
@click.argument("a", metavar="A")
@click.argument("b", metavar="B")
@click.option("--all-netns", is_flag=True, help="@now reads every network namespace (needs root).")
@db_option
@json_option
def diff(a: str, b: str, all_netns: bool, db: str | None, as_json: bool) -> None:
    """What changed from A to B: ports opened, closed, changed state, service, owner or address.

    A and B are two scans (nmap or portkit XML, portkit scan JSON) or two inventories
    (`portkit ls --json` or `overview --json` files), or ledger references: @ID, @now (this host
    now), @yesterday, @-2h, @-7d, @2026-12-01T10:00 (the newest complete record at that time).
    Exit status 0 when nothing changed, 1 when something did.
    """
    from portkit.diff import compare, parse_ref, read_side, render_text

    now = time.time()
    if a == b == "-":
        raise UsageError(
            "invalid diff inputs '-' and '-': standard input is read once; give a file for one side"
        )
    refs = {text: parse_ref(text, now) for text in (a, b) if text.startswith("@")}  # bad input first
    files = {text: read_side(text) for text in (a, b) if text not in refs}
    kinds = {side.kind for side in files.values()}
    kind = kinds.pop() if len(kinds) == 1 else "inventory"
    store: Ledger | None = None
    try:
        sides = []
        for text in (a, b):
            if text in files:
                sides.append(files[text])
                continue
            if store is None and not refs[text].live:
                store = open_ledger(db, create=False)
            sides.append(_ledger_side(refs[text], kind, now, store, all_netns))
    finally:
        if store is not None:
            store.close()
    difference = compare(sides[0], sides[1])
    if as_json:
        emit_json(difference.to_json())
    else:
        click.echo("\n".join(visible(line) for line in render_text(difference).split("\n")))
    raise click.exceptions.Exit(1 if difference.changed else 0)


def _ledger_side(ref: Ref, kind: str, now: float, store: Ledger | None, all_netns: bool) -> Side:
    from portkit.diff import inventory_side, side_from_observation

    text = ref.text
    if ref.live:
        if kind != "inventory":
            raise UsageError(f"{text} is this host's sockets now: compare it with an inventory, not a scan")
        from portkit.ledger import inventory_facts, inventory_scope
        from portkit.sockets import ALL_STATES, SocketQuery, list_sockets

        inventory = list_sockets(
            SocketQuery(listening=True, states=ALL_STATES, with_processes=True), all_netns=all_netns
        )
        host = this_host()
        facts = inventory_facts(inventory.sockets, host)
        scope = inventory_scope(inventory, all_netns)
        return inventory_side(facts, f"{host} now ({_when(now)})", host, scope)
    assert store is not None
    if ref.id is not None:
        observation = store.observation(ref.id)
        if observation is not None and not observation.complete:
            click.echo(
                f"note: ledger #{ref.id} saw only part of its {observation.kind} (a filtered ls, who PORT, "
                "an interrupted scan): what it did not look at shows as opened or closed",
                err=True,
            )
        if observation is None:
            raise UsageError(
                f"invalid ledger reference {quote(text)}: no observation #{ref.id} in {store.path}"
            )
        return side_from_observation(observation)
    assert ref.time is not None
    found = store.latest(kind, before=ref.time)
    if found is None:
        raise PortkitError(
            f"no complete {kind} recorded at or before {_when(ref.time)} (for {text}) in {store.path}"
        )
    return side_from_observation(found)
