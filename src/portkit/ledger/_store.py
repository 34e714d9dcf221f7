"""The ledger: an embedded SQLite file that remembers what portkit observed, and when.

`Ledger.open(path)` opens (or creates) it; each `record_*` call is one transaction, so several
processes may record at once (WAL and a busy timeout, see _schema). Reading: `history(port)`,
`observation(id)`, `latest(kind, before)`, `export()`; retention: `prune(before)`.

Writers outside portkit's commands (the `watch` daemon) use `record_event`: a kind, a time, an
optional port and protocol (indexed, so `history` shows the event) and free JSON fields.
"""

from __future__ import annotations

import json
import sqlite3
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portkit.ledger._facts import (
    NetnsScope,
    Owner,
    PortFact,
    decision_facts,
    diagnosis_facts,
    inventory_facts,
    ruleset_fingerprint,
    scan_facts,
)
from portkit.ledger._schema import SCHEMA_VERSION, connect, damaged, unusable

if TYPE_CHECKING:
    from portkit.firewall import Decision, Ruleset
    from portkit.scan import ScanResult
    from portkit.sockets import Socket

# Observation kinds.
INVENTORY, SCAN, RULESET, DIAGNOSIS = "inventory", "scan", "ruleset", "diagnosis"
KINDS = (INVENTORY, SCAN, RULESET, DIAGNOSIS)
DEFAULT_BUSY_TIMEOUT = 30.0  # seconds a writer waits for another one's transaction


@dataclass(frozen=True)
class Observation:
    """One recorded command run: what kind, when, where, and the port facts it saw.

    `complete` is False when the command saw only part of its kind (a filtered `ls`, `who PORT`):
    such an inventory is history, but not a snapshot `diff @TIME` compares against.
    """

    id: int
    kind: str
    time: float
    host: str
    source: str
    complete: bool
    data: Mapping[str, Any]
    facts: tuple[PortFact, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "time": self.time,
            "host": self.host,
            "source": self.source,
            "complete": self.complete,
            "data": dict(self.data),
            "facts": [f.to_json() for f in self.facts],
        }


@dataclass(frozen=True)
class Event:
    id: int
    time: float
    kind: str
    host: str
    port: int | None
    protocol: str | None
    fields: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "time": self.time,
            "kind": self.kind,
            "host": self.host,
            "port": self.port,
            "protocol": self.protocol,
            "fields": dict(self.fields),
        }


@dataclass(frozen=True)
class Sighting:
    """A port fact with the observation it belongs to (what `history` reads)."""

    observation: int
    kind: str
    time: float
    source: str
    fact: PortFact


@dataclass(frozen=True)
class PruneResult:
    observations: int
    facts: int
    events: int
    # The file is compacted (VACUUM) after rows were deleted, so that it shrinks; not while
    # another process keeps a transaction open on it (then `compacted` is False).
    compacted: bool = False
    size_before: int = 0  # bytes of the database file (the write-ahead log aside)
    size_after: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "observations": self.observations,
            "facts": self.facts,
            "events": self.events,
            "compacted": self.compacted,
            "size_before": self.size_before,
            "size_after": self.size_after,
        }


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _loads(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {}


class Ledger:
    """An open ledger file. Use as a context manager, or call `close()`.

    One Ledger per thread (it holds one SQLite connection); processes and threads that each
    open their own may write at once.
    """

    def __init__(self, db: sqlite3.Connection, path: Path) -> None:
        self._db = db
        self.path = path

    @classmethod
    def open(
        cls,
        path: str | Path,
        *,
        create: bool = True,
        busy_timeout: float = DEFAULT_BUSY_TIMEOUT,
    ) -> Ledger:
        """Open the ledger at `path`, creating it (and its directory) when `create`.

        Raises LedgerDamaged (exit 2) for a file that is not a portkit ledger, LedgerTooNew
        (exit 1) for a newer schema, LedgerMissing (exit 1) when it does not exist and not
        `create`; none of them writes to the file.
        """
        target = Path(path)
        return cls(connect(target, busy_timeout=busy_timeout, create=create), target)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def schema_version(self) -> int:
        return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    @contextmanager
    def _guard(self) -> Iterator[sqlite3.Connection]:
        """sqlite3's errors on a file damaged after it opened, as one line (LedgerDamaged)."""
        try:
            yield self._db
        except sqlite3.OperationalError as exc:  # locked too long, I/O, a full disk: exit 1
            from portkit.errors import PortkitError, quote

            if "locked" in str(exc) or "busy" in str(exc):
                raise PortkitError(
                    f"the ledger {quote(str(self.path))} stayed locked by another writer"
                ) from None
            raise unusable(self.path, exc) from None
        except sqlite3.DatabaseError as exc:
            raise damaged(self.path, exc) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._guard() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    # --- recording ------------------------------------------------------------------------------

    def record(
        self,
        kind: str,
        facts: Iterable[PortFact],
        *,
        host: str = "",
        source: str = "",
        complete: bool = True,
        data: Mapping[str, Any] | None = None,
        time: float | None = None,
    ) -> int:
        """Write one observation and its facts in one transaction; returns its id."""
        if kind not in KINDS:
            raise ValueError(f"unknown observation kind {kind!r}: expected one of {', '.join(KINDS)}")
        when = _time.time() if time is None else time
        rows = list(facts)
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO observations (kind, time, host, source, complete, data) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (kind, when, host, source, int(complete), _dumps(dict(data or {}))),
            )
            ident = cursor.lastrowid
            assert ident is not None
            db.executemany(
                "INSERT INTO port_facts (observation, port, protocol, host, state, address, netns, "
                "exposure, owners, service, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        ident,
                        f.port,
                        f.protocol,
                        f.host,
                        f.state,
                        f.address,
                        f.netns,
                        f.exposure,
                        _dumps([o.to_json() for o in f.owners]),
                        f.service,
                        _dumps(dict(f.detail)),
                    )
                    for f in rows
                ],
            )
        return ident

    def record_inventory(
        self,
        sockets: Iterable[Socket],
        *,
        host: str,
        complete: bool = True,
        source: str = "",
        time: float | None = None,
        scope: NetnsScope | None = None,
    ) -> int:
        """A socket inventory's listeners (with owner, netns and exposure) as one snapshot.

        `scope`: the namespaces it looked at (data `netns`); without one it counts as having
        looked at every namespace.
        """
        facts = inventory_facts(sockets, host)
        data = {"netns": scope.to_json()} if scope is not None else {}
        return self.record(
            INVENTORY, facts, host=host, source=source, complete=complete, time=time, data=data
        )

    def record_scan(
        self, result: ScanResult, *, host: str = "", source: str = "", time: float | None = None
    ) -> int:
        """A scan's listed ports, per scanned host; the scan's summary goes in the observation."""
        summary = result.to_json(hosts=False)["scan"]
        extra = {h.address: [e.to_json() for e in h.extraports] for h in result.hosts if h.extraports}
        return self.record(
            SCAN,
            scan_facts(result),
            host=host,
            source=source or result.command,
            complete=not result.interrupted,
            data={
                "scan": summary,
                "scanned": result.services,  # the scanned ports as ranges ("1-1024,8080")
                "extraports": extra,
                "hosts": [h.address for h in result.hosts],
            },
            time=time if time is not None else (result.start or None),
        )

    def record_ruleset(
        self,
        ruleset: Ruleset,
        decisions: Sequence[Decision] = (),
        *,
        host: str = "",
        time: float | None = None,
    ) -> int:
        """A ruleset's fingerprint and source, with the decisions `fw check` made from it."""
        fingerprint = ruleset_fingerprint(ruleset)
        return self.record(
            RULESET,
            decision_facts(decisions, fingerprint),
            host=host,
            source=ruleset.source,
            data={"fingerprint": fingerprint, "rules": ruleset.rule_count, "tables": len(ruleset.tables)},
            time=time,
        )

    def record_diagnosis(
        self, diagnosis: Mapping[str, Any], *, host: str = "", time: float | None = None
    ) -> int:
        """A diagnosis, as its JSON document (portkit.diagnose's `to_json()`), kept whole.

        When it names a target "host:port/proto", the port gets a fact whose state is the code.
        """
        doc = dict(diagnosis)
        return self.record(DIAGNOSIS, diagnosis_facts(doc, host), host=host, data=doc, time=time)

    def record_event(
        self,
        kind: str,
        fields: Mapping[str, Any],
        *,
        port: int | None = None,
        protocol: str | None = None,
        host: str = "",
        time: float | None = None,
    ) -> int:
        """One event (watch's `listener-opened`, `scan`, ...): `fields` are kept as JSON."""
        when = _time.time() if time is None else time
        with self._write() as db:
            cursor = db.execute(
                "INSERT INTO events (time, kind, host, port, protocol, fields) VALUES (?, ?, ?, ?, ?, ?)",
                (when, kind, host, port, protocol, _dumps(dict(fields))),
            )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    # --- reading --------------------------------------------------------------------------------

    def _fact(self, row: Sequence[Any]) -> PortFact:
        port, protocol, host, state, address, netns, exposure, owners, service, detail = row
        owner_docs = _loads(owners)
        return PortFact(
            port=port,
            protocol=protocol,
            host=host,
            state=state,
            address=address,
            netns=netns,
            exposure=exposure,
            owners=tuple(Owner.from_json(o) for o in owner_docs if isinstance(o, dict))
            if isinstance(owner_docs, list)
            else (),
            service=service,
            detail=d if isinstance(d := _loads(detail), dict) else {},
        )

    @staticmethod
    def _observation(row: Sequence[Any], facts: tuple[PortFact, ...] = ()) -> Observation:
        """A row of `id, kind, time, host, source, complete, data` from `observations` as an Observation."""
        ident, kind, when, host, source, complete, data = row
        doc = _loads(data)
        fields = doc if isinstance(doc, dict) else {}
        return Observation(ident, kind, when, host, source, bool(complete), fields, facts)

    _FACT_COLUMNS = (
        "f.port, f.protocol, f.host, f.state, f.address, f.netns, f.exposure, f.owners, f.service, f.detail"
    )

    def sightings_query(
        self, port: int, protocol: str | None = None, host: str | None = None
    ) -> tuple[str, list[Any]]:
        """The SQL `sightings` runs, and its arguments (tests check its plan uses the index)."""
        where: list[str] = ["f.port = ?"]
        args: list[Any] = [port]
        if protocol:
            where.append("f.protocol = ?")
            args.append(protocol)
        if host:
            where.append("(f.host = ? OR f.address = ?)")
            args += [host, host]
        query = (
            f"SELECT o.id, o.kind, o.time, o.source, {self._FACT_COLUMNS} FROM port_facts f "
            f"JOIN observations o ON o.id = f.observation WHERE {' AND '.join(where)} ORDER BY o.time, o.id"
        )
        return query, args

    def sightings(self, port: int, protocol: str | None = None, host: str | None = None) -> list[Sighting]:
        """Every fact about `port` (one protocol or all), oldest first; an indexed query."""
        query, args = self.sightings_query(port, protocol, host)
        with self._guard() as db:
            rows = db.execute(query, args).fetchall()
        return [Sighting(r[0], r[1], r[2], r[3], self._fact(r[4:])) for r in rows]

    def events(
        self, port: int | None = None, protocol: str | None = None, host: str | None = None
    ) -> list[Event]:
        """Events about `port` (all events when None), oldest first."""
        where: list[str] = []
        args: list[Any] = []
        if port is not None:
            where.append("port = ?")
            args.append(port)
        if protocol:
            where.append("protocol = ?")
            args.append(protocol)
        if host:
            where.append("host = ?")
            args.append(host)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        with self._guard() as db:
            rows = db.execute(
                f"SELECT id, time, kind, host, port, protocol, fields FROM events{clause} ORDER BY time, id",
                args,
            ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], r[4], r[5], _loads(r[6])) for r in rows]

    def observation(self, ident: int) -> Observation | None:
        """The observation with this id, with its facts; None when there is none."""
        with self._guard() as db:
            row = db.execute(
                "SELECT id, kind, time, host, source, complete, data FROM observations WHERE id = ?", (ident,)
            ).fetchone()
            if row is None:
                return None
            facts = db.execute(
                f"SELECT {self._FACT_COLUMNS} FROM port_facts f WHERE f.observation = ? "
                "ORDER BY f.host, f.protocol, f.port, f.address",
                (ident,),
            ).fetchall()
        return self._observation(row, tuple(self._fact(f) for f in facts))

    def latest(self, kind: str, *, before: float | None = None, complete: bool = True) -> Observation | None:
        """The newest observation of `kind` at or before `before` (complete ones only by default)."""
        query = "SELECT id FROM observations WHERE kind = ?"
        args: list[Any] = [kind]
        if before is not None:
            query += " AND time <= ?"
            args.append(before)
        if complete:
            query += " AND complete = 1"
        with self._guard() as db:
            row = db.execute(query + " ORDER BY time DESC, id DESC LIMIT 1", args).fetchone()
        return None if row is None else self.observation(row[0])

    def summaries(self, kind: str) -> list[Observation]:
        """Every observation of `kind`, oldest first, without its facts (cheap: no join)."""
        with self._guard() as db:
            rows = db.execute(
                "SELECT id, kind, time, host, source, complete, data FROM observations WHERE kind = ? "
                "ORDER BY time, id",
                (kind,),
            ).fetchall()
        return [self._observation(row) for row in rows]

    def complete_times(self, kind: str, *, after: float, host: str | None = None) -> list[float]:
        """The times of complete observations of `kind` at or after `after`, oldest first."""
        return [when for when, _scope in self.complete_snapshots(kind, after=after, host=host)]

    def complete_snapshots(
        self, kind: str, *, after: float, host: str | None = None
    ) -> list[tuple[float, NetnsScope | None]]:
        """(time, namespaces looked at) of complete observations of `kind` at or after `after`."""
        query = "SELECT time, data FROM observations WHERE kind = ? AND complete = 1 AND time >= ?"
        args: list[Any] = [kind, after]
        if host:
            query += " AND host = ?"
            args.append(host)
        with self._guard() as db:
            rows = db.execute(query + " ORDER BY time", args).fetchall()
        found = []
        for when, data in rows:
            doc = _loads(data)
            scope = NetnsScope.from_json(doc.get("netns") if isinstance(doc, dict) else None)
            found.append((float(when), scope))
        return found

    def observations(self) -> Iterator[Observation]:
        """Every observation with its facts, oldest first (what `ledger export` writes)."""
        with self._guard() as db:
            ids = [r[0] for r in db.execute("SELECT id FROM observations ORDER BY time, id")]
        for ident in ids:
            found = self.observation(ident)
            if found is not None:
                yield found

    def counts(self) -> dict[str, int]:
        with self._guard() as db:
            return {
                "observations": db.execute("SELECT count(*) FROM observations").fetchone()[0],
                "facts": db.execute("SELECT count(*) FROM port_facts").fetchone()[0],
                "events": db.execute("SELECT count(*) FROM events").fetchone()[0],
            }

    # --- retention ------------------------------------------------------------------------------

    def prune(self, before: float) -> PruneResult:
        """Delete observations (with their facts) and events older than `before` (a Unix time),
        then compact the file when anything was deleted (see PruneResult)."""
        size_before = self._size()
        with self._write() as db:
            facts = db.execute(
                "SELECT count(*) FROM port_facts "
                "WHERE observation IN (SELECT id FROM observations WHERE time < ?)",
                (before,),
            ).fetchone()[0]
            observations = db.execute("DELETE FROM observations WHERE time < ?", (before,)).rowcount
            events = db.execute("DELETE FROM events WHERE time < ?", (before,)).rowcount
        from portkit.errors import PortkitError

        compacted = False
        if observations or events:
            try:
                with self._guard() as db:
                    db.execute("VACUUM")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                compacted = True
            except PortkitError:  # another process holds it open in a transaction: left as it is
                pass
        return PruneResult(observations, facts, events, compacted, size_before, self._size())

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0


__all__ = ["SCHEMA_VERSION", "Event", "Ledger", "Observation", "PruneResult", "Sighting"]
