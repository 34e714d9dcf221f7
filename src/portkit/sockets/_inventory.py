"""The socket inventory: what to ask the kernel (SocketQuery), and what came back (Inventory).

`list_sockets` is the one entry point the commands use: it picks the backend (netlink, or
/proc when netlink is missing), visits the namespaces asked for, attributes sockets to
processes only when the query needs them, and applies the filters the kernel cannot.
"""

from __future__ import annotations

import os

from portkit.errors import PortkitError, UsageError
from portkit.model.protocols import Transport
from portkit.sockets import _netns
from portkit.sockets._model import ALL_STATES, Socket, TcpState
from portkit.sockets._value import FrozenValue

# `portkit ls --json` imports this module: no typing, dataclasses or json at run time
# (portkit.sockets, "Import cost"); json is imported where a value needs it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence
    from typing import Any

    # Loaded when a query needs them: the plain `ls --all` path stays small.
    from portkit.sockets._bytecode import PortMatch
    from portkit.sockets._netlink import RawRows
    from portkit.sockets._process import ProcessInfo
    from portkit.sockets._procs import Holders, OwnerMap

LISTENING = frozenset({TcpState.LISTEN, TcpState.CLOSE})
_PROCESSES = Socket._fields.index("processes")  # where `_with_owners` puts a row's processes
BACKENDS = ("auto", "netlink", "proc")


class SocketQuery(FrozenValue):
    """Which sockets to list. Port and state filters run in the kernel; the rest here.

    An immutable value, compared by its fields like a frozen dataclass (see portkit.sockets._value).
    """

    _fields = (
        "transports",
        "families",
        "states",
        "listening",
        "ports",
        "pids",
        "uids",
        "process_names",
        "with_processes",
        "tcp_info",
        "count_states",
    )
    __slots__ = _fields
    transports: tuple[Transport, ...]
    families: tuple[int, ...]
    states: frozenset[TcpState]
    listening: bool
    ports: tuple[PortMatch, ...]
    pids: frozenset[int]
    uids: frozenset[int]
    process_names: tuple[str, ...]
    with_processes: bool
    tcp_info: bool
    # TCP sockets in these states are counted per namespace (Inventory.counted), not listed:
    # "how many connections does :443 serve" stays cheap when the answer is 50,000.
    count_states: frozenset[TcpState]

    def __init__(
        self,
        transports: tuple[Transport, ...] = (Transport.TCP, Transport.UDP),
        families: tuple[int, ...] = (4, 6),
        states: frozenset[TcpState] = ALL_STATES,
        listening: bool = False,
        ports: tuple[PortMatch, ...] = (),
        pids: frozenset[int] = frozenset(),
        uids: frozenset[int] = frozenset(),
        process_names: tuple[str, ...] = (),
        with_processes: bool = False,
        tcp_info: bool = False,
        count_states: frozenset[TcpState] = frozenset(),
    ) -> None:
        setter = object.__setattr__
        setter(self, "transports", transports)
        setter(self, "families", families)
        setter(self, "states", states)
        setter(self, "listening", listening)
        setter(self, "ports", ports)
        setter(self, "pids", pids)
        setter(self, "uids", uids)
        setter(self, "process_names", process_names)
        setter(self, "with_processes", with_processes)
        setter(self, "tcp_info", tcp_info)
        setter(self, "count_states", count_states)

    @property
    def needs_processes(self) -> bool:
        return self.with_processes or bool(self.pids or self.process_names)

    def bytecode_for(self, transport: Transport) -> bytes:
        """The kernel-side port filter for one transport (b'' when no port filter applies)."""
        matches = [m for m in self.ports if m.applies_to(transport.value)]
        if not matches:
            return b""
        from portkit.sockets._bytecode import compile_filter

        return compile_filter(matches)

    def kernel_states(self, transport: Transport) -> frozenset[TcpState]:
        """States to list for one transport (TCP's count_states are asked for on top, to count)."""
        states = self.states & LISTENING if self.listening else self.states
        return states - self.count_states if transport is Transport.TCP else states

    def keeps(self, row: Socket) -> bool:
        """The filters applied after the kernel's: listening-only UDP, users, pids, process names."""
        if self.listening and row.transport is not Transport.TCP and row.remote_port != 0:
            return False
        if self.uids and row.uid not in self.uids:
            return False
        if self.pids and not any(p.pid in self.pids for p in row.processes):
            return False
        if self.process_names:
            names = [p.name.lower() for p in row.processes]
            if not any(want in name for want in self.process_names for name in names):
                return False
        return True


class Inventory(FrozenValue):
    """The sockets found, and how: backend, namespaces visited, and what attribution could see.

    `_rows` may hold sockets still in the kernel's bytes (`RawRows`, from `list_sockets` when no
    filter needs single rows): `sockets` builds them on first use, `json_chunks` formats them
    directly. Either way the sockets and their JSON are the same. An immutable value like a
    frozen dataclass (see portkit.sockets._value); `_processes` takes no part in equality.
    """

    _fields = (
        "_rows",
        "backend",
        "namespaces",
        "processes_looked_up",
        "processes_complete",
        "hidden_pids",
        "warnings",
        "counted",
        "_processes",
    )
    _uncompared = frozenset({"_processes"})
    __slots__ = (*_fields, "_sockets", "_ifnames")
    _rows: tuple[Socket | RawRows, ...]
    backend: str
    namespaces: tuple[_netns.Namespace, ...]
    processes_looked_up: bool
    processes_complete: bool
    hidden_pids: int
    warnings: tuple[str, ...]
    counted: dict[str | None, int]
    _processes: dict[int, ProcessInfo]
    _sockets: tuple[Socket, ...] | None  # `sockets`, once built
    _ifnames: dict[str | None, dict[int, str]]  # per namespace label: device index -> name, once read

    def __init__(
        self,
        _rows: tuple[Socket | RawRows, ...],
        backend: str,
        namespaces: tuple[_netns.Namespace, ...],
        processes_looked_up: bool = False,
        processes_complete: bool = True,
        hidden_pids: int = 0,
        warnings: tuple[str, ...] = (),
        counted: dict[str | None, int] | None = None,
        _processes: dict[int, ProcessInfo] | None = None,
    ) -> None:
        setter = object.__setattr__
        setter(self, "_rows", _rows)
        setter(self, "backend", backend)
        setter(self, "namespaces", namespaces)
        setter(self, "processes_looked_up", processes_looked_up)
        setter(self, "processes_complete", processes_complete)
        setter(self, "hidden_pids", hidden_pids)
        setter(self, "warnings", warnings)
        setter(self, "counted", {} if counted is None else counted)
        setter(self, "_processes", {} if _processes is None else _processes)
        setter(self, "_sockets", None)
        setter(self, "_ifnames", {})

    def __eq__(self, other: object) -> bool:
        # By sockets, not by how they are stored: lazy and built rows of one table are equal.
        if not isinstance(other, Inventory):
            return NotImplemented
        return self.sockets == other.sockets and self._compared()[1:] == other._compared()[1:]

    __hash__ = FrozenValue.__hash__  # defining __eq__ alone would make the class unhashable

    @property
    def sockets(self) -> tuple[Socket, ...]:
        """Every socket found, in ss's order."""
        built = self._sockets
        if built is None:
            built = _built(self._rows)
            object.__setattr__(self, "_sockets", built)  # a cache: the value never changes
        return built

    @property
    def processes(self) -> dict[int, ProcessInfo]:
        """Every process that holds one of the sockets, by pid."""
        self.sockets  # noqa: B018 (processes of RawRows are described as they are built)
        return self._processes

    def interface_name(self, row: Socket) -> str:
        """The device `row` is bound to (SO_BINDTODEVICE, or an IPv6 link-local address's scope),
        named in the row's namespace as `ss` names it; `if7`, as `ss` writes an index it cannot
        name, when that namespace cannot be read. Empty for a socket bound to no device."""
        if not row.interface:
            return ""
        names = self._ifnames.get(row.netns)
        if names is None:
            names = {}
            for namespace in self.namespaces:
                if namespace.label == row.netns:
                    try:
                        import socket

                        names = dict(_netns.run_in(namespace, socket.if_nameindex))
                    except OSError:
                        pass
                    break
            self._ifnames[row.netns] = names  # a cache: the rows were read at one moment
        return names.get(row.interface, f"if{row.interface}")

    def owner_unknown(self, row: Socket) -> bool:
        """True when a process holds this socket but this user may not see which (root would).

        Only other users' sockets qualify: our own processes' fds are always readable.
        """
        return (
            self.processes_looked_up
            and not row.processes
            and not self.processes_complete
            and row.inode != 0
            and row.uid != os.geteuid()
        )

    def root_note(self) -> str:
        if self.processes_complete or not self.processes_looked_up:
            return ""
        return (
            f"not running as root: {self.hidden_pids} processes' file descriptors are unreadable, "
            "so sockets of other users show no process; root would name them"
        )

    def _header(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "namespaces": [
                {"name": ns.label, "inode": ns.inode, "current": ns.path is None} for ns in self.namespaces
            ],
            "processes_looked_up": self.processes_looked_up,
            "processes_complete": self.processes_complete,
            "warnings": list(self.warnings),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self._header(),
            "sockets": [s.to_json() for s in self.sockets],
            "processes": {str(pid): p.to_json() for pid, p in sorted(self._processes.items())},
        }

    def json_chunks(self) -> Iterator[str]:
        """`to_json()` as JSON text, one socket per line, built without a dict per row.

        Equal to `json.dumps(self.to_json())` once parsed; rows still in the kernel's bytes
        (RawRows) are written from them without becoming Sockets. The writers, and why they
        exist, are portkit.sockets._jsonout.
        """
        from portkit.sockets._jsonout import inventory_chunks

        return inventory_chunks(self, self._header())


def _built(rows: Iterable[Socket | RawRows]) -> tuple[Socket, ...]:
    """The Sockets of rows that may include RawRows, in order."""
    out: list[Socket] = []
    for row in rows:
        if isinstance(row, Socket):
            out.append(row)
        else:
            out.extend(row.build())
    return tuple(out)


def _read_namespace(
    namespace: _netns.Namespace,
    query: SocketQuery,
    backend: str,
    owners: Holders | None = None,
    lazy: bool = False,
) -> tuple[Sequence[Socket | RawRows], str, int]:
    """The rows of one namespace through netlink when possible, and how many were only counted."""
    tally = [0]

    fell_back: list[Transport] = []

    def via_netlink() -> list[Socket | RawRows]:
        from portkit.sockets._netlink import DumpError, dump_all

        rows: list[Socket | RawRows] = []
        for transport in query.transports:
            try:
                rows.extend(
                    dump_all(
                        [transport],
                        query.families,
                        query.kernel_states(transport),
                        bytecode=query.bytecode_for(transport),
                        tcp_info=query.tcp_info,
                        netns=namespace.label,
                        owners=owners,
                        count_states=query.count_states if transport is Transport.TCP else (),
                        tally=tally,
                        lazy=lazy,
                    )
                )
            except DumpError:
                if transport is not Transport.RAW:
                    raise
                # raw_diag is an optional module; /proc/net/raw always exists.
                rows.extend(_with_owners(via_proc([transport]), owners))
                fell_back.append(transport)
        return rows

    def via_proc(transports: Sequence[Transport] = query.transports, root: str = "") -> list[Socket]:
        from portkit.sockets._procnet import read_tables

        rows: list[Socket] = []
        for transport in transports:
            matches = [m for m in query.ports if m.applies_to(transport.value)]
            counting = query.count_states if transport is Transport.TCP else frozenset()
            states = query.kernel_states(transport)

            def keep(family: int, state: TcpState, sport: int, dport: int) -> bool:
                if not all(m.matches(sport, dport) for m in matches):  # noqa: B023
                    return False
                if state in counting:  # noqa: B023
                    tally[0] += 1
                    return False
                return state in states  # noqa: B023 (called before the loop moves on)

            rows.extend(
                read_tables(
                    [transport],
                    query.families,
                    netns=namespace.label,
                    keep=keep,
                    root=root or "/proc/thread-self/net",
                )
            )
        return rows

    def via_proc_owned() -> list[Socket]:
        return _with_owners(via_proc(), owners)

    def via_member() -> list[Socket]:
        # Without root: a namespace's tables are still readable through a process living in it.
        return _with_owners(via_proc(root=f"/proc/{namespace.pid}/net"), owners)

    if backend == "proc":
        try:
            return _netns.run_in(namespace, via_proc_owned), "proc", tally[0]
        except PortkitError:
            if namespace.pid:
                tally[0] = 0
                return via_member(), "proc", tally[0]
            raise
    try:
        rows = _netns.run_in(namespace, via_netlink)
        return rows, "netlink+proc" if fell_back else "netlink", tally[0]
    except PortkitError:
        if namespace.pid:
            tally[0] = 0
            return via_member(), "proc", tally[0]
        raise
    except OSError:
        if backend == "netlink":
            raise
        tally[0] = 0
        return _netns.run_in(namespace, via_proc_owned), "proc", tally[0]


def _with_owners(rows: list[Socket], owners: Holders | None) -> list[Socket]:
    if owners is None:
        return rows
    new = tuple.__new__
    # Concatenation is the fastest way to swap one field of a tuple.
    return [
        row
        if row.inode not in owners
        else new(Socket, row[:_PROCESSES] + (owners.get(row.inode),) + row[_PROCESSES + 1 :])  # noqa: RUF005
        for row in rows
    ]


def list_sockets(
    query: SocketQuery | None = None,
    *,
    netns: str | None = None,
    all_netns: bool = False,
    backend: str = "auto",
) -> Inventory:
    """The sockets matching `query`, in this namespace, a named one (`netns`), or all of them."""
    query = query or SocketQuery()
    namespaces = _namespaces(netns, all_netns, backend)
    rows: list[Socket | RawRows] = []
    used: set[str] = set()
    warnings: list[str] = []
    counted: dict[str | None, int] = {}
    owners: OwnerMap | None = None
    processes: dict[int, ProcessInfo] = {}
    by_inode: Holders | None = None
    if query.needs_processes and not query.listening and not query.ports:
        # The whole table is wanted, so no early stop could pay off: scan /proc first and let
        # the decoder attach processes as it builds each row, instead of rebuilding every row.
        from portkit.sockets._procs import Holders, find_owners

        owners = find_owners(None)
        by_inode = Holders(owners)
        processes = by_inode.processes
    filtered = _post_filters(query)
    # Rows nobody looks at one by one stay in the kernel's bytes until used (see RawRows).
    lazy = not filtered and not (query.needs_processes and owners is None)
    for namespace in namespaces:
        try:
            found, how, tallied = _read_namespace(namespace, query, backend, by_inode, lazy)
        except (PortkitError, OSError) as exc:
            if not all_netns:
                if isinstance(exc, PortkitError):
                    raise
                raise PortkitError(f"cannot read sockets of {namespace}: {exc}") from None
            warnings.append(f"skipped network namespace {namespace}: {exc}")
            continue
        rows.extend(found)
        used.add(how)
        if query.count_states:
            counted[namespace.label] = tallied
    if query.needs_processes and owners is None:
        attributed, owners, processes = attribute_rows(_built(rows))
        rows = list(attributed)
    kept = tuple(row for row in _built(rows) if query.keeps(row)) if filtered else tuple(rows)
    if owners is not None and (filtered or by_inode is None):
        # Holders describes only the processes of listed rows; a filter may have dropped some.
        held = {id(row.processes): row.processes for row in _built(kept)}
        wanted = {p.pid for procs in held.values() for p in procs}
        processes = {pid: info for pid, info in processes.items() if pid in wanted}
    return Inventory(
        _rows=kept,
        backend="+".join(sorted({part for how in used for part in how.split("+")}, reverse=True))
        or ("proc" if backend == "proc" else "netlink"),
        namespaces=tuple(namespaces),
        processes_looked_up=owners is not None,
        processes_complete=owners.complete if owners is not None else True,
        hidden_pids=owners.hidden_pids if owners is not None else 0,
        warnings=tuple(warnings),
        counted=counted,
        _processes=processes,
    )


def _namespaces(netns: str | None, all_netns: bool, backend: str) -> list[_netns.Namespace]:
    if backend not in BACKENDS:
        raise UsageError(f"invalid backend {backend!r}: expected one of {', '.join(BACKENDS)}")
    if all_netns and netns is not None:
        raise UsageError("--netns and --all-netns exclude each other: give one of them")
    if all_netns:
        return _netns.all_namespaces()
    if netns is not None:  # "" too: an unset shell variable must not mean this host
        return [_netns.named_namespace(netns)]
    return [_netns.Namespace(None, _netns.current_inode(), None, os.getpid())]


def _post_filters(query: SocketQuery) -> bool:
    return bool(query.uids or query.pids or query.process_names or query.listening)


def attribute_rows(rows: Sequence[Socket]) -> tuple[list[Socket], OwnerMap, dict[int, ProcessInfo]]:
    """Rows with their processes filled in, from one scan of /proc/*/fd (every holder of each
    row's inode: a socket inherited across fork() is held by each process that has it)."""
    from portkit.sockets._procs import Holders, find_owners

    wanted = {row.inode for row in rows if row.inode}
    owners = find_owners(wanted)
    holders = Holders(owners)
    return _with_owners(list(rows), holders), owners, holders.processes


def parse_user(text: str) -> int:
    """A user name or numeric uid, as `--user` takes it."""
    from portkit.errors import quote
    from portkit.model.ports import parse_decimal

    raw = text.strip()
    uid = parse_decimal(raw)  # ASCII digits only: str.isdigit() and int() also take '²'
    if uid is not None and uid < 1 << 32:
        return uid
    import pwd

    try:
        return pwd.getpwnam(raw).pw_uid
    except (KeyError, ValueError):  # ValueError: a NUL byte in the name
        raise UsageError(
            f"invalid user {quote(text)}: expected a user name from /etc/passwd or a numeric uid"
        ) from None
