"""What the ledger keeps about one port in one observation, and how portkit's results become it.

Pure: these functions take portkit's result objects (sockets, a scan, firewall decisions, a
diagnosis as JSON) and return `PortFact` values; `portkit.ledger._store` writes them. A fact is
the unit `portkit history` reads and `portkit diff` compares, so both speak this one vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from portkit.firewall import Decision, Ruleset
    from portkit.scan import ScanResult
    from portkit.sockets import Socket


@dataclass(frozen=True, order=True)
class Owner:
    """A process holding a listener, as the ledger remembers it.

    `identity` leaves the pid out: a service restarted by its unit gets a new pid but is the
    same owner (the change Wazuh's netstat diff reports and nobody wants).
    """

    name: str
    exe: str = ""
    user: str = ""
    unit: str = ""
    container: str = ""
    pid: int = 0

    @property
    def identity(self) -> tuple[str, str, str, str, str]:
        return (self.name, self.exe, self.user, self.unit, self.container)

    def __str__(self) -> str:
        where = self.container or self.unit
        pid = f"/{self.pid}" if self.pid else ""
        return f"{self.name}{pid}" + (f" ({where})" if where else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid or None,
            "exe": self.exe or None,
            "user": self.user or None,
            "unit": self.unit or None,
            "container": self.container or None,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Owner:
        def text(key: str) -> str:
            value = doc.get(key)
            return value if isinstance(value, str) else ""

        pid = doc.get("pid")
        return cls(
            name=text("name"),
            exe=text("exe"),
            user=text("user"),
            unit=text("unit"),
            container=text("container"),
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 else 0,
        )


@dataclass(frozen=True)
class PortFact:
    """One port as one observation saw it.

    `host` is the scanned address for scans and firewall decisions, and the recording host's
    name for inventories. `state` is the observation's word: `listening` (inventory), nmap's
    port state (scan), the verdict (firewall decision) or the diagnosis code.
    """

    port: int
    protocol: str
    host: str
    state: str
    address: str = ""  # bind address (inventory), destination address (firewall decision)
    netns: str = ""
    exposure: str = ""  # "loopback", "specific" or "all" (inventory)
    owners: tuple[Owner, ...] = ()
    service: str = ""  # the service name, then product and version when detected
    detail: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "protocol": self.protocol,
            "host": self.host,
            "state": self.state,
            "address": self.address or None,
            "netns": self.netns or None,
            "exposure": self.exposure or None,
            "owners": [o.to_json() for o in self.owners],
            "service": self.service or None,
            "detail": dict(self.detail),
        }


@dataclass(frozen=True)
class NetnsScope:
    """The network namespaces an inventory looked at ("" is the recording process's own).

    `every`: it looked at every namespace on the host but `skipped` (`ls --all-netns`), so a
    namespace that has gone since is covered too; else only `read`. A snapshot says a listener
    is gone only in a namespace it covers: `ls --record` reads one namespace, and a listener
    of another is not gone for it.
    """

    read: frozenset[str] = frozenset({""})
    every: bool = False
    skipped: frozenset[str] = frozenset()

    def covers(self, netns: str) -> bool:
        return netns in self.read or (self.every and netns not in self.skipped)

    def to_json(self) -> dict[str, Any]:
        # Reading every namespace, what was read is every namespace: only the skipped ones are
        # kept (a host with a thousand namespaces would repeat their names in each snapshot).
        if self.every:
            return {"every": True, "skipped": sorted(self.skipped)}
        return {"every": False, "read": sorted(self.read)}

    @classmethod
    def from_json(cls, doc: object) -> NetnsScope | None:
        """The scope an observation recorded, or None (recorded without one: covers all)."""
        if not isinstance(doc, dict):
            return None

        def names(key: str) -> frozenset[str]:
            value = doc.get(key)
            listed = value if isinstance(value, list) else []
            return frozenset(v for v in listed if isinstance(v, str))

        return cls(names("read"), doc.get("every") is True, names("skipped"))


def inventory_scope(inventory: Any, every: bool) -> NetnsScope:
    """What a `portkit.sockets.Inventory` looked at: its namespaces but those it had to skip."""
    skipped = {
        n.label or ""
        for n in inventory.namespaces
        if any(w.startswith(f"skipped network namespace {n}:") for w in inventory.warnings)
    }
    read = {n.label or "" for n in inventory.namespaces} - skipped
    return NetnsScope(frozenset(read), every, frozenset(skipped))


def owner_of_process(process: Any) -> Owner:
    """A `portkit.sockets.ProcessInfo` as an Owner (the executable is argv[0]'s first word)."""
    cmdline = tuple(process.cmdline)
    exe = cmdline[0].split()[0] if cmdline and cmdline[0].strip() else ""
    return Owner(
        name=process.name,
        exe=exe,
        user=process.user,
        unit=process.unit,
        container=process.container_name or process.container[:12],
        pid=process.pid,
    )


def exposure_name(address: str, interface: int = 0) -> str:
    from portkit.sockets import exposure_of

    try:
        return str(exposure_of(address, interface).name.lower())
    except ValueError:
        return ""


def inventory_facts(sockets: Iterable[Socket], host: str) -> list[PortFact]:
    """The listening sockets of an inventory as facts (one per socket; other rows are skipped)."""
    facts = []
    for row in sockets:
        if not row.is_listener or row.protocol is None:
            continue
        owners = tuple(sorted({owner_of_process(p) for p in row.processes}))
        facts.append(
            PortFact(
                port=row.local_port,
                protocol=row.transport.value,
                host=host,
                state="listening",
                address=row.local_address,
                netns=row.netns or "",
                exposure=exposure_name(row.local_address, row.interface),
                owners=owners,
                detail={"uid": row.uid},
            )
        )
    return facts


def service_text(name: str, product: str = "", version: str = "", extrainfo: str = "") -> str:
    """`name product version (extrainfo)`, as nmap's SERVICE and VERSION columns read together."""
    words = [w for w in (name, product, version) if w]
    if extrainfo:
        words.append(f"({extrainfo})")
    return " ".join(words)


def scan_facts(result: ScanResult) -> list[PortFact]:
    """Every port a scan listed, per host (ports collapsed into "Not shown" are not facts)."""
    facts = []
    for host in result.hosts:
        for port in host.ports:
            svc = port.service
            facts.append(
                PortFact(
                    port=port.port,
                    protocol=port.protocol.value,
                    host=host.address,
                    state=port.state.value,
                    service=service_text(svc.name, svc.product, svc.version, svc.extrainfo) if svc else "",
                    detail={"reason": port.reason.value, "scan": result.scan_type},
                )
            )
    return facts


def ruleset_fingerprint(ruleset: Ruleset) -> str:
    """sha256 of the normalised ruleset (portkit.firewall.canonical), its source left out.

    Two reads of the same rules (a file and the live kernel, or two `nft list` with different
    handles) give the same fingerprint.
    """
    from portkit.firewall import canonical

    doc = canonical(ruleset).to_json()
    doc.pop("source", None)
    doc.pop("notes", None)
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


_PROTOCOLS = {6: "tcp", 17: "udp", 132: "sctp"}


def decision_facts(decisions: Iterable[Decision], fingerprint: str) -> list[PortFact]:
    """Firewall decisions on flows with a destination port, as facts of that port."""
    facts = []
    for decision in decisions:
        packet = decision.packet
        protocol = _PROTOCOLS.get(packet.l4proto)
        if protocol is None or packet.dport is None:
            continue
        verdict = decision.verdict.value if decision.certain else "uncertain"
        facts.append(
            PortFact(
                port=packet.dport,
                protocol=protocol,
                host=str(packet.dst),
                state=verdict,
                address=str(packet.dst),
                detail={"flow": str(packet), "rule": decision.reason, "fingerprint": fingerprint},
            )
        )
    return facts


_TARGET = re.compile(r"(?P<host>.*):(?P<port>[0-9]{1,5})/(?P<proto>tcp|udp|sctp)\Z")


def diagnosis_facts(doc: Mapping[str, Any], host: str) -> list[PortFact]:
    """A diagnosis (its JSON) as a fact of the port it names in `target` ("host:port/proto").

    The state is the diagnosis code (`code`, else the first finding's, else OK).
    """
    target = doc.get("target")
    match = _TARGET.match(target) if isinstance(target, str) else None
    if match is None or int(match["port"]) > 65535:
        return []
    code = doc.get("code")
    if not isinstance(code, str):
        findings = doc.get("findings")
        first = findings[0] if isinstance(findings, list) and findings else None
        code = first.get("code") if isinstance(first, dict) else None
    return [
        PortFact(
            port=int(match["port"]),
            protocol=match["proto"],
            host=match["host"].strip("[]") or host,
            state=code if isinstance(code, str) and code else "OK",
            detail={"kind": doc.get("kind")} if isinstance(doc.get("kind"), str) else {},
        )
    ]
