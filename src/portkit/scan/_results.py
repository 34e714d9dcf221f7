"""What a scan found: per port, per host and for the whole scan, as typed values with `to_json()`.

A port's service is the shared `portkit.model.ServiceRecord`: the scanner fills its name from
the registry with method "table", as nmap does; service detection (`portkit.services`) replaces
it with what the service said (method "probed", with its TLS layer and HTTP face) through
`HostResult.attach`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from portkit.model import Transport
from portkit.model.portstate import PortState, Reason
from portkit.model.services import ServiceRecord, TlsInfo

# nmap collapses a state into "Not shown: N ..." when more than this many ports share it.
COLLAPSE_OVER = 25


@dataclass(frozen=True, slots=True)
class PortResult:
    port: int
    protocol: Transport
    state: PortState
    reason: Reason
    ttl: int = 0
    service: ServiceRecord | None = None

    @property
    def tls(self) -> TlsInfo | None:
        """The TLS layer service detection found on the port (part of its service record)."""
        return self.service.tls if self.service is not None else None

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol} {self.state} ({self.reason})"

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "protocol": self.protocol.value,
            "state": self.state.value,
            "reason": self.reason.value,
            # portkit's notes on a detection stay out of the scan's port (nmap has no such field)
            "service": self.service.to_json(notes=False) if self.service else None,
            "ttl": self.ttl,
            "tls": self.tls.to_json() if self.tls else None,
        }


@dataclass(frozen=True, slots=True)
class ExtraPorts:
    """Ports collapsed out of the listing: `count` ports in `state`, by reason."""

    state: PortState
    count: int
    reasons: tuple[tuple[Reason, int], ...]
    ports: tuple[str, ...] = ()  # per reason, the ports as ranges ("1-21,23-99"); nmap's extrareasons

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "state": self.state.value,
            "count": self.count,
            "reasons": {r.value: n for r, n in self.reasons},
        }
        if self.ports:
            doc["ports"] = {r.value: ranges for (r, _), ranges in zip(self.reasons, self.ports, strict=True)}
        return doc


@dataclass(slots=True)
class HostResult:
    address: str
    hostnames: tuple[str, ...] = ()
    status: str = "up"  # "up", "down" or "timeout"
    status_reason: str = "user-set"
    ports: list[PortResult] = field(default_factory=list)
    extraports: list[ExtraPorts] = field(default_factory=list)
    rtt: float | None = None  # smoothed RTT in seconds, when measured
    rttvar: float | None = None  # its measured variation (seconds), nmap's rttvar
    timeout: float | None = None  # the probe timeout the scan ended with (seconds), nmap's "to"
    mac: str = ""  # link-layer address, for hosts on a directly attached network ("A2:1B:...")
    mac_vendor: str = ""  # the MAC prefix's owner (nmap-mac-prefixes), when known
    started: float = 0.0
    ended: float = 0.0

    @property
    def shown_address(self) -> str:
        """The address as reports give it: without an IPv6 zone (`fe80::1`, not `fe80::1%eth0`),
        as nmap writes it; `address` keeps the zone, which a new connection to it needs."""
        return self.address.partition("%")[0]

    @property
    def all_states(self) -> Counter[PortState]:
        counts: Counter[PortState] = Counter(p.state for p in self.ports)
        for extra in self.extraports:
            counts[extra.state] += extra.count
        return counts

    def port(self, number: int, protocol: Transport = Transport.TCP) -> PortResult | None:
        return next((p for p in self.ports if p.port == number and p.protocol is protocol), None)

    def attach(self, number: int, protocol: Transport, service: ServiceRecord) -> PortResult:
        """Replace a listed port's service record (service detection calls this)."""
        for i, found in enumerate(self.ports):
            if found.port == number and found.protocol is protocol:
                self.ports[i] = dataclasses.replace(found, service=service)
                return self.ports[i]
        raise KeyError(f"{number}/{protocol} is not a listed port of {self.address}")

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.shown_address,
            "hostnames": list(self.hostnames),
            "status": self.status,
            "status_reason": self.status_reason,
            "ports": [p.to_json() for p in self.ports],
            "extraports": [e.to_json() for e in self.extraports],
            "mac": self.mac or None,
            "mac_vendor": self.mac_vendor or None,
        }


@dataclass
class ScanResult:
    scan_type: str  # "connect", "syn", "udp", "ack" or "ping" (-sn)
    protocol: Transport
    ports_spec: str
    nports: int
    args: dict[str, Any]
    command: str
    start: float
    elapsed: float = 0.0
    hosts: list[HostResult] = field(default_factory=list)
    hosts_total: int = 0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)
    probes_sent: int = 0
    services: str = ""  # the scanned ports as ranges ("1-1024,8080"), nmap's scaninfo services
    service_scan: bool = False  # service detection ran on the open ports (nmap's -sV)
    unlisted: list[HostResult] = field(default_factory=list)  # scanned, but not shown (--open)

    @property
    def hosts_up(self) -> int:
        """Hosts found up, those the host timeout cut short included (they answered), as nmap counts."""
        return sum(1 for h in (*self.hosts, *self.unlisted) if h.status in ("up", "timeout"))

    def state_counts(self) -> Counter[PortState]:
        total: Counter[PortState] = Counter()
        for host in (*self.hosts, *self.unlisted):
            total.update(host.all_states)
        return total

    def to_json(self, hosts: bool = True) -> dict[str, Any]:
        counts = self.state_counts()
        return {
            "scan": {
                **self.args,
                "type": self.scan_type,
                "protocol": self.protocol.value,
                "ports": self.ports_spec,
                "command": self.command,
                "start": self.start,
                "elapsed": round(self.elapsed, 3),
                "interrupted": self.interrupted,
                "notes": list(self.notes),
                "hosts_total": self.hosts_total,
                "hosts_up": self.hosts_up,
                "probes_sent": self.probes_sent,
                "states": {s.value: counts[s] for s in PortState if counts[s]},
            },
            "hosts": [h.to_json() for h in self.hosts] if hosts else [],
        }


# States nmap's --open still lists: open, and those where open is a possibility.
_POSSIBLY_OPEN = (PortState.OPEN, PortState.OPEN_FILTERED, PortState.UNFILTERED)


def open_view(result: ScanResult) -> ScanResult:
    """The result as nmap's `--open` shows it, in every format.

    Closed and filtered ports are collapsed into "Not shown" counts whatever their number
    (other states keep the usual rule), and hosts with no port that may be open are left out.
    """
    from portkit.scan._assemble import port_ranges

    hosts, unlisted = [], list(result.unlisted)
    for host in result.hosts:
        if not any(h in _POSSIBLY_OPEN for h in host.all_states):
            unlisted.append(host)
            continue
        hidden = [p for p in host.ports if p.state not in _POSSIBLY_OPEN]
        extras = list(host.extraports)
        for state in {p.state for p in hidden}:
            ports = [p for p in hidden if p.state is state]
            reasons: Counter[Reason] = Counter(p.reason for p in ports)
            common = reasons.most_common()
            ranges = tuple(port_ranges([p.port for p in ports if p.reason is r]) for r, _ in common)
            extras.append(ExtraPorts(state, len(ports), tuple(common), ranges))
        extras.sort(key=lambda e: -e.count)
        shown = [p for p in host.ports if p.state in _POSSIBLY_OPEN]
        hosts.append(dataclasses.replace(host, ports=shown, extraports=extras))
    return dataclasses.replace(result, hosts=hosts, unlisted=unlisted)
