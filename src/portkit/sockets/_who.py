"""`who PORT`: which process holds a port, and what to do about it.

`explain_port_use` is pure: it sorts the sockets on a port into holders (listeners and bound
sockets), connections they serve, TIME-WAIT leftovers and client ends, and derives the advice.
`who_holds` reads the kernel with a port filter, so it only ever sees that port's sockets.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portkit.errors import UsageError, quote
from portkit.model import Transport, validate_port
from portkit.sockets._bytecode import PortMatch
from portkit.sockets._inventory import Inventory, SocketQuery, attribute_rows, list_sockets
from portkit.sockets._model import Socket, TcpState
from portkit.sockets._process import ProcessInfo

if TYPE_CHECKING:
    from portkit.registry import Registry


@dataclass(frozen=True)
class Advice:
    """One way to free the port: a command line and what it acts on."""

    command: str
    target: str

    def __str__(self) -> str:
        return f"{self.command}    # {self.target}"

    def to_json(self) -> dict[str, str]:
        return {"command": self.command, "target": self.target}


def advice_for(process: ProcessInfo) -> Advice:
    """Stop the container, else the systemd service, else the process itself."""
    if process.container:
        name = process.container_name or process.container[:12]
        tool = {"docker": "docker stop", "podman": "podman stop", "cri-o": "crictl stop"}.get(
            process.container_runtime, "crictl stop"
        )
        return Advice(f"{tool} {name}", f"{process.container_runtime} container of {process}")
    if process.unit.endswith(".service") and not process.unit.startswith("user@"):
        user_unit = any(name == "systemd" for _, name in process.parents) and process.uid not in (0, -1)
        systemctl = "systemctl --user" if user_unit else "systemctl"
        return Advice(f"{systemctl} stop {process.unit}", f"systemd service running {process}")
    return Advice(f"kill {process.pid}", f"{process.name} ({process.command[:60]})")


_TIME_WAIT_NOTE = (
    "only TIME-WAIT sockets use it: connections that already closed, which the kernel keeps for "
    "about 60 seconds. A server that sets SO_REUSEADDR (most do) can bind it now; one that does "
    "not gets EADDRINUSE until they expire."
)
_CLIENT_NOTE = (
    "it is only the local end of outgoing (client) connections, not a service. A listener on it "
    "fails with EADDRINUSE unless both sockets set SO_REUSEADDR or it binds another address; the "
    "port frees when these connections close."
)


@dataclass(frozen=True)
class PortUse:
    """Everything on one port: who holds it, who is connected, and what that means."""

    port: int
    protocol: Transport | None
    holders: tuple[Socket, ...]
    connections: int
    time_wait: tuple[Socket, ...]
    clients: tuple[Socket, ...]
    service: str = ""
    root_note: str = ""
    risk: str = ""

    @property
    def exposed(self) -> bool:
        """Whether a holder listens beyond loopback (all interfaces or a specific address)."""
        from portkit.sockets._overview import Exposure, exposure_of

        return any(
            exposure_of(row.local_address, row.interface) is not Exposure.LOOPBACK for row in self.holders
        )

    @property
    def processes(self) -> tuple[ProcessInfo, ...]:
        seen: dict[int, ProcessInfo] = {}
        for row in self.holders:
            for process in row.processes:
                seen.setdefault(process.pid, process)
        return tuple(seen.values())

    @property
    def in_use(self) -> bool:
        return bool(self.holders or self.connections or self.time_wait or self.clients)

    @property
    def advice(self) -> tuple[Advice, ...]:
        return tuple(dict.fromkeys(advice_for(p) for p in self.processes))

    @property
    def explanation(self) -> str:
        if self.holders:
            return ""
        if self.clients:
            return _CLIENT_NOTE
        if self.time_wait:
            return _TIME_WAIT_NOTE
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "protocol": self.protocol.value if self.protocol else None,
            "service": self.service or None,
            "in_use": self.in_use,
            "holders": [row.to_json() for row in self.holders],
            "processes": [p.to_json() for p in self.processes],
            "connections": self.connections,
            "time_wait": len(self.time_wait),
            "clients": [row.to_json() for row in self.clients],
            "advice": [a.to_json() for a in self.advice],
            "explanation": self.explanation or None,
            "risk": self.risk or None,
            "exposed": self.exposed,
            "root_note": self.root_note or None,
        }


def explain_port_use(
    port: int,
    protocol: Transport | None,
    rows: Sequence[Socket],
    *,
    served: int = 0,
    service: str = "",
    root_note: str = "",
    risk: str = "",
) -> PortUse:
    """Sort the sockets whose local port is `port` into holders, connections, TIME-WAIT and clients.

    An established TCP socket counts as a served connection when a TCP listener on the port lives
    in its namespace, otherwise as a client end. `served` adds connections counted elsewhere.
    """
    mine = [r for r in rows if r.local_port == port]
    # A TCP socket in CLOSE is bound but not listening (yet): it holds the port all the same.
    holders = tuple(
        r for r in mine if r.is_listener or (r.transport is Transport.TCP and r.state is TcpState.CLOSE)
    )
    listening_in = {r.netns for r in holders if r.transport is Transport.TCP and r.state is TcpState.LISTEN}
    connections = served
    time_wait: list[Socket] = []
    clients: list[Socket] = []
    for row in mine:
        state = row.state
        if state is TcpState.LISTEN or (state is TcpState.CLOSE and row.remote_port == 0):
            continue
        if state is TcpState.TIME_WAIT:
            time_wait.append(row)
        elif row.transport is Transport.TCP and row.netns in listening_in:
            connections += 1
        else:
            clients.append(row)
    return PortUse(
        port=port,
        protocol=protocol,
        holders=holders,
        connections=connections,
        time_wait=tuple(time_wait),
        clients=tuple(clients),
        service=service,
        root_note=root_note,
        risk=risk,
    )


def parse_port_proto(text: str) -> tuple[int, Transport | None]:
    """`8080`, `53/udp`, `443/tcp` -> (port, protocol or None for both)."""
    number, sep, proto = text.strip().partition("/")
    if not number.isascii():  # validate_port's isdigit() lets '²' through to int()
        raise UsageError(f"invalid port {number!r}: ports are whole numbers 0-65535")
    port = validate_port(number)
    if not sep:
        return port, None
    if proto.strip().lower() not in ("tcp", "udp"):
        raise UsageError(
            f"invalid protocol in {quote(text)}: expected tcp or udp (portkit lists tcp and udp sockets)"
        )
    return port, Transport.parse(proto)


def who_holds(
    port: int,
    protocol: Transport | None = None,
    *,
    netns: str | None = None,
    all_netns: bool = False,
    backend: str = "auto",
    service_name: bool = True,
    registry: Registry | None = None,
) -> tuple[PortUse, Inventory]:
    """Who holds `port` (TCP and UDP unless `protocol` says), read with a kernel-side port filter.

    With `service_name`, `registry` names the port's service; without it this entry point
    takes portkit's default registry.
    """
    transports = (
        (Transport.TCP, Transport.UDP)
        if protocol is None
        else (Transport.TCP,)
        if protocol is Transport.TCP
        else (Transport.UDP,)
    )
    on_port = (PortMatch("src", ((port, port),)),)
    established = frozenset({TcpState.ESTABLISHED})
    # Established TCP sockets are counted, not built: a busy port has tens of thousands, and
    # where a listener lives they are simply the connections it serves.
    query = SocketQuery(transports=transports, ports=on_port, count_states=established)
    inventory = list_sockets(query, netns=netns, all_netns=all_netns, backend=backend)
    listening_in = {
        r.netns for r in inventory.sockets if r.transport is Transport.TCP and r.state is TcpState.LISTEN
    }
    rows = list(inventory.sockets)
    served = sum(n for label, n in inventory.counted.items() if label in listening_in)
    if any(n for label, n in inventory.counted.items() if label not in listening_in):
        # Established sockets with no listener behind them are client ends: those we list.
        tcp_established = SocketQuery(transports=(Transport.TCP,), states=established, ports=on_port)
        extra = list_sockets(tcp_established, netns=netns, all_netns=all_netns, backend=backend)
        rows.extend(r for r in extra.sockets if r.netns not in listening_in)
    # Only holders and client ends need their process.
    sorted_out = explain_port_use(port, protocol, rows)
    attributed, owners, processes = attribute_rows([*sorted_out.holders, *sorted_out.clients])
    by_inode = {row.inode: row for row in attributed if row.inode}
    final = tuple(by_inode.get(row.inode, row) if row.inode else row for row in rows)
    inventory = inventory.replace(
        _rows=final,
        processes_looked_up=True,
        processes_complete=owners.complete,
        hidden_pids=owners.hidden_pids,
        _processes=processes,
    )
    name = risk = ""
    if service_name:
        from portkit.sockets._overview import port_facts

        if registry is None:
            from portkit.registry import default_registry

            registry = default_registry()
        for transport in transports:
            found = port_facts(registry, port, transport)
            if found.name:
                name = found.name
                if found.risk:
                    risk = found.risk + (f"; safer: {found.alternative}" if found.alternative else "")
                break
    use = explain_port_use(
        port, protocol, final, served=served, service=name, root_note=inventory.root_note(), risk=risk
    )
    return use, inventory


def kill_holders(use: PortUse, sig: int = signal.SIGTERM) -> list[tuple[ProcessInfo, str]]:
    """Signal every process holding the port; returns (process, outcome) pairs."""
    outcomes: list[tuple[ProcessInfo, str]] = []
    for process in use.processes:
        try:
            os.kill(process.pid, sig)
            outcomes.append((process, f"sent {signal.Signals(sig).name}"))
        except ProcessLookupError:
            outcomes.append((process, "already gone"))
        except PermissionError:
            outcomes.append((process, "not permitted (run as root or as its owner)"))
    return outcomes
