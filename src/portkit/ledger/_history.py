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

from portkit.ledger._facts import Owner
from portkit.ledger._store import DIAGNOSIS, INVENTORY, RULESET, SCAN, Event, Sighting

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
                {**sighting(s, "reason", "scan"), "service": s.fact.service or None, "source": s.source}
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
) -> PortHistory:
    """Fold sightings (oldest first) into a history.

    `snapshot_times` are the times of complete inventory snapshots (oldest first); a binding run
    ends when a complete snapshot lacks it, so an owner that came back after a gap is a new run.
    """
    seen = [s.time for s in sightings if s.fact.state in _SEEN_STATES.get(s.kind, ())]
    first = min(seen, default=None)
    last = max(seen, default=None)
    inventory = [s for s in sightings if s.kind == INVENTORY]
    bindings: list[Binding] = []
    open_runs: dict[tuple[Any, ...], int] = {}  # key -> index in bindings
    for s in inventory:
        f = s.fact
        key = (f.protocol, f.host, f.address, f.netns, tuple(sorted({o.identity for o in f.owners})))
        index = open_runs.get(key)
        run = bindings[index] if index is not None else None
        # A complete snapshot between the run's end and this sighting lacked the port: a new run.
        if run is None or bisect_right(snapshot_times, run.last) < bisect_left(snapshot_times, s.time):
            open_runs[key] = len(bindings)
            bindings.append(
                Binding(s.time, s.time, 1, f.protocol, f.host, f.address, f.netns, f.exposure, f.owners)
            )
        elif s.time != run.last:
            assert index is not None
            bindings[index] = replace(run, last=s.time, snapshots=run.snapshots + 1, owners=f.owners)
    gone = None
    last_inventory = max((s.time for s in inventory), default=None)
    if last_inventory is not None:
        gone = next((t for t in snapshot_times if t > last_inventory), None)
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


def port_history(
    ledger: Ledger, port: int, protocol: str | None = None, host: str | None = None
) -> PortHistory:
    """The history of `port` (one protocol, or every one when None), optionally on one host."""
    sightings = ledger.sightings(port, protocol, host)
    events = ledger.events(port, protocol, host)
    inventory = [s.time for s in sightings if s.kind == INVENTORY]
    times: list[float] = []
    if inventory:
        times = ledger.complete_times(INVENTORY, after=min(inventory))
    return build_history(port, protocol, host, sightings, events, times)
