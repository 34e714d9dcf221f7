"""Comparing two observations of ports: two scans, or two socket inventories.

Pure: `compare(a, b)` takes two `Side`s (made by portkit.diff._readers from files, the ledger or
the live host) and lists the ports whose state, service, owner or bind address changed.

Scans are compared as nmap's ndiff compares them, so the verdicts agree (tests/test_diff.py
checks it against ndiff itself): hosts are paired by address; a port counts when either side
lists it, and a port both sides leave in "Not shown" (or list in a state the other side
collapses) is not a change; a change is a different state, or a different service (name,
product, version, extra info). Inventories add owners and bind addresses: an owner is its
process name, executable, user, unit and container, never its pid, so a restarted service is not
a change (only fields both sides recorded are compared: `ls --json` names executables,
`overview --json` does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import UsageError
from portkit.ledger import NetnsScope, Owner

SCAN, INVENTORY = "scan", "inventory"
OWNER_FIELDS = ("name", "exe", "user", "unit", "container")
_OPEN = frozenset({"open", "listening"})


@dataclass(frozen=True)
class PortSide:
    """One port on one side: its state, and what is known of its service, owners and addresses."""

    state: str
    service: str = ""
    owners: tuple[Owner, ...] = ()
    addresses: tuple[str, ...] = ()
    exposure: str = ""
    scripts: tuple[tuple[str, str], ...] = ()  # NSE results (id, output), sorted by id

    def to_json(self, kind: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"state": self.state, "service": self.service or None}
        if kind == SCAN:
            doc["scripts"] = [{"id": i, "output": o} for i, o in self.scripts]
        if kind == INVENTORY:
            doc |= {
                "addresses": list(self.addresses),
                "exposure": self.exposure or None,
                "owners": [o.to_json() for o in self.owners],
            }
        return doc


@dataclass(frozen=True)
class HostSide:
    """A scanned host (key: its address) or an inventory's network namespace (key: its name)."""

    key: str
    name: str = ""  # shown: "localhost (127.0.0.1)", or the host name of an inventory
    status: str = "up"
    ports: Mapping[tuple[int, str], PortSide] = field(default_factory=dict)
    collapsed: frozenset[str] = frozenset()  # states nmap left in "Not shown"

    def collapses(self, side: PortSide | None) -> bool:
        return side is None or side.state in self.collapsed


@dataclass(frozen=True)
class Side:
    kind: str  # SCAN or INVENTORY
    label: str  # one line: what this side is ("nmap -sT ... at 2026-12-07 09:02", "ledger #12 ...")
    hosts: Mapping[str, HostSide]
    owner_fields: frozenset[str] = frozenset(OWNER_FIELDS)
    host: str = ""  # an inventory's host name, when known
    scope: NetnsScope | None = None  # the namespaces an inventory looked at; None: every one

    def covers(self, netns: str) -> bool:
        return self.scope is None or self.scope.covers(netns)


@dataclass(frozen=True)
class PortChange:
    host: str
    netns: str | None
    port: int
    protocol: str
    before: PortSide | None
    after: PortSide | None
    changes: tuple[str, ...]  # "opened", "closed", "state", "service", "owner", "address"
    title: str = ""  # the host as the text shows it: "localhost (127.0.0.1)", "network namespace lab"

    def to_json(self, kind: str) -> dict[str, Any]:
        doc: dict[str, Any] = {"host": self.host, "port": self.port, "protocol": self.protocol}
        if kind == INVENTORY:
            doc["netns"] = self.netns
        return doc | {
            "changes": list(self.changes),
            "before": self.before.to_json(kind) if self.before else None,
            "after": self.after.to_json(kind) if self.after else None,
        }


@dataclass(frozen=True)
class HostChange:
    """A host that appeared, went away or changed status (up/down) between the sides."""

    host: str
    before: str | None
    after: str | None

    def to_json(self) -> dict[str, Any]:
        return {"host": self.host, "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Difference:
    a: Side
    b: Side
    ports: tuple[PortChange, ...]
    hosts: tuple[HostChange, ...]
    # Inventories: namespaces with listeners that only one side looked at (`ls --record` reads
    # one namespace, `ls --all-netns --record` every one): their listeners are not compared.
    not_compared: tuple[str, ...] = ()

    @property
    def changed(self) -> bool:
        return bool(self.ports or self.hosts)

    def to_json(self) -> dict[str, Any]:
        kind = self.a.kind
        return {
            "kind": kind,
            "a": self.a.label,
            "b": self.b.label,
            "changed": self.changed,
            "hosts": [h.to_json() for h in self.hosts],
            "ports": [p.to_json(kind) for p in self.ports],
            "not_compared": [n or None for n in self.not_compared],
        }


def owner_identities(owners: tuple[Owner, ...], fields: frozenset[str]) -> frozenset[tuple[str, ...]]:
    return frozenset(
        tuple(value for name, value in zip(OWNER_FIELDS, o.identity, strict=True) if name in fields)
        for o in owners
    )


def _port_changes(before: PortSide | None, after: PortSide | None, fields: frozenset[str]) -> tuple[str, ...]:
    was = before.state if before else None
    now = after.state if after else None
    changes: list[str] = []
    if was != now:
        if now in _OPEN and was not in _OPEN:
            changes.append("opened")
        elif was in _OPEN and now not in _OPEN:
            changes.append("closed")
        else:
            changes.append("state")
    service_was, service_now = (before.service if before else ""), (after.service if after else "")
    # A port that appears in a listing brings its name along: that is no news beside "opened".
    if service_was != service_now and (was == now or (service_was and service_now)):
        changes.append("service")
    if before is not None and after is not None:
        # As ndiff: a script's output that changed (a TLS certificate, an SSH host key, a
        # banner), or a script that answered on one side only, is a change of the port.
        if before.scripts != after.scripts:
            changes.append("scripts")
        # No owner on one side is an owner that side could not see (a process of another user,
        # read without root): unknown, not changed.
        known = before.owners and after.owners
        if known and owner_identities(before.owners, fields) != owner_identities(after.owners, fields):
            changes.append("owner")
        if before.addresses != after.addresses:
            changes.append("address")
    return tuple(changes)


def _sort_key(host: str) -> tuple[int, Any]:
    import ipaddress

    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return (2, host)
    return (ip.version - 4, int(ip))


def compare(a: Side, b: Side) -> Difference:
    """What changed from `a` (before) to `b` (after)."""
    if a.kind != b.kind:
        article = {SCAN: "a scan", INVENTORY: "an inventory"}
        raise UsageError(
            f"cannot compare {article[a.kind]} with {article[b.kind]}: give two scans or two inventories"
        )
    fields = a.owner_fields & b.owner_fields
    ports: list[PortChange] = []
    hosts: list[HostChange] = []
    empty = HostSide(key="", status="")
    not_compared: list[str] = []
    for key in sorted(set(a.hosts) | set(b.hosts), key=_sort_key):
        ha, hb = a.hosts.get(key), b.hosts.get(key)
        if a.kind == INVENTORY and not (a.covers(key) and b.covers(key)):
            not_compared.append(key)
            continue
        if a.kind == SCAN and (ha is None or hb is None or ha.status != hb.status):
            hosts.append(HostChange(key, ha.status if ha else None, hb.status if hb else None))
        ha, hb = ha or empty, hb or empty
        if a.kind == SCAN:
            host, netns, title = key, None, hb.name or ha.name or key
        else:
            host, netns = b.host or a.host or "localhost", key or None
            title = f"network namespace {key}" if key else host
        for spec in sorted(set(ha.ports) | set(hb.ports)):
            before, after = ha.ports.get(spec), hb.ports.get(spec)
            if ha.collapses(before) and hb.collapses(after):
                continue  # as ndiff: nothing listed, or only in states the scans collapse
            changes = _port_changes(before, after, fields)
            if changes:
                ports.append(PortChange(host, netns, spec[0], spec[1], before, after, changes, title))
    return Difference(a, b, tuple(ports), tuple(hosts), tuple(not_compared))


def _script_text(script_id: str, output: str) -> list[str]:
    """An NSE result as nmap prints it: `|  ` before each line, `|_ ` before the last."""
    parts = output.splitlines() or [""]
    parts[0] = f"{script_id}: {parts[0]}"
    return [f"|  {line}" for line in parts[:-1]] + [f"|_ {parts[-1]}"]


def _script_lines(before: tuple[tuple[str, str], ...], after: tuple[tuple[str, str], ...]) -> list[str]:
    import difflib

    was, now = dict(before), dict(after)
    lines: list[str] = []
    for script_id in sorted(set(was) | set(now)):
        if was.get(script_id) == now.get(script_id):
            continue
        a = _script_text(script_id, was[script_id]) if script_id in was else []
        b = _script_text(script_id, now[script_id]) if script_id in now else []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b).get_opcodes():
            if op == "equal":
                lines += [" " + line for line in a[i1:i2]]
                continue
            lines += ["-" + line for line in a[i1:i2]]
            lines += ["+" + line for line in b[j1:j2]]
    return lines


def render_text(diff: Difference) -> str:
    """The difference in ndiff's layout: `-` lines are before, `+` lines after, ` ` context."""
    kind = diff.a.kind
    lines = [f"-{diff.a.label}", f"+{diff.b.label}"]
    by_host: dict[str, list[PortChange]] = {}
    for change in diff.ports:
        by_host.setdefault(change.netns or "" if kind == INVENTORY else change.host, []).append(change)
    status = {h.host: h for h in diff.hosts}
    for key in sorted({*(h.host for h in diff.hosts), *by_host}, key=_sort_key):  # as ndiff orders hosts
        changes = by_host.get(key, [])
        host_change = status.get(key)
        lines.append("")
        title = changes[0].title if changes else key
        if host_change is not None and host_change.before is None:
            lines.append(f"+{title}:")
        elif host_change is not None and host_change.after is None:
            lines.append(f"-{title}:")
        else:
            lines.append(f" {title}:")
        if host_change is not None and host_change.before and host_change.after:
            lines += [f"-Host is {host_change.before}.", f"+Host is {host_change.after}."]
        if not changes:
            continue
        header = (
            ["PORT", "STATE", "SERVICE", "VERSION"] if kind == SCAN else ["PORT", "STATE", "ADDRESS", "OWNER"]
        )
        rows: list[tuple[str, list[str]]] = []
        raw: dict[int, list[str]] = {}  # script lines after the row at that index, as ndiff
        for change in changes:
            spec = f"{change.port}/{change.protocol}"
            cells: list[tuple[str, list[str]]] = []
            for mark, side in (("-", change.before), ("+", change.after)):
                if side is None:
                    continue
                if kind == SCAN:
                    name, _, version = side.service.partition(" ")
                    cells.append((mark, [spec, side.state, name, version]))
                else:
                    owners = ", ".join(str(o) for o in side.owners) or "-"
                    cells.append((mark, [spec, side.state, ",".join(side.addresses) or "-", owners]))
            if len(cells) == 2 and cells[0][1] == cells[1][1]:  # only its scripts changed
                cells = [(" ", cells[0][1])]
            rows += cells
            if "scripts" in change.changes and change.before and change.after:
                raw[len(rows) - 1] = _script_lines(change.before.scripts, change.after.scripts)
        widths = [max(len(header[i]), *(len(r[i]) for _, r in rows)) for i in range(len(header))]
        lines.append(" " + " ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
        for index, (mark, row) in enumerate(rows):
            lines.append(mark + " ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
            lines += raw.get(index, [])
    if not diff.changed:
        lines.append("")
        lines.append(" (no changes)")
    if diff.not_compared:
        names = [n or "(this namespace)" for n in diff.not_compared]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        lines.append("")
        lines.append(
            f" (not compared: {shown}: only one side looked at "
            + ("it" if len(names) == 1 else "them")
            + "; record both with --all-netns)"
        )
    return "\n".join(lines)
