"""Network namespaces: naming them, finding every one in use, and reading sockets inside one.

Entering a namespace uses setns(2) (through ctypes: `os.setns` arrived in Python 3.12) in a
short-lived thread. A thread's network namespace is its own, so the main thread never moves;
a netlink socket opened in that thread belongs to the namespace for good, and the thread's
/proc/thread-self/net shows that namespace's tables.
"""

from __future__ import annotations

import functools
import os

from portkit.errors import PermissionNeeded, UsageError
from portkit.sockets._value import FrozenValue

TYPE_CHECKING = False  # see portkit.sockets._model: `portkit ls --json` imports this module
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    T = TypeVar("T")

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000


class Namespace(FrozenValue):
    """A network namespace: a label for rows, and a path that opens it (None = this process's own).

    Immutable and compared by value like a frozen dataclass (see portkit.sockets._value).
    """

    __slots__ = ("inode", "label", "path", "pid")
    _fields = ("label", "inode", "path", "pid")
    label: str | None
    inode: int
    path: str | None
    pid: int

    def __init__(self, label: str | None, inode: int, path: str | None, pid: int = 0) -> None:
        setter = object.__setattr__
        setter(self, "label", label)
        setter(self, "inode", inode)
        setter(self, "path", path)
        setter(self, "pid", pid)

    def __str__(self) -> str:
        return self.label or "(this namespace)"

    def command(self, argv: list[str]) -> list[str]:
        """`argv` run inside this namespace: as it is here, by `ip netns exec` for a named one,
        by `nsenter --net=` for a process's."""
        if self.path is None:
            return list(argv)
        if self.label is not None and self.path == f"{NETNS_RUN_DIR}/{self.label}":
            return ["ip", "netns", "exec", self.label, *argv]
        return ["nsenter", f"--net={self.path}", *argv]


def current_inode() -> int:
    return os.stat("/proc/self/ns/net").st_ino


def named_namespaces() -> dict[str, int]:
    """`ip netns` names -> namespace inode."""
    found: dict[str, int] = {}
    try:
        names = sorted(os.listdir(NETNS_RUN_DIR))
    except OSError:
        return found
    for name in names:
        try:
            found[name] = os.stat(f"{NETNS_RUN_DIR}/{name}").st_ino
        except OSError:
            continue
    return found


def named_namespace(name: str) -> Namespace:
    """The namespace `ip netns add NAME` created, or a UsageError listing the ones that exist."""
    if "/" in name or name in ("", ".", ".."):
        raise UsageError(f"invalid network namespace name {name!r}: expected a name from 'ip netns list'")
    known = named_namespaces()
    if name not in known:
        listing = ", ".join(known) or "none exist"
        raise UsageError(f"unknown network namespace {name!r}: expected one of 'ip netns list' ({listing})")
    if known[name] == current_inode():
        return Namespace(None, known[name], None)
    return Namespace(name, known[name], f"{NETNS_RUN_DIR}/{name}")


def all_namespaces() -> list[Namespace]:
    """Every network namespace a process lives in, plus every named one; this process's first.

    Each keeps the pid of one member when it has any: without root, setns is refused, but
    that member's /proc/PID/net still shows the namespace's tables.
    """
    own = current_inode()
    members: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                members.setdefault(os.stat(f"/proc/{entry}/ns/net").st_ino, int(entry))
            except OSError:
                continue
    found: dict[int, Namespace] = {own: Namespace(None, own, None, os.getpid())}
    for name, inode in named_namespaces().items():
        if inode not in found:
            found[inode] = Namespace(name, inode, f"{NETNS_RUN_DIR}/{name}", members.get(inode, 0))
    for inode, pid in members.items():
        if inode not in found:
            found[inode] = Namespace(f"net:[{inode}]", inode, f"/proc/{pid}/ns/net", pid)
    return list(found.values())


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    import ctypes

    # The interpreter's own symbols include libc's: no ctypes.util.find_library (which runs
    # ldconfig) on every namespace entered.
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    import ctypes

    libc = _libc()
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def run_in(namespace: Namespace, work: Callable[[], T]) -> T:
    """`work()` run inside `namespace` by a helper thread; the calling thread stays where it is."""
    if namespace.path is None:
        return work()
    import threading

    outcome: list[T] = []
    failure: list[BaseException] = []

    def enter_and_work() -> None:
        try:
            assert namespace.path is not None
            fd = os.open(namespace.path, os.O_RDONLY)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            outcome.append(work())
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=enter_and_work, name=f"netns {namespace}", daemon=True)
    thread.start()
    thread.join()
    if failure:
        exc = failure[0]
        if isinstance(exc, PermissionError):
            raise PermissionNeeded(
                f"entering network namespace {namespace} needs root (CAP_SYS_ADMIN): run portkit as root"
            ) from None
        raise exc
    return outcome[0]
