"""The host overview: listeners grouped by exposure, their connections, and what is worth a look.

Pure: it takes rows and a registry and computes; `portkit overview` does the reading.
The "worth a look" rules are a table, so adding one is adding a line.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portkit.model.protocols import Transport
from portkit.sockets._model import Socket, TcpState
from portkit.sockets._process import ProcessInfo

if TYPE_CHECKING:
    from portkit.registry import Registry, Service


class Exposure(enum.Enum):
    """Who can reach a listener, judged from its bind address."""

    ALL = "all interfaces"
    SPECIFIC = "specific address"
    LOOPBACK = "loopback only"

    def __str__(self) -> str:
        return self.value


# The kernel gives lo this index in every network namespace (include/net/flow.h).
LOOPBACK_IFINDEX = 1


def exposure_of(address: str, interface: int = 0) -> Exposure:
    """Who can reach a socket bound to `address` (and, with SO_BINDTODEVICE, to the device whose
    index is `interface`). A socket bound to lo takes only packets that arrive on lo, which this
    host alone sends, whatever its address; one bound to another device stays `ALL` or
    `SPECIFIC` by its address (it is never said to be less exposed than it may be)."""
    if interface == LOOPBACK_IFINDEX:
        return Exposure.LOOPBACK
    ip = ipaddress.ip_address(address)
    if ip.is_unspecified:
        return Exposure.ALL
    if ip.is_loopback or (isinstance(ip, ipaddress.IPv6Address) and (ip.ipv4_mapped or ip).is_loopback):
        return Exposure.LOOPBACK
    return Exposure.SPECIFIC


@dataclass(frozen=True)
class ServiceFacts:
    """What the registry says about a port: a name, a category and a risk note (each may be empty).

    The overview contacts no service, so this is not a `portkit.model.ServiceRecord` (what a
    service said when probed): it is the registry's view of the port number, plus the
    category and risk notes that only the registry keeps.
    """

    name: str = ""
    category: str = ""
    risk: str = ""
    alternative: str = ""


@dataclass(frozen=True)
class Listener:
    """One listening service: a transport and port bound on one or more addresses by the same owner."""

    transport: Transport
    port: int
    exposure: Exposure
    addresses: tuple[str, ...]
    processes: tuple[ProcessInfo, ...]
    uid: int
    netns: str | None
    service: ServiceFacts
    established: int = 0
    owner_unknown: bool = False

    @property
    def units(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p.unit for p in self.processes if p.unit))

    @property
    def containers(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys(p.container_name or p.container[:12] for p in self.processes if p.container)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "protocol": self.transport.value,
            "port": self.port,
            "exposure": self.exposure.name.lower(),
            "addresses": list(self.addresses),
            "service": self.service.name or None,
            "category": self.service.category or None,
            "risk": self.service.risk or None,
            "processes": [{"pid": p.pid, "name": p.name, "user": p.user} for p in self.processes],
            "units": list(self.units),
            "containers": list(self.containers),
            "uid": self.uid,
            "netns": self.netns,
            "established": self.established,
            "owner_unknown": self.owner_unknown,
        }


@dataclass(frozen=True)
class Concern:
    """One item of the "worth a look" list."""

    listener: Listener
    reason: str

    def __str__(self) -> str:
        listener = self.listener
        who = ", ".join(str(p) for p in listener.processes) or "unknown process"
        name = listener.service.name or "unknown service"
        where = f"{listener.exposure}" + (f" of netns {listener.netns}" if listener.netns else "")
        return f"{listener.port}/{listener.transport} ({name}, {who}) on {where}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        listener = self.listener
        return {
            "protocol": listener.transport.value,
            "port": listener.port,
            "netns": listener.netns,
            "reason": self.reason,
        }


def _risk_rule(l: Listener) -> str:  # noqa: E741
    if not l.service.risk:
        return ""
    safer = f"; safer: {l.service.alternative}" if l.service.alternative else ""
    return f"{l.service.risk}{safer}"


def _database_rule(l: Listener) -> str:  # noqa: E741
    if l.service.category in ("database", "cache") and not l.service.risk:
        return f"a {l.service.category} reachable from the network; bind it to 127.0.0.1 or firewall it"
    return ""


def _unknown_root_rule(l: Listener) -> str:  # noqa: E741
    if l.uid == 0 and not l.service.name and l.exposure is Exposure.ALL:
        return "a root-owned listener on an unregistered port, open on every interface"
    return ""


# Rules that apply to listeners reachable from outside (all interfaces or a specific address).
EXPOSED_RULES: tuple[Callable[[Listener], str], ...] = (_risk_rule, _database_rule, _unknown_root_rule)


@dataclass(frozen=True)
class Overview:
    """This host's listeners by exposure, with connection counts and a short list of concerns."""

    listeners: tuple[Listener, ...]
    concerns: tuple[Concern, ...]
    established_total: int
    root_note: str = ""

    def by_exposure(self) -> dict[Exposure, list[Listener]]:
        groups: dict[Exposure, list[Listener]] = {e: [] for e in Exposure}
        for listener in self.listeners:
            groups[listener.exposure].append(listener)
        return groups

    def to_json(self) -> dict[str, Any]:
        return {
            "listeners": [item.to_json() for item in self.listeners],
            "worth_a_look": [c.to_json() for c in self.concerns],
            "established_total": self.established_total,
            "root_note": self.root_note or None,
        }


def build_overview(
    listeners: Iterable[Socket],
    connections: Sequence[Socket],
    facts: Callable[[int, Transport], ServiceFacts],
    *,
    owner_unknown: Callable[[Socket], bool] = lambda s: False,
    root_note: str = "",
) -> Overview:
    """Group listening rows into listeners and count the established connections each one serves."""
    groups: dict[tuple[Any, ...], list[Socket]] = {}
    for row in listeners:
        if not row.is_listener:
            continue
        key = (
            row.transport,
            row.local_port,
            exposure_of(row.local_address, row.interface),
            row.netns,
            tuple(p.pid for p in row.processes),
            row.uid,
        )
        groups.setdefault(key, []).append(row)
    served: dict[tuple[str | None, int], list[Socket]] = {}
    for conn in connections:
        if conn.transport is Transport.TCP and conn.state is TcpState.ESTABLISHED:
            served.setdefault((conn.netns, conn.local_port), []).append(conn)
    built: list[Listener] = []
    for (transport, port, exposure, netns, _pids, uid), rows in groups.items():
        addresses = tuple(dict.fromkeys(r.local_address for r in rows))
        established = 0
        if transport is Transport.TCP:
            # A wildcard bound to lo (loopback exposure) serves every local address too.
            wildcard = exposure is Exposure.ALL or any(
                ipaddress.ip_address(a).is_unspecified for a in addresses
            )
            established = sum(
                1 for c in served.get((netns, port), ()) if wildcard or c.local_address in addresses
            )
        built.append(
            Listener(
                transport=transport,
                port=port,
                exposure=exposure,
                addresses=addresses,
                processes=rows[0].processes,
                uid=uid,
                netns=netns,
                service=facts(port, transport),
                established=established,
                owner_unknown=any(owner_unknown(r) for r in rows),
            )
        )
    order = {e: i for i, e in enumerate(Exposure)}
    built.sort(key=lambda item: (order[item.exposure], item.netns or "", item.port, item.transport.value))
    concerns = []
    for listener in built:
        if listener.exposure is Exposure.LOOPBACK:
            continue
        for rule in EXPOSED_RULES:
            reason = rule(listener)
            if reason:
                concerns.append(Concern(listener, reason))
                break
    return Overview(
        listeners=tuple(built),
        concerns=tuple(concerns),
        established_total=sum(1 for c in connections if c.state is TcpState.ESTABLISHED),
        root_note=root_note,
    )


def registry_facts(registry: Registry) -> Callable[[int, Transport], ServiceFacts]:
    """Service facts from `registry` (the command line gives portkit's default), cached per port.

    The built-in table speaks first (loaded once: an overview asks about many ports): when
    several of its entries share a port (ssh, sftp and scp on 22), the one with a risk note is
    the service itself, then the most common one. For ports it does not know, the name is
    `Registry.name_for` (/etc/services, IANA, nmap-services, each asked about that one port).
    """
    from portkit.registry import Source

    builtin: dict[tuple[Any, int], Any] = {}
    for service in registry.layer(Source.BUILTIN):
        if service.port == service.last_port:
            key = (service.protocol, service.port)
            builtin[key] = _better(builtin.get(key), service)
    cache: dict[tuple[int, Transport], ServiceFacts] = {}

    def facts(port: int, transport: Transport) -> ServiceFacts:
        key = (port, transport)
        found = cache.get(key)
        if found is None:
            protocol = transport if transport.has_ports else None
            entry = builtin.get((protocol, port)) if protocol is not None else None
            if protocol is None:
                found = ServiceFacts()
            elif entry is not None:
                found = ServiceFacts(entry.name, entry.category, entry.risk, entry.alternative)
            else:
                found = ServiceFacts(name=registry.name_for(port, protocol))
            cache[key] = found
        return found

    return facts


def _better(best: Service | None, service: Service) -> Service:
    """Of two built-in entries on one port: the one with a risk note, then the more common one
    (the first among equals)."""
    if best is None or (not best.risk, best.commonness) > (not service.risk, service.commonness):
        return service
    return best


def port_facts(registry: Registry, port: int, transport: Transport) -> ServiceFacts:
    """`registry_facts(registry)(port, transport)` for a single port, reading only the built-in
    table's lines for that port (a one-port command such as `portkit who` asks nothing else)."""
    protocol = transport if transport.has_ports else None
    if protocol is None:
        return ServiceFacts()
    best = None
    for service in registry.builtin_for(port, protocol):
        if service.port == service.last_port:
            best = _better(best, service)
    if best is not None:
        return ServiceFacts(best.name, best.category, best.risk, best.alternative)
    return ServiceFacts(name=registry.name_for(port, protocol))
