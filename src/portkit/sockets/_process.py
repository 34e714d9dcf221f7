"""A process that holds sockets, as portkit describes it (see _procs for how it is read)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProcessInfo:
    """A process holding a socket: who it is, where it runs, and what started it."""

    pid: int
    name: str
    cmdline: tuple[str, ...] = ()
    uid: int = -1
    user: str = ""
    parents: tuple[tuple[int, str], ...] = ()
    unit: str = ""
    container: str = ""
    container_runtime: str = ""
    container_name: str = ""

    def __str__(self) -> str:
        return f"{self.name}/{self.pid}"

    @property
    def command(self) -> str:
        # Arguments can hold newlines (python -c "..."): one line, so tables stay tables.
        return " ".join(" ".join(self.cmdline).split()) or f"[{self.name}]"

    def to_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "name": self.name,
            "cmdline": list(self.cmdline),
            "uid": self.uid,
            "user": self.user,
            "parents": [{"pid": pid, "name": name} for pid, name in self.parents],
            "unit": self.unit or None,
            "container": (
                {"id": self.container, "runtime": self.container_runtime, "name": self.container_name or None}
                if self.container
                else None
            ),
        }
