"""The values the socket inventory deals in: transports, TCP states, processes and sockets.

A `Socket` is one row of the kernel's socket table, as `ss` shows it. It is a named tuple
rather than a frozen dataclass on purpose: an inventory can hold tens of thousands of
rows and building a tuple costs a fraction of a dataclass's `__init__`, which is what
keeps `portkit ls --all` as fast as `ss`. It is still typed, immutable and hashable.

This module is on the path of `portkit ls --json`, so it imports neither `typing` nor
`dataclasses` at run time (portkit.sockets, "Import cost"). `enum` is free there (the console
script's `re` loads it).
"""

from __future__ import annotations

import enum
from collections import namedtuple

from portkit.errors import UsageError
from portkit.model.protocols import Transport

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    # Imported lazily at run time: `portkit ls` should not pay for the model's dataclasses.
    from typing import Any, NamedTuple

    from portkit.model import Endpoint
    from portkit.sockets._process import ProcessInfo
    from portkit.sockets._tcpinfo import TcpInfo


class TcpState(enum.IntEnum):
    """The kernel's socket states (include/net/tcp_states.h); UDP and raw use ESTABLISHED and CLOSE."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12
    BOUND_INACTIVE = 13

    @property
    def label(self) -> str:
        """The name `ss` prints for this state (ESTAB, UNCONN, TIME-WAIT, ...)."""
        return _LABELS[self]

    def __str__(self) -> str:
        return self.label

    @classmethod
    def parse_filter(cls, text: str) -> frozenset[TcpState]:
        """An `ss`-style state name or group (`established`, `time-wait`, `connected`, `all`)."""
        key = text.strip().lower().replace("_", "-")
        found = _STATE_FILTERS.get(key)
        if found is None:
            accepted = ", ".join(_STATE_FILTERS)
            raise UsageError(f"invalid state {text!r}: expected one of {accepted}")
        return found


_LABELS = {
    TcpState.ESTABLISHED: "ESTAB",
    TcpState.SYN_SENT: "SYN-SENT",
    TcpState.SYN_RECV: "SYN-RECV",
    TcpState.FIN_WAIT1: "FIN-WAIT-1",
    TcpState.FIN_WAIT2: "FIN-WAIT-2",
    TcpState.TIME_WAIT: "TIME-WAIT",
    TcpState.CLOSE: "UNCONN",
    TcpState.CLOSE_WAIT: "CLOSE-WAIT",
    TcpState.LAST_ACK: "LAST-ACK",
    TcpState.LISTEN: "LISTEN",
    TcpState.CLOSING: "CLOSING",
    TcpState.NEW_SYN_RECV: "SYN-RECV",
    TcpState.BOUND_INACTIVE: "UNCONN",
}

ALL_STATES = frozenset(TcpState)
_S = TcpState
_CONNECTED = ALL_STATES - {_S.LISTEN, _S.CLOSE, _S.BOUND_INACTIVE, _S.SYN_RECV, _S.NEW_SYN_RECV}
# The same names and groups as `ss state FILTER` (ss(8), "STATE-FILTER").
_STATE_FILTERS: dict[str, frozenset[TcpState]] = {
    "established": frozenset({_S.ESTABLISHED}),
    "syn-sent": frozenset({_S.SYN_SENT}),
    "syn-recv": frozenset({_S.SYN_RECV, _S.NEW_SYN_RECV}),
    "fin-wait-1": frozenset({_S.FIN_WAIT1}),
    "fin-wait-2": frozenset({_S.FIN_WAIT2}),
    "time-wait": frozenset({_S.TIME_WAIT}),
    "closed": frozenset({_S.CLOSE}),
    "unconn": frozenset({_S.CLOSE}),
    "close-wait": frozenset({_S.CLOSE_WAIT}),
    "last-ack": frozenset({_S.LAST_ACK}),
    "listen": frozenset({_S.LISTEN}),
    "listening": frozenset({_S.LISTEN}),
    "closing": frozenset({_S.CLOSING}),
    "connected": _CONNECTED,
    "synchronized": _CONNECTED - {_S.SYN_SENT},
    "bucket": frozenset({_S.SYN_RECV, _S.NEW_SYN_RECV, _S.TIME_WAIT}),
    "big": ALL_STATES - {_S.SYN_RECV, _S.NEW_SYN_RECV, _S.TIME_WAIT},
    "all": ALL_STATES,
}


if TYPE_CHECKING:

    class _SocketFields(NamedTuple):
        transport: Transport
        family: int
        state: TcpState
        local_address: str
        local_port: int
        remote_address: str
        remote_port: int
        recv_q: int
        send_q: int
        uid: int
        inode: int
        interface: int
        netns: str | None = None
        processes: tuple[ProcessInfo, ...] = ()
        tcp_info: TcpInfo | None = None

else:
    # The same fields as above: collections.namedtuple is what typing.NamedTuple builds on.
    _SocketFields = namedtuple(
        "Socket",
        "transport family state local_address local_port remote_address remote_port "
        "recv_q send_q uid inode interface netns processes tcp_info",
        defaults=(None, (), None),
        module=__name__,
    )


class Socket(_SocketFields):
    """One kernel socket: transport, state, both endpoints, queues, owner and the processes holding it.

    Addresses are kept as the text `ss -n` prints (without brackets); `local` and `remote` give
    them as `portkit.model.Endpoint` values. For raw sockets the "port" is the IP protocol number,
    as in `ss -w`. `processes` is empty when no process was looked up or none could be seen.
    """

    __slots__ = ()

    @property
    def local(self) -> Endpoint:
        from portkit.model import Endpoint, parse_address

        return Endpoint(parse_address(self.local_address), self.local_port)

    @property
    def remote(self) -> Endpoint:
        from portkit.model import Endpoint, parse_address

        return Endpoint(parse_address(self.remote_address), self.remote_port)

    @property
    def protocol(self) -> Transport | None:
        """The port-bearing transport, or None for raw IP sockets (whose "port" is the IP protocol)."""
        return self.transport if self.transport.has_ports else None

    @property
    def is_listener(self) -> bool:
        """A TCP socket in LISTEN, or an unconnected UDP socket bound to a port (what `ss -l` shows)."""
        if self.transport is Transport.TCP:
            return self.state is TcpState.LISTEN
        return self.state is TcpState.CLOSE and self.remote_port == 0

    @property
    def local_text(self) -> str:
        return _endpoint_text(self.family, self.local_address, self.local_port)

    @property
    def remote_text(self) -> str:
        return _endpoint_text(self.family, self.remote_address, self.remote_port)

    def __str__(self) -> str:
        procs = ",".join(str(p) for p in self.processes)
        text = f"{self.transport} {self.state.label} {self.local_text} {self.remote_text}"
        return f"{text} {procs}" if procs else text

    def to_json(self) -> dict[str, Any]:
        """The row as JSON (docs/json.md, "sockets"); processes appear as pid and name only."""
        out: dict[str, Any] = {
            "protocol": self.transport.value,
            "family": self.family,
            "state": self.state.label,
            "local": {"address": self.local_address, "port": self.local_port},
            "remote": {"address": self.remote_address, "port": self.remote_port},
            "recv_q": self.recv_q,
            "send_q": self.send_q,
            "uid": self.uid,
            "inode": self.inode,
            "interface": self.interface or None,
            "netns": self.netns,
            "processes": [{"pid": p.pid, "name": p.name} for p in self.processes],
        }
        if self.tcp_info is not None:
            out["tcp_info"] = self.tcp_info.to_json()
        return out


def _endpoint_text(family: int, address: str, port: int) -> str:
    shown = port if port else "*"  # as ss prints an unset port
    return f"[{address}]:{shown}" if family == 6 else f"{address}:{shown}"
