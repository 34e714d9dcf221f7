"""Listener events from successive readings of the listening sockets (pure).

A listener is known by its namespace, transport, address and port. Between two readings it can
appear (`listener-opened`), go (`listener-closed`), or be held by another owner
(`owner-changed`): another executable, user, unit or container (the ledger's and `portkit
diff`'s owner identity less the process name). A new PID of the same executable, user and unit
(a restart, a worker replaced) is not a change: that is the noise users of text diffs of
`netstat` complain of. A service that comes back under another user is one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ListenerKey = tuple[str | None, str, str, int]  # (netns, protocol, address, port)


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    name: str
    exe: str
    user: str
    unit: str
    container: str

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What makes two owners the same service: not the PID."""
        return (self.exe or self.name, self.user, self.unit, self.container)

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "exe": self.exe,
            "user": self.user,
            "unit": self.unit or None,
            "container": self.container or None,
        }


@dataclass(frozen=True, slots=True)
class ListenerRow:
    netns: str | None
    protocol: str
    address: str
    port: int
    inode: int
    owners: tuple[Owner, ...] = ()

    @property
    def key(self) -> ListenerKey:
        return (self.netns, self.protocol, self.address, self.port)


@dataclass(frozen=True)
class ListenerEvent:
    kind: str  # listener-opened | listener-closed | owner-changed
    time: float
    row: ListenerRow
    before: tuple[Owner, ...] = ()

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "event": self.kind,
            "time": self.time,
            "netns": self.row.netns,
            "protocol": self.row.protocol,
            "address": self.row.address,
            "port": self.row.port,
            "owners": [o.to_json() for o in self.row.owners],
        }
        if self.kind == "owner-changed":
            document["before"] = [o.to_json() for o in self.before]
        return document


def _identities(owners: Iterable[Owner]) -> frozenset[tuple[str, str, str, str]]:
    return frozenset(o.identity for o in owners)


class ListenerTracker:
    def __init__(self) -> None:
        self.known: dict[ListenerKey, ListenerRow] | None = None

    def changed(self, rows: Iterable[ListenerRow]) -> bool:
        """Whether `rows` (read without owners) differ from the last reading: then read owners."""
        if self.known is None:
            return True
        current = {row.key: row.inode for row in rows}
        return current != {key: row.inode for key, row in self.known.items()}

    def update(self, rows: Iterable[ListenerRow], now: float) -> list[ListenerEvent]:
        """The events between the last reading and `rows`; the first reading is the baseline."""
        current = {row.key: row for row in rows}
        if self.known is None:
            self.known = current
            return []
        events: list[ListenerEvent] = []
        for key, row in current.items():
            old = self.known.get(key)
            if old is None:
                events.append(ListenerEvent("listener-opened", now, row))
            elif (
                old.inode != row.inode
                and row.owners
                and old.owners
                and _identities(old.owners) != _identities(row.owners)
            ):
                events.append(ListenerEvent("owner-changed", now, row, old.owners))
        for key, old in self.known.items():
            if key not in current:
                events.append(ListenerEvent("listener-closed", now, old))
        self.known = current
        return events


@dataclass(frozen=True)
class AcceptEvent:
    """Connections a listener accepted in the last interval (counted from its SYN-ACKs)."""

    time: float
    netns: str | None
    port: int
    count: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "accepts",
            "time": self.time,
            "netns": self.netns,
            "protocol": "tcp",
            "port": self.port,
            "count": self.count,
            "per_second": round(self.count / self.seconds, 2) if self.seconds > 0 else None,
        }
