"""`ls --watch`: what changed between two readings of the socket table (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from portkit.sockets._model import Socket

SocketKey = tuple[Any, ...]


def socket_key(row: Socket) -> SocketKey:
    """What makes a socket the same one across readings: its 5-tuple, namespace and inode."""
    return (
        row.transport,
        row.family,
        row.local_address,
        row.local_port,
        row.remote_address,
        row.remote_port,
        row.netns,
        row.inode,
    )


@dataclass(frozen=True)
class Change:
    """The rows of one refresh, each marked '+' (appeared), '-' (went away) or ' ' (still there)."""

    rows: tuple[tuple[str, Socket], ...]

    @property
    def appeared(self) -> tuple[Socket, ...]:
        return tuple(row for mark, row in self.rows if mark == "+")

    @property
    def gone(self) -> tuple[Socket, ...]:
        return tuple(row for mark, row in self.rows if mark == "-")


def diff(previous: Iterable[Socket] | None, current: Iterable[Socket]) -> Change:
    """Mark the current rows against the previous reading (None: the first reading, nothing marked)."""
    now = list(current)
    if previous is None:
        return Change(tuple((" ", row) for row in now))
    before = {socket_key(row): row for row in previous}
    now_keys = {socket_key(row) for row in now}
    marked = [("+" if socket_key(row) not in before else " ", row) for row in now]
    marked.extend(("-", row) for key, row in before.items() if key not in now_keys)
    return Change(tuple(marked))
