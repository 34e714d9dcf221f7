"""The UDP client table: one upstream socket per client address, expiring and bounded.

UDP has no connections, so the forwarder keeps a mapping client address -> upstream
socket: replies arriving on that socket go back to that client and nobody else. Entries
expire after an idle time; when the table is full the least recently used entry is evicted
(a new client is never refused for an old one's sake). Pure: time is passed in, and the
upstream "socket" is whatever object the I/O layer stores.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class Mapping(Generic[T]):
    client: Hashable
    upstream: T
    last_seen: float


class ClientTable(Generic[T]):
    """Client address -> Mapping, ordered from least to most recently used."""

    def __init__(self, max_clients: int, idle_timeout: float) -> None:
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self._entries: OrderedDict[Hashable, Mapping[T]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Mapping[T]]:
        return iter(list(self._entries.values()))

    def get(self, client: Hashable, now: float) -> Mapping[T] | None:
        """The client's mapping, marked as used now; None if it has none."""
        entry = self._entries.get(client)
        if entry is not None:
            entry.last_seen = now
            self._entries.move_to_end(client)
        return entry

    def add(self, client: Hashable, upstream: T, now: float) -> list[Mapping[T]]:
        """Map a new client; returns the entries evicted to make room (the caller closes them)."""
        evicted: list[Mapping[T]] = []
        while len(self._entries) >= self.max_clients:
            evicted.append(self._entries.popitem(last=False)[1])
        self._entries[client] = Mapping(client, upstream, now)
        return evicted

    def touch(self, client: Hashable, now: float) -> None:
        self.get(client, now)

    def remove(self, client: Hashable) -> Mapping[T] | None:
        return self._entries.pop(client, None)

    def expire(self, now: float) -> list[Mapping[T]]:
        """Remove and return the mappings idle for longer than the idle timeout."""
        if self.idle_timeout <= 0:
            return []
        expired: list[Mapping[T]] = []
        for client, entry in list(self._entries.items()):
            if now - entry.last_seen < self.idle_timeout:
                break  # ordered by last use: the rest are younger
            expired.append(entry)
            del self._entries[client]
        return expired
