"""A process that holds sockets, as portkit describes it (see _procs for how it is read)."""

from __future__ import annotations

from portkit.sockets._value import FrozenValue

# `portkit ls -p` and `portkit who` import this module: no typing or dataclasses at run time
# (portkit.sockets, "Import cost").
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class ProcessInfo(FrozenValue):
    """A process holding a socket: who it is, where it runs, and what started it.

    An immutable value, compared by its fields like a frozen dataclass (portkit.sockets._value).
    """

    _fields = (
        "pid",
        "name",
        "cmdline",
        "uid",
        "user",
        "parents",
        "unit",
        "container",
        "container_runtime",
        "container_name",
    )
    __slots__ = _fields
    pid: int
    name: str
    cmdline: tuple[str, ...]
    uid: int
    user: str
    parents: tuple[tuple[int, str], ...]
    unit: str
    container: str
    container_runtime: str
    container_name: str

    def __init__(
        self,
        pid: int,
        name: str,
        cmdline: tuple[str, ...] = (),
        uid: int = -1,
        user: str = "",
        parents: tuple[tuple[int, str], ...] = (),
        unit: str = "",
        container: str = "",
        container_runtime: str = "",
        container_name: str = "",
    ) -> None:
        setter = object.__setattr__
        setter(self, "pid", pid)
        setter(self, "name", name)
        setter(self, "cmdline", cmdline)
        setter(self, "uid", uid)
        setter(self, "user", user)
        setter(self, "parents", parents)
        setter(self, "unit", unit)
        setter(self, "container", container)
        setter(self, "container_runtime", container_runtime)
        setter(self, "container_name", container_name)

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
