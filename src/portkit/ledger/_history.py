"""A port's story from the ledger: when it was first and last seen listening, who owned it and
on which address over time, what the firewall decided for it, and what scans saw.

`port_history(ledger, port, protocol, host)` reads the indexed facts once and folds them here;
the folding (`build_history`) is pure, so it is tested on hand-made sightings.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from portkit.ledger._facts import NetnsScope, Owner, PortFact
from portkit.ledger._store import DIAGNOSIS, INVENTORY, RULESET, SCAN, Event, Observation, Sighting

if TYPE_CHECKING:
    from portkit.ledger._store import Ledger


@dataclass(frozen=True)
class Binding:
    """A run of consecutive inventory snapshots in which the port had the same owners and address."""

    first: float
    last: float
    snapshots: int
    protocol: str
    host: str
    address: str
    netns: str
    exposure: str
    owners: tuple[Owner, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "first_seen": self.first,
            "last_seen": self.last,
            "snapshots": self.snapshots,
            "protocol": self.protocol,
            "host": self.host,
            "address": self.address,
            "netns": self.netns or None,
            "exposure": self.exposure or None,
            "owners": [o.to_json() for o in self.owners],
        }


@dataclass(frozen=True)
class PortHistory:
    port: int
    protocol: str | None
    host: str | None
    first_seen: float | None  # first time it was listening (inventory) or open (scan)
    last_seen: float | None
    gone_since: float | None  # a complete snapshot after last_seen no longer had it
    bindings: tuple[Binding, ...]
    scans: tuple[Sighting, ...]
    rules: tuple[Sighting, ...]
    diagnoses: tuple[Sighting, ...]
    events: tuple[Event, ...]

    @property
    def empty(self) -> bool:
        return not (self.bindings or self.scans or self.rules or self.diagnoses or self.events)

    def to_json(self) -> dict[str, Any]:
        def sighting(s: Sighting, *keys: str) -> dict[str, Any]:
            fact = s.fact
            doc: dict[str, Any] = {
                "time": s.time,
                "observation": s.observation,
                "protocol": fact.protocol,
                "host": fact.host,
                "state": fact.state,
            }
            for key in keys:
                doc[key] = fact.detail.get(key)
            return doc

        return {
            "port": self.port,
            "protocol": self.protocol,
            "host": self.host,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "gone_since": self.gone_since,
            "bindings": [b.to_json() for b in self.bindings],
            "scans": [
                {
                    **sighting(s, "reason", "scan"),
                    "service": s.fact.service or None,
                    "listed": s.fact.detail.get("listed", True),
                    "source": s.source,
                }
                for s in self.scans
            ],
            "rules": [{**sighting(s, "flow", "rule", "fingerprint"), "source": s.source} for s in self.rules],
            "diagnoses": [sighting(s, "kind") for s in self.diagnoses],
            "events": [e.to_json() for e in self.events],
        }


_SEEN_STATES = {INVENTORY: {"listening"}, SCAN: {"open", "open|filtered"}}


def build_history(
    port: int,
    protocol: str | None,
    host: str | None,
    sightings: Sequence[Sighting],
    events: Sequence[Event] = (),
    snapshot_times: Sequence[float] = (),
    snapshot_scopes: Sequence[NetnsScope | None] = (),
) -> PortHistory:
    """Fold sightings (oldest first) into a history.

    `snapshot_times` are the times of complete inventory snapshots (oldest first); a binding run
    ends when a complete snapshot lacks it, so an owner that came back after a gap is a new run.
    `snapshot_scopes` (one per time; none: each covers every namespace) are the namespaces each
    snapshot looked at: one that did not look at the binding's namespace says nothing of it.
    """
    scopes = list(snapshot_scopes) or [None] * len(snapshot_times)
    covering: dict[str, list[float]] = {}

    def times_for(netns: str) -> list[float]:
        if netns not in covering:
            pairs = zip(snapshot_times, scopes, strict=True)
            covering[netns] = [t for t, scope in pairs if scope is None or scope.covers(netns)]
        return covering[netns]

    seen = [s.time for s in sightings if s.fact.state in _SEEN_STATES.get(s.kind, ())]
    first = min(seen, default=None)
    last = max(seen, default=None)
    inventory = [s for s in sightings if s.kind == INVENTORY]
    bindings: list[Binding] = []
    open_runs: dict[tuple[Any, ...], int] = {}  # key -> index in bindings
    at_place: dict[tuple[Any, ...], int] = {}  # (protocol, host, address, netns) -> its latest run
    for s in inventory:
        f = s.fact
        place = (f.protocol, f.host, f.address, f.netns)
        key = (*place, tuple(sorted({o.identity for o in f.owners})))
        index = open_runs.get(key)
        latest = at_place.get(place)
        if index is None and latest is not None and not (f.owners and bindings[latest].owners):
            # No owner on one side is an owner that snapshot could not see (another user's
            # process, read without root): the run at that place goes on.
            index = latest
        run = bindings[index] if index is not None else None
        # A complete snapshot of its namespace between the run's end and this sighting lacked
        # the port: a new run.
        times = times_for(f.netns)
        if run is None or bisect_right(times, run.last) < bisect_left(times, s.time):
            open_runs[key] = at_place[place] = len(bindings)
            bindings.append(
                Binding(s.time, s.time, 1, f.protocol, f.host, f.address, f.netns, f.exposure, f.owners)
            )
        elif s.time != run.last:
            assert index is not None
            owners = f.owners or run.owners
            bindings[index] = replace(run, last=s.time, snapshots=run.snapshots + 1, owners=owners)
            open_runs[(*place, tuple(sorted({o.identity for o in owners})))] = at_place[place] = index
    gone = None
    last_inventory = max((s.time for s in inventory), default=None)
    if last_inventory is not None:
        where = {s.fact.netns for s in inventory if s.time == last_inventory}
        gone = next(
            (
                t
                for t, scope in zip(snapshot_times, scopes, strict=True)
                if t > last_inventory and (scope is None or all(scope.covers(n) for n in where))
            ),
            None,
        )
    return PortHistory(
        port=port,
        protocol=protocol,
        host=host,
        first_seen=first,
        last_seen=last,
        gone_since=gone,
        bindings=tuple(bindings),
        scans=tuple(s for s in sightings if s.kind == SCAN),
        rules=tuple(s for s in sightings if s.kind == RULESET),
        diagnoses=tuple(s for s in sightings if s.kind == DIAGNOSIS),
        events=tuple(events),
    )


def _in_ranges(port: int, ranges: object) -> bool:
    """Whether `port` is in nmap-style ranges text ("1-21,23,80-90")."""
    if not isinstance(ranges, str):
        return False
    for part in ranges.split(","):
        low, _, high = part.strip().partition("-")
        try:
            if int(low) <= port <= int(high or low):
                return True
        except ValueError:
            continue
    return False


def collapsed_sightings(
    scans: Sequence[Observation],
    port: int,
    protocol: str | None,
    host: str | None,
    listed: set[tuple[int, str]],
) -> list[Sighting]:
    """What scans saw of `port` when they scanned it but did not list it ("Not shown: 998 closed").

    `listed` holds (observation, host) pairs that list the port already. The state is the
    collapsed group whose port ranges hold the port, else the only group there is, else
    "not listed".
    """
    found = []
    for scan in scans:
        info = scan.data.get("scan")
        scan_protocol = info.get("protocol") if isinstance(info, dict) else None
        if not isinstance(scan_protocol, str) or (protocol and scan_protocol != protocol):
            continue
        if not _in_ranges(port, scan.data.get("scanned")):
            continue
        extra = scan.data.get("extraports")
        extra = extra if isinstance(extra, dict) else {}
        hosts = scan.data.get("hosts")
        for address in hosts if isinstance(hosts, list) else []:
            if not isinstance(address, str) or (host and address != host) or (scan.id, address) in listed:
                continue
            groups = [g for g in extra.get(address, []) if isinstance(g, dict)]
            state = "not listed"
            for group in groups:
                ports = group.get("ports")
                if isinstance(ports, dict) and any(_in_ranges(port, r) for r in ports.values()):
                    state = str(group.get("state"))
            if state == "not listed" and len(groups) == 1:
                state = str(groups[0].get("state"))
            fact = PortFact(port, scan_protocol, address, state, detail={"listed": False})
            found.append(Sighting(scan.id, SCAN, scan.time, scan.source, fact))
    return found


def port_history(
    ledger: Ledger, port: int, protocol: str | None = None, host: str | None = None
) -> PortHistory:
    """The history of `port` (one protocol, or every one when None), optionally on one host."""
    sightings = ledger.sightings(port, protocol, host)
    listed = {(s.observation, s.fact.host) for s in sightings if s.kind == SCAN}
    collapsed = collapsed_sightings(ledger.summaries(SCAN), port, protocol, host, listed)
    if collapsed:
        sightings = sorted([*sightings, *collapsed], key=lambda s: (s.time, s.observation))
    events = ledger.events(port, protocol, host)
    inventory = [s.time for s in sightings if s.kind == INVENTORY]
    snapshots: list[tuple[float, NetnsScope | None]] = []
    if inventory:
        snapshots = ledger.complete_snapshots(INVENTORY, after=min(inventory))
    return build_history(
        port,
        protocol,
        host,
        sightings,
        events,
        [when for when, _ in snapshots],
        [scope for _, scope in snapshots],
    )
