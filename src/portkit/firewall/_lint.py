"""The linter: what is wrong with a rule set, how bad it is, and which rules are involved.

Structural checks (shadowed, redundant, overlapping, dead rules, jump loops) reason on the
packet space of each rule (`_space.py`); behavioural checks (established traffic, default
accept, risky exposures, the current SSH session) ask the evaluator about typical packets,
so they see exactly what the kernel would do, jumps and NAT included.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from portkit.firewall._eval import Direction, Verdict, evaluate
from portkit.firewall._model import (
    Chain,
    CtState,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Ruleset,
    Table,
    Word,
)
from portkit.firewall._packet import Packet
from portkit.firewall._space import (
    DADDR,
    DIMS,
    DPORT,
    IIF,
    SADDR,
    STATE,
    Box,
    Space,
    box_intersect,
    covered_by,
    interface_names,
    rule_box,
)
from portkit.model.protocols import IPPROTO_TCP, IPPROTO_UDP, IPV4

if TYPE_CHECKING:
    from portkit.registry import Registry


class Severity(Word):
    INFO = "info"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank


@dataclass(frozen=True)
class Finding:
    severity: Severity
    check: str  # shadowed | redundant | overlap | never-matches | jump-loop | missing-chain | ...
    where: str
    message: str
    related: tuple[str, ...] = field(default=())

    def __str__(self) -> str:
        return f"{self.severity.value.upper():8} {self.check:20} {self.where}: {self.message}"

    def to_json(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "check": self.check,
            "where": self.where,
            "message": self.message,
            "related": list(self.related),
        }


# Ports that must not face the internet, with lint's severity; the registry words the risk.
RISKY_PORTS: tuple[tuple[int, str, str, Severity], ...] = (
    (23, "tcp", "telnet: cleartext logins", Severity.HIGH),
    (21, "tcp", "ftp: cleartext logins", Severity.MEDIUM),
    (3389, "tcp", "RDP: remote desktop, a favourite brute-force and exploit target", Severity.HIGH),
    (5900, "tcp", "VNC: remote desktop, often weakly authenticated", Severity.HIGH),
    (2375, "tcp", "Docker API without TLS: root on the host for anyone", Severity.CRITICAL),
    (2376, "tcp", "Docker API (TLS)", Severity.MEDIUM),
    (6379, "tcp", "Redis: no authentication by default", Severity.CRITICAL),
    (11211, "tcp", "memcached: no authentication", Severity.HIGH),
    (11211, "udp", "memcached UDP: amplification attacks", Severity.CRITICAL),
    (27017, "tcp", "MongoDB", Severity.HIGH),
    (3306, "tcp", "MySQL/MariaDB", Severity.HIGH),
    (5432, "tcp", "PostgreSQL", Severity.HIGH),
    (9200, "tcp", "Elasticsearch: no authentication by default", Severity.HIGH),
    (5984, "tcp", "CouchDB", Severity.HIGH),
    (9042, "tcp", "Cassandra", Severity.HIGH),
    (445, "tcp", "SMB: file sharing, wormable exploits", Severity.HIGH),
    (139, "tcp", "NetBIOS session", Severity.HIGH),
    (2049, "tcp", "NFS", Severity.HIGH),
    (161, "udp", "SNMP: community strings, amplification", Severity.MEDIUM),
    (5000, "tcp", "Docker registry / dev servers", Severity.LOW),
    (2379, "tcp", "etcd: cluster secrets", Severity.CRITICAL),
    (10250, "tcp", "kubelet API", Severity.HIGH),
)
# Addresses standing for "anyone on the internet" (documentation ranges).
_OUTSIDERS4 = ("198.51.100.7", "203.0.113.77")
_OUTSIDERS6 = ("2001:db8::7",)
_HOST4 = "192.0.2.10"
_HOST6 = "2001:db8:1::10"


def _where(t: Table, c: Chain, i: int, r: FilterRule) -> str:
    extra = f" ({r.where})" if r.where else ""
    return f"{t} {c.name} #{i + 1}{extra}"


_DECIDING = {
    FilterAction.ACCEPT,
    FilterAction.DROP,
    FilterAction.REJECT,
    FilterAction.RETURN,
    FilterAction.DNAT,
    FilterAction.REDIRECT,
    FilterAction.SNAT,
    FilterAction.MASQUERADE,
    FilterAction.QUEUE,
}


# What a deciding rule (its `_verdict_class`) did to a packet, in words.
_PAST = {
    "accept": "accepted",
    "drop": "dropped",
    "dnat": "DNATed",
    "redirect": "redirected",
    "snat": "SNATed",
    "masquerade": "masqueraded",
    "queue": "queued",
    "return": "returned",
}


def _verdict_class(r: FilterRule) -> str:
    if r.action is FilterAction.REJECT:
        return "drop"  # for the user both refuse the packet; the answer differs, the intent not
    return str(r.action.value)


def _hulls(boxes: list[Box | None]) -> Any:
    import numpy as np

    n = len(boxes)
    lo = np.full((n, len(DIMS)), np.inf)
    hi = np.full((n, len(DIMS)), -np.inf)
    for i, b in enumerate(boxes):
        if b is None:
            continue
        for d, ivs in enumerate(b):
            # Widened a little: float64 rounds 128-bit addresses, and the filter must be conservative.
            lo[i, d] = float(ivs[0][0]) * (1 - 1e-12) - 1
            hi[i, d] = float(ivs[-1][1]) * (1 + 1e-12) + 1
    return lo, hi


def _overlap_candidates(lo: Any, hi: Any, deciding: Any) -> list[Any]:
    """For each rule, the earlier deciding rules whose hulls overlap its hull (a conservative
    filter before the exact box test), computed in blocks with numpy broadcasting."""
    import numpy as np

    n = lo.shape[0]
    # Dimensions where every rule spans the same hull never separate two rules.
    dims = [
        d for d in range(lo.shape[1]) if not (np.all(lo[:, d] == lo[0, d]) and np.all(hi[:, d] == hi[0, d]))
    ]
    lo, hi = lo[:, dims], hi[:, dims]
    out: list[Any] = []
    block = 256
    for a in range(0, n, block):
        b = min(n, a + block)
        ok = np.all((lo[None, :b, :] <= hi[a:b, None, :]) & (lo[a:b, None, :] <= hi[None, :b, :]), axis=2)
        ok &= deciding[None, :b]
        for j in range(a, b):
            out.append(np.nonzero(ok[j - a, :j])[0])
    return out


def _structural(t: Table, c: Chain, findings: list[Finding]) -> None:
    import numpy as np

    rules = list(c.rules)
    if not rules:
        return
    names = interface_names(rules)
    versions = [v for v in (4, 6) if t.family.covers(v)]
    per_version: dict[int, list[Box | None]] = {}
    for v in versions:
        space = Space(v, names)
        per_version[v] = [None if r.uncertain else rule_box(r, space) for r in rules]
    opaque = [r.uncertain for r in rules]
    deciding = np.array([r.action in _DECIDING and not r.uncertain for r in rules])
    hulls = {v: _hulls(per_version[v]) for v in versions}
    cands = {v: _overlap_candidates(hulls[v][0], hulls[v][1], deciding) for v in versions}
    # Rules for replies (ct state established/related) or loopback overlap everything by
    # design; an overlap with them is no conflict worth reporting.
    lo_ifaces = {v: Space(v, names).iface_set(("lo",)) for v in versions}
    situational = [
        all(
            b is None or not any(lo <= 0 <= hi for lo, hi in b[STATE]) or b[IIF] == lo_ifaces[v]
            for v in versions
            for b in (per_version[v][k],)
        )
        for k in range(len(rules))
    ]
    for j, r in enumerate(rules):
        if opaque[j]:
            continue
        boxes_j = {v: per_version[v][j] for v in versions}
        if all(b is None for b in boxes_j.values()):
            findings.append(
                Finding(
                    Severity.MEDIUM,
                    "never-matches",
                    _where(t, c, j, r),
                    f"'{r}' can never match (contradictory matches or wrong address family)",
                )
            )
            continue
        if j == 0:
            continue
        shadowers: set[int] = set()
        covered = True
        for v, bj in boxes_j.items():
            if bj is None:
                continue
            cand = cands[v][j]
            inter: list[int] = []
            for i in cand.tolist():
                bi = per_version[v][i]
                if bi is not None and box_intersect(bi, bj) is not None:
                    inter.append(i)
            if not inter:
                covered = False
                continue
            got = covered_by(bj, [per_version[v][i] for i in inter])  # type: ignore[misc]
            if got is not True:
                covered = False
            shadowers.update(inter)
        if covered and shadowers:
            names_ = [_where(t, c, i, rules[i]) for i in sorted(shadowers)]
            main = [_where(t, c, i, rules[i]) for i in sorted(shadowers) if not situational[i]]
            extra = [
                _where(t, c, i, rules[i]).split(" (")[0].split()[-1]
                for i in sorted(shadowers)
                if situational[i]
            ]
            main_ids = [i for i in sorted(shadowers) if not situational[i]]
            same = all(_verdict_class(rules[i]) == _verdict_class(r) for i in (main_ids or shadowers))
            listed = main or names_
            who = ", ".join(listed[:6]) + (" ..." if len(listed) > 6 else "")
            if main and extra:
                who += f" (with {', '.join(extra)} for reply/loopback traffic)"
            if same and r.action in _DECIDING:
                findings.append(
                    Finding(
                        Severity.LOW,
                        "redundant",
                        _where(t, c, j, r),
                        f"'{r}' is redundant: every packet it matches is already "
                        f"{_verdict_class(r)}ed by {who}",
                        tuple(names_),
                    )
                )
            else:
                findings.append(
                    Finding(
                        Severity.MEDIUM,
                        "shadowed",
                        _where(t, c, j, r),
                        f"'{r}' is fully shadowed by {who}: it never takes effect",
                        tuple(names_),
                    )
                )
        elif shadowers and r.action in _DECIDING:
            conflicting = sorted(
                i
                for i in shadowers
                if _verdict_class(rules[i]) != _verdict_class(r)
                and rules[i].action is not FilterAction.RETURN
                and not situational[i]
            )
            if conflicting:
                names_ = [_where(t, c, i, rules[i]) for i in conflicting]
                findings.append(
                    Finding(
                        Severity.INFO,
                        "overlap",
                        _where(t, c, j, r),
                        f"'{r}' is partially shadowed: part of its traffic is "
                        f"{_PAST[_verdict_class(rules[conflicting[0]])]} earlier by " + ", ".join(names_[:4]),
                        tuple(names_),
                    )
                )


def _graph(t: Table, findings: list[Finding]) -> None:
    targets: dict[str, list[tuple[int, FilterRule]]] = {}
    for c in t.chains:
        for i, r in enumerate(c.rules):
            if r.action in (FilterAction.JUMP, FilterAction.GOTO):
                if t.chain(r.target) is None:
                    findings.append(
                        Finding(
                            Severity.HIGH,
                            "missing-chain",
                            _where(t, c, i, r),
                            f"'{r}' targets chain {r.target!r}, which does not exist",
                        )
                    )
                targets.setdefault(c.name, []).append((i, r))
    # Loops: a depth-first search with colours.
    state: dict[str, int] = {}
    reported: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for _i, r in targets.get(name, []):
            nxt = r.target
            if t.chain(nxt) is None:
                continue
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [name, nxt]
                key = " -> ".join(cycle)
                if key not in reported:
                    reported.add(key)
                    findings.append(
                        Finding(
                            Severity.HIGH,
                            "jump-loop",
                            f"{t} {name}",
                            f"jumps loop: {key} (the kernel refuses to load this)",
                        )
                    )
            elif state.get(nxt) is None:
                visit(nxt, [*path, nxt])
        state[name] = 2

    for c in t.chains:
        if c.name not in state:
            visit(c.name, [c.name])
    used = {r.target for c in t.chains for r in c.rules if r.action in (FilterAction.JUMP, FilterAction.GOTO)}
    for c in t.chains:
        if c.hook is None and c.name not in used and c.rules:
            findings.append(
                Finding(
                    Severity.INFO,
                    "unused-chain",
                    f"{t} {c.name}",
                    f"regular chain {c.name} is never jumped to: its {len(c.rules)} rules never run",
                )
            )


# What lint can know about an interface from its name alone. Only a WAN name (or the host's
# default-route interface, when the live rules are linted) lets it say "the internet"; a name
# conventionally given to a LAN or container bridge says "internal", and any other name leaves
# the interface's role unknown: lint then says where the traffic is accepted from, nothing more.
_WAN_NAME = re.compile(r"(wan\d*|wan6|pppoe-.+|ppp\d+|wwan\d+|.+-wan\d*)")
_INTERNAL_NAME = re.compile(
    r"(lo|lan\d*|.+-lan\d*|br-.+|br\d+|virbr\d+|docker\d+|podman\d+|cni\d+|cni-.+|lxcbr\d+|lxdbr\d+"
    r"|kube-bridge|cbr\d+|guest\d*)"
)


class InterfaceRole(Word):
    ANY = "any"  # accepted on an interface no rule names: the rule does not depend on the interface
    WAN = "wan"
    INTERNAL = "internal"
    UNKNOWN = "unknown"


def interface_role(name: str, wan_interfaces: frozenset[str] = frozenset()) -> InterfaceRole:
    """The role lint assumes for an interface (see _WAN_NAME); wildcards (`eth*`) by their prefix."""
    bare = name.rstrip("*+")
    if name in wan_interfaces or bare in wan_interfaces or _WAN_NAME.fullmatch(bare):
        return InterfaceRole.WAN
    if _INTERNAL_NAME.fullmatch(bare):
        return InterfaceRole.INTERNAL
    return InterfaceRole.UNKNOWN


def default_route_interfaces(proc_net: str = "/proc/net", *, netns: str | None = None) -> frozenset[str]:
    """The interfaces the default routes (IPv4 and IPv6) leave by: of this network namespace
    (its /proc/net), or of the named one (`ip -n NETNS route`)."""
    if netns is not None:
        return _netns_default_routes(netns)
    names: set[str] = set()
    try:
        with open(f"{proc_net}/route", encoding="ascii", errors="replace") as table:
            for line in table.read().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
                    names.add(fields[0])
    except OSError:
        pass
    try:
        with open(f"{proc_net}/ipv6_route", encoding="ascii", errors="replace") as table:
            for line in table.read().splitlines():
                fields = line.split()
                if len(fields) == 10 and fields[0] == "0" * 32 and fields[1] == "00" and fields[9] != "lo":
                    names.add(fields[9])
    except OSError:
        pass
    return frozenset(names)


def _netns_default_routes(netns: str) -> frozenset[str]:
    import json
    import subprocess

    names: set[str] = set()
    for version in ("-4", "-6"):
        try:
            out = subprocess.run(
                ["ip", "-n", netns, version, "-j", "route", "show", "default"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            routes = json.loads(out or "[]")
        except (OSError, ValueError, subprocess.SubprocessError):
            continue
        names.update(r["dev"] for r in routes if isinstance(r, dict) and isinstance(r.get("dev"), str))
    return frozenset(names)


def _unnamed_iface(ruleset: Ruleset) -> str:
    """An interface name no rule's iif pattern matches: a packet from "anywhere else"."""
    rules = ruleset.rules()
    patterns = [n for _t, _c, _i, r in rules for m in r.matches if m.field is Field.IIF for n in m.names]
    for suffix in range(100):
        name = f"?other{suffix}"
        if not any(name.startswith(n[:-1]) if n.endswith(("*", "+")) else n == name for n in patterns):
            return name
    return ""


def _exposure(role: InterfaceRole, iface: str, severity: Severity) -> tuple[Severity, str]:
    """How a risky port accepted from every address on `iface` is reported: (severity, wording)."""
    if role is InterfaceRole.ANY:
        return severity, "is open to the whole internet (0.0.0.0/0) on any interface"
    if role is InterfaceRole.WAN:
        return severity, f"is open to the whole internet (0.0.0.0/0) on {iface} (a WAN interface)"
    if role is InterfaceRole.INTERNAL:
        return Severity.INFO, f"is open to every address on {iface} (by its name an internal network)"
    where = "interfaces no rule names" if iface.startswith("?other") else iface
    return min(severity, Severity.MEDIUM, key=lambda s: s.rank), (
        f"is open to every address on {where} (lint cannot tell whether it faces the internet)"
    )


def _open_to_all(
    ruleset: Ruleset, outsiders: list[Any], host: Any, port: int, proto: str, iface: str
) -> str | None:
    """What accepts a new connection to `port` from every outsider arriving on `iface`, or None."""
    reason = None
    uncertain = False
    for src in outsiders:
        p = Packet(IPPROTO_TCP if proto == "tcp" else IPPROTO_UDP, src, host, 40000, port, iif=iface)
        decision = evaluate(ruleset, p, direction=Direction.INPUT, trace_misses=False)
        # An accept on any branch of an undecided evaluation is a possible exposure: reported,
        # marked uncertain, never dropped silently (fail closed).
        accepting = [o for o in decision.outcomes if o.verdict is Verdict.ACCEPT]
        if decision.verdict is Verdict.ACCEPT:
            reason = reason or decision.reason
        elif accepting and not decision.certain:
            reason = reason or accepting[0].reason
        else:
            return None  # not open to *everyone*: no need to ask for the other outsiders
        uncertain = uncertain or not decision.certain or bool(decision.uncertain)
    if reason and uncertain:
        return f"{reason} (uncertain: the accept depends on a match portkit cannot model)"
    return reason


def _exposed_on(
    reason_on: Callable[[str], str | None], probes: list[tuple[str, InterfaceRole]], unnamed: str
) -> tuple[str, InterfaceRole, str] | None:
    """The interface to report a risky port on, its role and what accepts it there, from
    `reason_on(iface)`. "Any interface" only when no WAN-named interface refuses it."""
    wans = [iface for iface, role in probes if role is InterfaceRole.WAN]
    for iface in wans:
        reason = reason_on(iface)
        if reason is not None:
            return iface, InterfaceRole.WAN, reason
    reason = reason_on(unnamed) if unnamed else None
    if reason is not None:
        return unnamed, InterfaceRole.UNKNOWN if wans else InterfaceRole.ANY, reason
    for role in (InterfaceRole.UNKNOWN, InterfaceRole.INTERNAL):
        for iface, probe_role in probes:
            reason = reason_on(iface) if probe_role is role else None
            if reason is not None:
                return iface, role, reason
    return None


def _candidate_ifaces(ruleset: Ruleset) -> list[str]:
    names: dict[str, int] = {}
    for _t, _c, _i, r in ruleset.rules():
        for m in r.matches:
            if m.field is Field.IIF and not m.negate:
                for n in m.names:
                    if n != "lo":
                        names[n.rstrip("*+") + ("0" if n.endswith(("*", "+")) else "")] = 1
    return list(names) or ["eth0"]


def risky_ports(reg: Registry) -> list[tuple[int, str, str, Severity]]:
    """The risky-port list (severity is lint's call), worded with the registry's risk notes."""
    from portkit.model import Transport

    out = []
    for port, proto, text, sev in RISKY_PORTS:
        service = reg.risk_for(port, Transport(proto))
        out.append((port, proto, f"{service.name}: {service.risk}" if service else text, sev))
    return out


def _behavioural(
    ruleset: Ruleset,
    findings: list[Finding],
    ssh: tuple[str, int, str, int] | None,
    ssh_iface: str | None,
    wan_interfaces: frozenset[str] = frozenset(),
    risky: list[tuple[int, str, str, Severity]] | None = None,
) -> None:
    has4 = any(t.family.covers(4) and c.hook is Hook.INPUT for t in ruleset.tables for c in t.chains)
    has6 = any(t.family.covers(6) and c.hook is Hook.INPUT for t in ruleset.tables for c in t.chains)
    if not (has4 or has6):
        findings.append(
            Finding(
                Severity.MEDIUM,
                "no-input-filter",
                "ruleset",
                "no chain filters incoming traffic: every port that listens is open",
            )
        )
        return
    ifaces = _candidate_ifaces(ruleset)
    unnamed = _unnamed_iface(ruleset)
    ip = ipaddress.ip_address
    for version, host, outsiders in ((4, _HOST4, _OUTSIDERS4), (6, _HOST6, _OUTSIDERS6)):
        if not (has4 if version == IPV4 else has6):
            continue
        # Replies to the host's own connections.
        reply = Packet(
            IPPROTO_TCP, ip(outsiders[0]), ip(host), 443, 41000, iif=ifaces[0], state=CtState.ESTABLISHED
        )
        d = evaluate(ruleset, reply, direction=Direction.INPUT, trace_misses=False)
        if d.verdict is not Verdict.ACCEPT:
            findings.append(
                Finding(
                    Severity.HIGH,
                    "no-established",
                    f"input (IPv{version})",
                    f"replies to this host's own connections are {d.verdict.value}ped "
                    f"({d.reason}): add 'ct state established,related accept' early",
                )
            )
        # Default accept.
        probe = Packet(IPPROTO_TCP, ip(outsiders[0]), ip(host), 51515, 47823, iif=ifaces[0])
        d = evaluate(ruleset, probe, direction=Direction.INPUT, trace_misses=False)
        if d.verdict is Verdict.ACCEPT and (d.decided_by is None or d.decided_by.position == 0):
            findings.append(
                Finding(
                    Severity.MEDIUM,
                    "accept-by-default",
                    f"input (IPv{version})",
                    "new connections to ports no rule mentions are accepted by "
                    f"{d.reason}: every listening service is exposed",
                )
            )
        # Risky exposures, reported on the most exposed interface that lets every outsider in.
        probes = [(iface, interface_role(iface, wan_interfaces)) for iface in ifaces if iface != unnamed]
        for port, proto, text, sev in risky or ():
            reason_on = functools.partial(
                _open_to_all, ruleset, [ip(src) for src in outsiders], ip(host), port, proto
            )
            found = _exposed_on(functools.cache(reason_on), probes, unnamed)
            if found is not None:
                iface, role, reason = found
                severity, wording = _exposure(role, iface, sev)
                findings.append(
                    Finding(
                        severity,
                        "risky-exposure",
                        f"{port}/{proto} (IPv{version})",
                        f"{text} {wording}: accepted by {reason}",
                    )
                )
    # Overly broad accepts.
    for t in ruleset.tables:
        for c in t.chains:
            spaces = {v: Space(v, interface_names(list(c.rules))) for v in (4, 6) if t.family.covers(v)}
            for i, r in enumerate(c.rules):
                if r.action is not FilterAction.ACCEPT or r.uncertain:
                    continue
                for v, space in spaces.items():
                    b = rule_box(r, space)
                    if b is None:
                        continue
                    full = space.full()
                    lo_iface = space.iface_set(("lo",))
                    state_new = 0
                    if (
                        b[SADDR] == full[SADDR]
                        and b[DADDR] == full[DADDR]
                        and any(lo <= state_new <= hi for lo, hi in b[STATE])
                        and len(b[DPORT]) >= 1
                        and _span(b[DPORT]) > 1024
                        and b[IIF] != lo_iface
                        and c.hook in (Hook.INPUT, Hook.FORWARD, None)
                    ):
                        ports = "any port" if b[DPORT] == full[DPORT] else "a wide port range"
                        severity, source = _broad_source(space, b[IIF], full[IIF], wan_interfaces)
                        findings.append(
                            Finding(
                                severity,
                                "broad-accept",
                                _where(t, c, i, r),
                                f"'{r}' accepts new connections {source} to {ports} (IPv{v})",
                            )
                        )
                        break
    if ssh:
        client, cport, server, sport = ssh
        try:
            caddr, saddr = ip(client), ip(server)
        except ValueError:
            return
        if caddr.version != saddr.version:
            return
        iface = ssh_iface or ifaces[0]
        for state, sev, what in (
            (CtState.ESTABLISHED, Severity.CRITICAL, "would cut the SSH session you are running in"),
            (CtState.NEW, Severity.HIGH, "would refuse your next SSH login"),
        ):
            p = Packet(IPPROTO_TCP, caddr, saddr, cport, sport, iif=iface, state=state)
            d = evaluate(ruleset, p, direction=Direction.INPUT, trace_misses=False)
            if d.verdict is not Verdict.ACCEPT:
                findings.append(
                    Finding(
                        sev,
                        "ssh-lockout",
                        f"{client} -> {server}:{sport}",
                        f"this rule set {what} ({state} packets are {d.verdict.value}ped by {d.reason})",
                    )
                )


def _broad_source(
    space: Space, iifs: tuple[tuple[int, int], ...], every: tuple[tuple[int, int], ...], wan: frozenset[str]
) -> tuple[Severity, str]:
    """Where a broad accept takes connections from, as far as its iif restriction tells."""
    if iifs == every:
        return Severity.HIGH, "from anywhere"
    names = [space.ifnames[k].replace("\x00wild", "*") for lo, hi in iifs for k in range(lo, hi + 1)]
    if any(name.startswith("\x00") for name in names):  # "every other interface" is among them
        return Severity.HIGH, "from anywhere"
    roles = {interface_role(name, wan) for name in names}
    shown = ", ".join(names)
    if roles == {InterfaceRole.WAN} or InterfaceRole.WAN in roles:
        return Severity.HIGH, f"from anywhere on {shown} (WAN)"
    if roles == {InterfaceRole.INTERNAL}:
        return Severity.LOW, f"from every address on {shown} (named like an internal network)"
    return Severity.MEDIUM, f"from every address on {shown} (lint cannot tell whether it faces the internet)"


def _span(ivs: tuple[tuple[int, int], ...]) -> int:
    return sum(hi - lo + 1 for lo, hi in ivs if hi >= 0)


def lint_ruleset(
    ruleset: Ruleset,
    *,
    ssh_connection: str | None = None,
    ssh_iface: str | None = None,
    behaviour: bool = True,
    wan_interfaces: frozenset[str] = frozenset(),
    registry: Registry | None = None,
) -> list[Finding]:
    """Every finding, most severe first. `ssh_connection` is $SSH_CONNECTION
    ("client_ip client_port server_ip server_port"). `wan_interfaces` names interfaces known to
    face the internet (the default route's, for the live rules) besides WAN-named ones.
    `registry` words the risky-port findings; without it this entry point takes portkit's
    default registry (nothing below it chooses one)."""
    findings: list[Finding] = []
    for t in ruleset.tables:
        if t.family not in (Family.IP, Family.IP6, Family.INET):
            continue
        _graph(t, findings)
        for c in t.chains:
            _structural(t, c, findings)
    ssh = None
    if ssh_connection:
        parts = ssh_connection.split()
        if len(parts) == 4 and parts[1].isdigit() and parts[3].isdigit():
            ssh = (parts[0], int(parts[1]), parts[2], int(parts[3]))
    # A looping rule set cannot be evaluated (nor loaded): behaviour is moot until it is fixed.
    if behaviour and not any(f.check == "jump-loop" for f in findings):
        if registry is None:
            from portkit.registry import default_registry

            registry = default_registry()
        _behavioural(ruleset, findings, ssh, ssh_iface, wan_interfaces, risky_ports(registry))
    from portkit.firewall._nftexpr import render_embedded_json

    for note in ruleset.notes:
        if "not modelled" in note or "cannot model" in note or "opaque" in note:
            where, _, what = note.partition(": ")
            findings.append(Finding(Severity.INFO, "not-modelled", where, render_embedded_json(what.strip())))
    findings = _merge_versions(findings)
    findings.sort(key=lambda f: -f.severity.rank)
    return findings


def _merge_versions(findings: list[Finding]) -> list[Finding]:
    """One finding for IPv4 and IPv6 when an inet rule causes both."""
    out: list[Finding] = []
    seen: dict[tuple[str, str, str], int] = {}
    for f in findings:
        if f.where.endswith(" (IPv4)") or f.where.endswith(" (IPv6)"):
            key = (f.check, f.where[:-7], f.message)
            if key in seen:
                prev = out[seen[key]]
                out[seen[key]] = Finding(
                    prev.severity, prev.check, f"{key[1]} (IPv4, IPv6)", prev.message, prev.related
                )
                continue
            seen[key] = len(out)
        out.append(f)
    return out
