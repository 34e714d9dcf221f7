"""The audit itself: listeners with what may reach them, against the declared policy.

Pure: `audit()` takes listeners already judged per zone (by the firewall model, and by scans
where a vantage was given), the firewall's open ports, and the policy, and returns findings.
The gathering lives in `_gather.py`.

Fail closed: a zone the model cannot decide (an undecidable match forked the evaluation to
both accept and drop) counts as reachable for every finding about exposure, and as not blocked
for `SHADOWED_BY_FIREWALL`; the finding then says it is uncertain. A scan from a vantage is
evidence over the model: an open port seen from a zone makes that zone reach it, whatever the
model said (and the finding says the two disagreed).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from portkit.audit._policy import ANY_NETNS, ExposurePolicy, Zone
from portkit.firewall import Severity
from portkit.model.protocols import Transport
from portkit.sockets import Exposure, Listener


class Reach(enum.StrEnum):
    OPEN = "open"  # the bind address admits the zone and the firewall accepts
    BLOCKED = "blocked"  # the bind address or a certain firewall verdict keeps the zone out
    UNCERTAIN = "uncertain"  # the model forked: some outcomes accept


class ExposureClass(enum.StrEnum):
    LOOPBACK = "loopback"
    SPECIFIC = "specific-address"
    ALL = "all-interfaces"
    PUBLISHED = "container-published"  # another namespace, brought to this host's address by a DNAT


@dataclass(frozen=True)
class ZoneReach:
    zone: Zone
    reach: Reach
    how: str  # the rule or the reason that decided, for the evidence
    by_firewall: bool = False  # blocked by a firewall verdict (not by the bind address or routing)
    # Open (or uncertain) only for sources the rules single out (`ip saddr 203.0.113.0/24
    # accept`): those source ranges. Empty when the zone's representative source decided.
    only_from: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "zone": str(self.zone),
            "reach": self.reach.value,
            "how": self.how,
            "by_firewall": self.by_firewall,
            "only_from": list(self.only_from),
        }


@dataclass(frozen=True)
class Observation:
    """What a real scan from a vantage saw of the listener's port."""

    vantage: str
    zone: Zone
    address: str
    state: str  # nmap's word: open, closed, filtered...

    def to_json(self) -> dict[str, Any]:
        return {"vantage": self.vantage, "zone": str(self.zone), "address": self.address, "state": self.state}


@dataclass(frozen=True)
class AuditedListener:
    listener: Listener
    exposure: ExposureClass
    zones: tuple[ZoneReach, ...]
    observations: tuple[Observation, ...] = ()
    published: tuple[str, ...] = ()  # addr:port on this host that a DNAT sends here

    @property
    def netns(self) -> str | None:
        return self.listener.netns

    def reach_of(self, zone: Zone) -> Reach:
        """The zone's reach: a scan that saw the port open wins, then the model."""
        seen = [o.state for o in self.observations if o.zone is zone]
        if "open" in seen:
            return Reach.OPEN
        for item in self.zones:
            if item.zone is zone:
                return item.reach
        return Reach.BLOCKED

    @property
    def reachable(self) -> Zone:
        """The widest zone that can (or, uncertain, may) reach the listener."""
        widest = Zone.NONE
        for zone in (Zone.LOOPBACK, Zone.LAN, Zone.ANY):
            if self.reach_of(zone) is not Reach.BLOCKED:
                widest = zone
        return widest

    @property
    def uncertain(self) -> bool:
        return any(self.reach_of(z) is Reach.UNCERTAIN for z in (Zone.LOOPBACK, Zone.LAN, Zone.ANY))

    @property
    def owner_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for process in self.listener.processes:
            names.append(process.name)
        for unit in self.listener.units:
            names += [unit, unit.removesuffix(".service")]
        names += list(self.listener.containers)
        return tuple(dict.fromkeys(n for n in names if n))

    def __str__(self) -> str:
        where = f" in netns {self.netns}" if self.netns else ""
        return f"{self.listener.port}/{self.listener.transport}{where}"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.listener.to_json(),
            "exposure_class": self.exposure.value,
            "reachable": str(self.reachable),
            "uncertain": self.uncertain,
            "zones": [z.to_json() for z in self.zones],
            "observations": [o.to_json() for o in self.observations],
            "published": list(self.published),
        }


@dataclass(frozen=True)
class OpenRule:
    """A port the firewall accepts from beyond loopback (a candidate for `STALE_RULE`)."""

    netns: str | None
    port: int
    protocol: Transport
    rule: str  # "table chain handle N: text"
    zone: Zone


class AuditCode(enum.StrEnum):
    UNDECLARED_EXPOSURE = "UNDECLARED_EXPOSURE"
    DECLARED_DOWN = "DECLARED_DOWN"
    STALE_RULE = "STALE_RULE"
    WRONG_OWNER = "WRONG_OWNER"
    BROADER_THAN_DECLARED = "BROADER_THAN_DECLARED"
    RISKY_SERVICE = "RISKY_SERVICE"
    SHADOWED_BY_FIREWALL = "SHADOWED_BY_FIREWALL"


# One line per code: its default severity and what it means (SARIF's rule descriptions).
CODE_TABLE: dict[AuditCode, tuple[Severity, str]] = {
    AuditCode.UNDECLARED_EXPOSURE: (
        Severity.MEDIUM,
        "a listener reachable beyond loopback that the policy does not declare",
    ),
    AuditCode.DECLARED_DOWN: (Severity.MEDIUM, "a declared service with nothing listening"),
    AuditCode.STALE_RULE: (Severity.LOW, "the firewall opens a port nothing listens on"),
    AuditCode.WRONG_OWNER: (Severity.HIGH, "a declared port held by another process or unit than declared"),
    AuditCode.BROADER_THAN_DECLARED: (Severity.HIGH, "a service reachable from a wider zone than declared"),
    AuditCode.RISKY_SERVICE: (Severity.HIGH, "a service known to be risky, reachable beyond loopback"),
    AuditCode.SHADOWED_BY_FIREWALL: (
        Severity.INFO,
        "listening on the network, but the firewall blocks every zone",
    ),
}


@dataclass(frozen=True)
class AuditFinding:
    code: AuditCode
    severity: Severity
    port: int
    protocol: Transport
    netns: str | None
    message: str
    evidence: tuple[str, ...] = ()
    fix: str = ""

    @property
    def where(self) -> str:
        netns = f" in netns {self.netns}" if self.netns else ""
        return f"{self.port}/{self.protocol}{netns}"

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code.value,
            "severity": self.severity.value,
            "port": self.port,
            "protocol": self.protocol.value,
            "netns": self.netns,
            "message": self.message,
            "evidence": list(self.evidence),
            "fix": self.fix or None,
        }


@dataclass(frozen=True)
class AuditReport:
    listeners: tuple[AuditedListener, ...]
    findings: tuple[AuditFinding, ...]
    policy: str | None  # where the policy came from; None: audited without one
    vantages: tuple[str, ...] = ()
    limits: tuple[str, ...] = field(default=())

    def worst(self) -> Severity | None:
        return max((f.severity for f in self.findings), key=lambda s: s.rank, default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "vantages": list(self.vantages),
            "listeners": [item.to_json() for item in self.listeners],
            "findings": [f.to_json() for f in self.findings],
            "limits": list(self.limits),
        }


# (port, protocol) -> (severity, risk note) for services that must not face the network.
RiskLookup = Callable[[int, Transport], "tuple[Severity, str] | None"]


def _zone_evidence(item: AuditedListener) -> tuple[str, ...]:
    lines = [f"bound to {', '.join(item.listener.addresses)} ({item.exposure.value})"]
    lines += [f"from {z.zone}: {z.reach.value} ({z.how})" for z in item.zones]
    lines += [f"scan from {o.vantage} ({o.zone}) to {o.address}: {o.state}" for o in item.observations]
    lines += [f"published on {p}" for p in item.published]
    return tuple(lines)


def _owner_text(item: AuditedListener) -> str:
    return ", ".join(item.owner_names) or "an unknown process"


def _narrow_fix(item: AuditedListener, zone: Zone) -> str:
    port, proto = item.listener.port, item.listener.transport
    if zone is Zone.LOOPBACK:
        return f"bind it to 127.0.0.1 (or ::1), or drop {port}/{proto} from the network in the firewall"
    return f"allow {port}/{proto} only from the LAN networks in the firewall"


def _certainty(item: AuditedListener) -> str:
    return (
        " (uncertain: the firewall model could not decide every zone; fail closed)" if item.uncertain else ""
    )


def audit(
    listeners: Sequence[AuditedListener],
    policy: ExposurePolicy | None,
    open_rules: Sequence[OpenRule] = (),
    risk: RiskLookup | None = None,
    *,
    vantages: Sequence[str] = (),
    limits: Sequence[str] = (),
    unread: Sequence[str | None] = (),
    scope: Collection[str | None] | None = None,
) -> AuditReport:
    """Findings for `listeners` against `policy`. `unread` names the namespaces whose sockets
    could not be read: nothing seen listening there proves nothing, so a service declared there
    is DECLARED_DOWN only with that said (uncertain). `scope` names the namespaces whose
    listeners were gathered (None: every one): a service the policy pins to a namespace outside
    it (or to a vantage, whose own listeners are never audited) was not looked for, so it is not
    DECLARED_DOWN; one declared in any namespace is."""
    findings: list[AuditFinding] = []

    def add(
        code: AuditCode,
        item_port: int,
        proto: Transport,
        netns: str | None,
        message: str,
        evidence: tuple[str, ...] = (),
        fix: str = "",
        severity: Severity | None = None,
    ) -> None:
        findings.append(
            AuditFinding(
                code, severity or CODE_TABLE[code][0], item_port, proto, netns, message, evidence, fix
            )
        )

    for item in listeners:
        listener = item.listener
        port, proto, netns = listener.port, listener.transport, listener.netns
        reachable = item.reachable
        evidence = _zone_evidence(item)
        declared = policy.declared(port, proto, netns) if policy is not None else None
        if policy is not None and declared is None and reachable > Zone.LOOPBACK:
            add(
                AuditCode.UNDECLARED_EXPOSURE,
                port,
                proto,
                netns,
                f"{item} ({_owner_text(item)}) is reachable from {reachable} and not declared"
                + _certainty(item),
                evidence,
                "declare it in the policy, or stop it / bind it to loopback",
            )
        if declared is not None:
            if reachable > declared.reach:
                add(
                    AuditCode.BROADER_THAN_DECLARED,
                    port,
                    proto,
                    netns,
                    f"{item} is declared {declared.reach}-only but is reachable from {reachable}"
                    + _certainty(item),
                    evidence,
                    _narrow_fix(item, declared.reach),
                )
            if declared.owner and declared.owner not in item.owner_names and item.listener.processes:
                add(
                    AuditCode.WRONG_OWNER,
                    port,
                    proto,
                    netns,
                    f"{item} should be owned by {declared.owner} but is held by {_owner_text(item)}",
                    evidence,
                    f"stop {_owner_text(item)} and start {declared.owner}, or correct the policy",
                )
        if risk is not None and reachable > Zone.LOOPBACK:
            risky = risk(port, proto)
            if risky is not None:
                severity, note = risky
                if declared is not None and reachable <= declared.reach:
                    # Declared as reachable this widely: an accepted risk, still worth a line.
                    severity = Severity.LOW
                    note += " (declared in the policy)"
                add(
                    AuditCode.RISKY_SERVICE,
                    port,
                    proto,
                    netns,
                    f"{item} ({_owner_text(item)}) is reachable from {reachable}: {note}" + _certainty(item),
                    evidence,
                    _narrow_fix(item, Zone.LOOPBACK),
                    severity,
                )
        if (
            item.exposure is not ExposureClass.LOOPBACK
            and reachable <= Zone.LOOPBACK
            and any(z.by_firewall for z in item.zones)
        ):
            add(
                AuditCode.SHADOWED_BY_FIREWALL,
                port,
                proto,
                netns,
                f"{item} listens on {', '.join(listener.addresses)}"
                " but the firewall lets no other host reach it",
                evidence,
            )
    if policy is not None:
        for service in policy.services:
            home = None if service.netns == ANY_NETNS else service.netns or None
            if service.netns != ANY_NETNS and (home in vantages or (scope is not None and home not in scope)):
                continue
            if not any(service.matches(i.listener.port, i.listener.transport, i.netns) for i in listeners):
                blind = [n for n in unread if service.netns == ANY_NETNS or (n or "") == service.netns]
                unsure = (
                    f" (uncertain: the sockets of netns {', '.join(str(n) for n in blind[:3])}"
                    + (f" and {len(blind) - 3} more" if len(blind) > 3 else "")
                    + " could not be read)"
                    if blind
                    else ""
                )
                add(
                    AuditCode.DECLARED_DOWN,
                    service.port,
                    service.protocol,
                    None if service.netns in ("", "*") else service.netns,
                    f"{service} is declared ({service.owner or 'any owner'}, {service.reach})"
                    " but nothing listens" + unsure,
                    fix=f"start {service.owner}"
                    if service.owner
                    else "start the service, or remove it from the policy",
                )
    listening = {(i.netns, i.listener.port, i.listener.transport) for i in listeners}
    reported: set[tuple[str | None, int, Transport]] = set()
    for rule in open_rules:
        key = (rule.netns, rule.port, rule.protocol)
        if key in listening or key in reported:
            continue
        reported.add(key)
        netns_text = f" in netns {rule.netns}" if rule.netns else ""
        add(
            AuditCode.STALE_RULE,
            rule.port,
            rule.protocol,
            rule.netns,
            f"the firewall{netns_text} accepts {rule.port}/{rule.protocol} from {rule.zone}"
            " but nothing listens",
            (rule.rule,),
            "remove the rule, or start the service it was for",
        )
    order = {code: n for n, code in enumerate(AuditCode)}
    findings.sort(key=lambda f: (-f.severity.rank, order[f.code], f.netns or "", f.port, f.protocol.value))
    return AuditReport(
        tuple(listeners),
        tuple(findings),
        policy.source if policy is not None else None,
        tuple(vantages),
        tuple(limits),
    )


def exposure_class(listener: Listener, published: Sequence[str]) -> ExposureClass:
    if published:
        return ExposureClass.PUBLISHED
    return {
        Exposure.LOOPBACK: ExposureClass.LOOPBACK,
        Exposure.SPECIFIC: ExposureClass.SPECIFIC,
        Exposure.ALL: ExposureClass.ALL,
    }[listener.exposure]


def suggested_policy_reach(item: AuditedListener) -> Zone:
    """What `--init` declares: the zone the listener is reachable from now (loopback at least)."""
    return max(item.reachable, Zone.LOOPBACK)


def declared_for_init(item: AuditedListener) -> tuple[str, str]:
    """(owner, note) `--init` writes: the unit when there is one, else the process name."""
    listener = item.listener
    owner = (
        (listener.units[0].removesuffix(".service") if listener.units else "")
        or (listener.containers[0] if listener.containers else "")
        or (listener.processes[0].name if listener.processes else "")
    )
    return owner, listener.service.name
