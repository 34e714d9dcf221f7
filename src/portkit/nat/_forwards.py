"""Every port forward in force: the DNAT/REDIRECT rules of the live ruleset, with what decides
whether each one works.

A forward is any rule whose verdict is `dnat` or `redirect`: nft's native tables (portkit's
own `portkit_nat`, the table miniupnpd-nftables makes, a hand-written one) and the tables
iptables-nft writes (Docker's `DOCKER` chain, which PREROUTING and OUTPUT jump to for local
addresses). For each, the facts that decide whether a connection from outside gets through:

- forwarding: `net.ipv4.ip_forward` (or IPv6's) when the target is not this host's own;
- filter: the evaluator's verdict on the forward's first packet as it arrives from outside
  (on the input interface, from a documentation address, to the public address and port),
  after the DNAT; only a certain verdict counts, otherwise `uncertain` (fail closed);
- hairpin: whether a client on the target's own subnet reaching the public address is
  DNATed, let through, and source-NATed (without the last the target answers the client
  directly and the client drops the reply);
- listening: whether a socket listens on the target, when the target is an address of this
  host or of a local network namespace (portkit.sockets); a forward to a port where nothing
  listens is flagged.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.firewall import (
    ChainType,
    CtState,
    Decision,
    Direction,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Packet,
    Ruleset,
    Table,
    evaluate,
    masquerade_lookup,
)
from portkit.model import Transport
from portkit.model.protocols import IPPROTO_TCP, IPPROTO_UDP
from portkit.nat._generate import TAG_PREFIX
from portkit.nat._hosts import ListenFact, connected_subnet, interface_addresses, listening_at

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
SYSCTL = {4: "net.ipv4.ip_forward", 6: "net.ipv6.conf.all.forwarding"}
# The outside client in evaluations: a documentation address (TEST-NET-1 / 2001:db8::/32).
OUTSIDE_CLIENT = {4: ipaddress.ip_address("192.0.2.200"), 6: ipaddress.ip_address("2001:db8:ffff::200")}


@dataclass(frozen=True)
class Forward:
    """One DNAT/REDIRECT rule and the facts that decide whether it works."""

    table: str  # "ip portkit_nat"
    chain: str
    handle: int | None
    rule: str
    kind: str  # dnat | redirect
    protocol: str  # tcp | udp | any
    public_address: str  # an address, "local" (this host's own) or "*" (any)
    public_port: str  # "8443", "1000-2000", "*"
    iif: str
    target: str  # "192.168.77.10:443", ":8080" (redirect), "?" (a map)
    target_address: str | None
    target_port: int | None
    tag: str = ""  # portkit-nat:ID when `nat add` made it
    hook: str = "prerouting"  # prerouting (arriving traffic) | output (this host's own traffic)
    forwarding: bool | None = None
    filter: str = "uncertain"  # accept | drop | reject | uncertain | not-needed
    filter_reason: str = ""
    hairpin: str = "uncertain"  # yes | no | uncertain | not-applicable
    hairpin_reason: str = ""
    listening: ListenFact = field(default_factory=lambda: ListenFact("unknown"))
    problems: tuple[str, ...] = ()

    @property
    def public(self) -> str:
        addr = self.public_address
        return f"[{addr}]:{self.public_port}" if ":" in addr else f"{addr}:{self.public_port}"

    def to_json(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "chain": self.chain,
            "handle": self.handle,
            "rule": self.rule,
            "kind": self.kind,
            "protocol": self.protocol,
            "public_address": self.public_address,
            "public_port": self.public_port,
            "in": self.iif or None,
            "target": self.target,
            "target_address": self.target_address,
            "target_port": self.target_port,
            "tag": self.tag or None,
            "hook": self.hook,
            "forwarding": self.forwarding,
            "filter": self.filter,
            "filter_reason": self.filter_reason,
            "hairpin": self.hairpin,
            "hairpin_reason": self.hairpin_reason,
            "listening": self.listening.to_json(),
            "problems": list(self.problems),
        }


def _single(ranges: tuple[tuple[int, int], ...]) -> int | None:
    return ranges[0][0] if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else None


def _jump_contexts(ruleset: Ruleset) -> dict[tuple[str, str], list[FilterRule]]:
    """(table, chain) -> the rules that jump or go to that chain."""
    found: dict[tuple[str, str], list[FilterRule]] = {}
    for table, _chain, _i, rule in ruleset.rules():
        if rule.action in (FilterAction.JUMP, FilterAction.GOTO) and rule.target:
            found.setdefault((str(table), rule.target), []).append(rule)
    return found


def _is_nat_context(table: Table, chain_name: str) -> bool:
    chain = table.chain(chain_name)
    if chain is not None and chain.is_base:
        return chain.type is ChainType.NAT
    return any(c.type is ChainType.NAT for c in table.chains if c.is_base) or table.name == "nat"


def _only_local(ranges: tuple[tuple[int, int], ...], family: int, local: frozenset[IPAddress]) -> bool:
    """Whether an address match is exactly this host's own addresses and its loopback: what
    iptables' `-m addrtype --dst-type LOCAL` becomes once the local routing table decides it
    (an explicit `-d` of one of them is not)."""
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    loopback = ipaddress.ip_network("127.0.0.0/8" if family == 4 else "::1/128")
    singles: set[IPAddress] = set()
    looped = False
    for lo, hi in ranges:
        first, last = make(lo), make(hi)
        if first in loopback and last in loopback:
            looped = True
        elif lo == hi:
            singles.add(first)
        else:
            return False
    own = {a for a in local if a.version == family and not a.is_loopback}
    return looped and bool(singles) and singles == own


def _describe(
    table: Table, chain: str, rule: FilterRule, jumps: list[FilterRule], local: frozenset[IPAddress] | None
) -> Forward:
    matches = [*rule.matches, *(m for j in jumps[:1] for m in j.matches)]
    protos: set[int] = set()
    port = "*"
    address = "*"
    iif = ""
    for m in matches:
        if m.field is Field.L4PROTO and not m.negate:
            protos |= {v for lo, hi in m.ranges for v in range(lo, min(hi, lo + 255) + 1)}
        elif m.field is Field.DPORT and not m.negate and port == "*":
            protos |= set(m.protos)
            port = m.value_text()
        elif m.field is Field.DADDR and not m.negate and address == "*":
            only_local = local is not None and _only_local(m.ranges, m.family, local)
            address = "local" if only_local and not m.set_name else m.value_text()
        elif m.field is Field.FIB_DADDR_TYPE and not m.negate and "local" in m.names and address == "*":
            address = "local"
        elif m.field is Field.IIF and not iif:
            iif = ("!" if m.negate else "") + ",".join(m.names)
    protocol = "tcp" if protos == {IPPROTO_TCP} else "udp" if protos == {IPPROTO_UDP} else "any"
    nat = rule.nat
    kind = "redirect" if rule.action is FilterAction.REDIRECT else "dnat"
    if nat is None or nat.unknown:
        target, t_addr, t_port = "?", None, None
    else:
        t_addr = nat.address
        t_port = nat.port
        if kind == "redirect":
            t_addr = None
        target = str(nat) if nat.address or nat.port is not None else "(unchanged)"
        if kind == "redirect":
            target = f"(this host):{nat.port}" if nat.port is not None else "(this host)"
    tag = rule.comment if rule.comment.startswith(TAG_PREFIX) else ""
    return Forward(
        str(table),
        chain,
        rule.handle,
        str(rule),
        kind,
        protocol,
        address,
        port,
        iif,
        target,
        t_addr,
        t_port,
        tag,
    )


def find_forwards(ruleset: Ruleset, local: frozenset[IPAddress] | None = None) -> list[Forward]:
    """Every DNAT/REDIRECT rule, described (no live facts yet). With the host's `local`
    addresses, a destination match on exactly those reads as `local`."""
    jumps = _jump_contexts(ruleset)
    found = []
    for table, chain, _i, rule in ruleset.rules():
        if rule.action not in (FilterAction.DNAT, FilterAction.REDIRECT):
            continue
        if not _is_nat_context(table, chain.name):
            continue
        jumpers = jumps.get((str(table), chain.name), [])
        described = _describe(table, chain.name, rule, jumpers, local)
        found.append(replace(described, hook=_hook_of(ruleset, table, chain.name)))
    return found


def _hook_of(ruleset: Ruleset, table: Table, name: str, depth: int = 0) -> str:
    """`output` for a chain only this host's own traffic reaches (the output hook, directly or
    through jumps), else `prerouting`."""
    chain = table.chain(name)
    if chain is not None and chain.is_base:
        return "output" if chain.hook is Hook.OUTPUT else "prerouting"
    callers = {
        c.name
        for c in table.chains
        for r in c.rules
        if r.action in (FilterAction.JUMP, FilterAction.GOTO) and r.target == name and c.name != name
    }
    if not callers or depth > 8:
        return "prerouting"
    hooks = {_hook_of(ruleset, table, c, depth + 1) for c in callers}
    return "output" if hooks == {"output"} else "prerouting"


@dataclass(frozen=True)
class HostFacts:
    """What the evaluation of a forward needs to know about the host (or namespace)."""

    netns: str | None
    local: frozenset[IPAddress]
    forwarding: dict[int, bool]
    route: Callable[[IPAddress], str | None]
    wan: frozenset[str]

    @classmethod
    def read(cls, netns: str | None) -> HostFacts:
        from portkit.firewall import default_route_interfaces, forwarding_state, route_lookup

        local = frozenset(i.ip for _, i in interface_addresses(netns))
        return cls(
            netns, local, forwarding_state(netns), route_lookup(netns), default_route_interfaces(netns=netns)
        )


def _first_port(text: str) -> int | None:
    head = text.strip("{} ").split(",")[0].split("-")[0].strip()
    return int(head) if head.isdigit() else None


def _public_for(fwd: Forward, facts: HostFacts, iif: str, family: int) -> IPAddress | None:
    """An address the forward's public side answers on: its own, else one of `iif`'s, else any
    local non-loopback address of the family."""
    try:
        return ipaddress.ip_address(fwd.public_address.split("/")[0])
    except ValueError:
        pass
    candidates = [
        i.ip for name, i in interface_addresses(facts.netns) if i.version == family and not i.ip.is_loopback
    ]
    on_iif = [i.ip for name, i in interface_addresses(facts.netns) if name == iif and i.version == family]
    found = on_iif or candidates
    return found[0] if found else None


def _first_address(facts: HostFacts, iif: str, family: int) -> IPAddress | None:
    """The address a redirect of traffic arriving on `iif` goes to (`ip addr` lists it first)."""
    if not iif:
        return None
    found = [i.ip for name, i in interface_addresses(facts.netns) if name == iif and i.version == family]
    return found[0] if found else None


def _verdict(decision: Decision) -> str:
    if not decision.certain:
        return "uncertain"
    return decision.outcome.split(":")[0]


def assess(fwd: Forward, ruleset: Ruleset, facts: HostFacts, *, inspect_listeners: bool = True) -> Forward:
    """The forward with its facts filled in."""
    problems: list[str] = []
    family = 6 if fwd.target_address and ":" in fwd.target_address else 4
    if fwd.public_address not in ("*", "local") and ":" in fwd.public_address:
        family = 6
    target = None
    if fwd.target_address:
        try:
            target = ipaddress.ip_address(fwd.target_address)
        except ValueError:
            target = None
    local_target = fwd.kind == "redirect" or (
        target is not None and (target in facts.local or target.is_loopback)
    )
    forwarding = facts.forwarding.get(family)
    proto = {"tcp": IPPROTO_TCP, "udp": IPPROTO_UDP}.get(fwd.protocol, IPPROTO_TCP)
    iif = (
        fwd.iif
        if fwd.iif and not fwd.iif.startswith("!") and "*" not in fwd.iif and "," not in fwd.iif
        else ""
    )
    iif = iif or next(iter(sorted(facts.wan)), "")
    public = _public_for(fwd, facts, iif, family)
    port = _first_port(fwd.public_port)
    own = fwd.hook == "output"  # this host's own connections: never forwarded
    result = replace(fwd, forwarding=None if local_target or own else forwarding)
    if public is None or port is None:
        result = replace(result, filter="uncertain", filter_reason="no public address or port to test")
    else:
        if own:
            packet = Packet(proto, public, public, 40000, port)
        else:
            packet = Packet(proto, OUTSIDE_CLIENT[family], public, 40000, port, iif=iif)
        decision = evaluate(
            ruleset, packet, direction=Direction.OUTPUT if own else None, local_addresses=facts.local,
            route=facts.route, forwarding=facts.forwarding,
        )  # fmt: skip
        final = decision.final_packet
        verdict = _verdict(decision)
        reason = decision.reason
        if verdict != "uncertain" and (final is None or (target is not None and final.dst != target)):
            verdict, reason = "uncertain", f"another rule decides {packet}: {decision.reason}"
        result = replace(result, filter=verdict, filter_reason=f"{packet}: {reason}")
        if not local_target and not own and forwarding is False:
            problems.append(f"forwarding is off ({SYSCTL[family]} = 0)")
        if verdict in ("drop", "reject"):
            problems.append(f"the firewall {verdict}s it: {reason}")
        if own:
            result = replace(result, hairpin="not-applicable", hairpin_reason="this host's own traffic")
        elif target is not None and not local_target:
            state, why = _hairpin(ruleset, facts, target, public, port, proto)
            result = replace(result, hairpin=state, hairpin_reason=why)
        else:
            result = replace(result, hairpin="not-applicable", hairpin_reason="the target is this host")
    if inspect_listeners and (target is not None or fwd.kind == "redirect"):
        t_port = fwd.target_port if fwd.target_port is not None else port
        where = target
        if fwd.kind == "redirect" and own:
            where = ipaddress.ip_address("127.0.0.1" if family == 4 else "::1")
        elif fwd.kind == "redirect":
            # Arriving traffic is redirected to the first address of the interface it came in
            # on (nf_nat_redirect_ipv4), never to loopback: a service bound to 127.0.0.1 only
            # refuses it.
            where = _first_address(facts, iif, family) or public
        if t_port is not None and where is not None and fwd.protocol in ("tcp", "udp"):
            fact = listening_at(where, t_port, Transport(fwd.protocol), facts.netns)
            result = replace(result, listening=fact)
            if fact.state == "nothing-listens":
                problems.append(fact.detail)
    return replace(result, problems=tuple(problems))


def _hairpin(
    ruleset: Ruleset,
    facts: HostFacts,
    target: IPAddress,
    public: IPAddress,
    port: int,
    proto: int,
) -> tuple[str, str]:
    lan = connected_subnet(target, facts.netns)
    if lan is None:
        return "not-applicable", f"{target} is not on a subnet of this host"
    ifname, subnet = lan
    client = next((h for h in subnet.hosts() if h != target and h not in facts.local), None)
    if client is None:
        return "uncertain", f"no client address in {subnet}"
    packet = Packet(proto, client, public, 40000, port, iif=ifname, state=CtState.NEW)
    decision = evaluate(
        ruleset, packet, local_addresses=facts.local, route=facts.route, forwarding=facts.forwarding,
        masquerade_source=masquerade_lookup(facts.netns),
    )  # fmt: skip
    final = decision.final_packet
    if not decision.certain:
        return "uncertain", f"{packet}: {decision.reason}"
    if final is None or final.dst != target:
        return "no", f"{packet} is not DNATed to {target}"
    if decision.outcome != "accept":
        return "no", f"{packet}: {decision.outcome}: {decision.reason}"
    # The same first packet is DNATed on prerouting and, for a hairpin, source-NATed on
    # postrouting: without that the server answers the client directly, from an address the
    # client never connected to.
    if decision.snat is None:
        return "no", f"{packet} is DNATed but not source-NATed: {target} would answer {client} directly"
    return "yes", f"{packet} is DNATed to {target} and its source rewritten to {decision.snat}"


def need_root(what: str) -> None:
    """The live ruleset (nftables, iptables) can only be read with CAP_NET_ADMIN."""
    import os

    from portkit.errors import PermissionNeeded

    if os.geteuid() != 0:
        raise PermissionNeeded(
            f"{what}, which needs root (CAP_NET_ADMIN): run it with sudo "
            "(without root, `portkit nat add` still writes a forward's rules)"
        )


def list_forwards(
    netns: str | None = None, *, inspect_listeners: bool = True
) -> tuple[list[Forward], tuple[str, ...]]:
    """Every forward in force on this host (or `netns`), assessed; and the ruleset's notes."""
    from portkit.firewall import read_live

    need_root("nat ls lists the forwards of the live ruleset")
    ruleset = read_live(netns)
    facts = HostFacts.read(netns)
    forwards = [
        assess(f, ruleset, facts, inspect_listeners=inspect_listeners)
        for f in find_forwards(ruleset, facts.local)
    ]
    return forwards, ruleset.notes
