"""The reference evaluator: what netfilter does to one packet, and why. Pure code, no I/O.

Theory of operation (everything that decides a verdict lives in this file):

1. A packet's path is a list of hooks: to this host prerouting -> input; through it
   prerouting -> forward -> postrouting; from it output -> postrouting.
2. On each hook the base chains of every table whose family covers the packet run in
   priority order (lowest first). `accept` ends only that base chain: the next base chain
   on the hook, and the next hook, still run. `drop` and `reject` are final.
3. Inside a chain rules run in order. `jump` pushes a return point, `goto` does not;
   the end of a regular chain (or `return`) pops one, and with nothing to pop the base
   chain's policy applies. A rule without a verdict (`counter`, `log`) falls through.
4. NAT chains run for packets conntrack can track. A `dnat` on prerouting rewrites the
   destination before routing, so a DNATed packet for a container is *forwarded*: it
   meets the forward chains, never input. That is why `ufw deny 8080` (an input rule)
   does not stop a port Docker publishes (a prerouting DNAT plus a forward accept).
   A connection has two NAT bindings, one per manipulation (nf_nat_inet_fn): the
   destination, set up by the nat chains of the first hook that can (prerouting or
   output), and the source, set up on postrouting or input. The nat chains of a hook run
   (in priority order, until one binds) only while that hook's binding is not set up, so
   one first packet can be DNATed on prerouting *and* masqueraded on postrouting: hairpin
   NAT, where a LAN client reaches a LAN server through the router's public address and
   the server answers the router, not the client. A masquerade takes the address of the
   output interface (inet_select_addr: its first primary global address, one on the next
   hop's subnet first); where that is not known the source rewrite says so in `snat`.

5. Routing sits between prerouting and the next hook. A packet that is not for this host
   is forwarded only when forwarding is on (`net.ipv4.ip_forward`,
   `net.ipv6.conf.all.forwarding`) and a route exists: otherwise the kernel drops it
   silently (forwarding off) or answers ICMP network-unreachable (no route), and no
   forward chain ever sees it. Live rules come with the sysctls, the routes and the host's
   addresses; a rules file has none of them, so there a DNAT to another address forks
   (the target is the host's own or not; the host forwards or not).
6. Matches are three-valued. A match whose protocol cannot apply to the packet (`icmpv6
   type` on TCP, `tcp flags` on UDP) is false, as the dependency nft adds makes it. A
   match the model cannot decide (`limit`, `meter`, `ct status` or `tcp flags` after a
   connection's first packet, `fib daddr type` without the host's addresses, `th dport`
   on a protocol without ports, anything unmodelled) is *unknown*: evaluation
   then follows both branches, the rule matching and not, and the decision lists every
   distinct outcome. The first branch follows the importer's assumption (an unmodelled
   rate limit is below its rate, ...); the decision is certain only when every branch
   ends in the same outcome. Branching stops after MAX_BRANCHES runs (then uncertain).
   A rule whose matches are all known never forks, so the common path costs nothing.

The decision also says what a client or a scanner would observe (`ScannerView`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._model import (
    EXTRA_HEADER_PROTOS,
    Chain,
    ChainType,
    CtState,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    Reject,
    Ruleset,
    Table,
    Word,
)
from portkit.firewall._packet import Packet
from portkit.model.endpoints import IPAddress
from portkit.model.portstate import PortState
from portkit.model.protocols import IPPROTO_UDP, IPV4

# The kernel refuses rule sets that nest jumps deeper than this.
MAX_JUMP_DEPTH = 16
# Evaluation runs at most this many branches of unknown matches before giving up (uncertain).
MAX_BRANCHES = 64
# The table name of trace steps that are routing decisions, not rules.
ROUTING = "(routing)"
# How `snat` begins when a masquerade took an address portkit does not know.
MASQUERADE_UNKNOWN = "the address of "
# How `snat` begins when a snat rule's address is not known (a map, a range, unparsable).
SNAT_UNKNOWN = "unknown"


class Direction(Word):
    """Where a packet goes relative to the host whose rules are evaluated."""

    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"


PATHS: dict[Direction, tuple[Hook, ...]] = {
    Direction.INPUT: (Hook.PREROUTING, Hook.INPUT),
    Direction.FORWARD: (Hook.PREROUTING, Hook.FORWARD, Hook.POSTROUTING),
    Direction.OUTPUT: (Hook.OUTPUT, Hook.POSTROUTING),
}


class Verdict(Word):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


@dataclass(frozen=True)
class TraceStep:
    """One rule tested (or a policy applied) on the way to the verdict."""

    hook: Hook
    table: str
    chain: str
    position: int  # 1-based rule position in the chain; 0 for the chain policy
    rule: object  # the Rule (rendered only when shown: most steps of a long trace never are) or text
    where: str  # "handle 7" / "line 12" / ""
    matched: bool
    effect: str = ""
    unknown: bool = False  # the rule's matches could not be decided; `matched` is this branch's choice

    def __str__(self) -> str:
        loc = f"{self.table} {self.chain}"
        if self.position == 0:
            return f"[{self.hook}] {loc}: {self.rule} -> {self.effect}"
        mark = "match" if self.matched else "no match"
        if self.unknown:
            mark += ", unknown"
        where = f" ({self.where})" if self.where else ""
        tail = f" -> {self.effect}" if self.effect else ""
        return f"[{self.hook}] {loc} #{self.position}{where}: {self.rule}  [{mark}]{tail}"

    def to_json(self) -> dict[str, Any]:
        return {
            "hook": self.hook.value,
            "table": self.table,
            "chain": self.chain,
            "position": self.position,
            "where": self.where,
            "rule": str(self.rule),
            "matched": self.matched,
            "effect": self.effect,
            "unknown": self.unknown,
        }


@dataclass(frozen=True)
class ScannerView:
    """What the other side observes: connect(), a SYN scan, or a UDP probe."""

    state: PortState  # open, closed, filtered, unfiltered or open|filtered
    connect: str
    scan: str
    errno: str  # the errno connect()/recv() reports, "" for success or silence
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "connect": self.connect,
            "scan": self.scan,
            "errno": self.errno or None,
            "reason": self.reason,
        }


def _nat_text(packet: Packet, final: Packet | None) -> str | None:
    if final is None or (final.dst, final.dport) == (packet.dst, packet.dport):
        return None
    return f"{final.dst}" + (f":{final.dport}" if final.dport is not None else "")


def _final_json(final: Packet | None, snat: str | None) -> dict[str, Any] | None:
    """The packet as it leaves the last hook; `src` is null where source NAT rewrote it to
    an address portkit does not know (`snat` then says why: a masquerade's interface, a map)."""
    if final is None:
        return None
    out = final.to_json()
    if snat is not None and snat.startswith((MASQUERADE_UNKNOWN, SNAT_UNKNOWN)):
        out["src"] = None
    return out


def _endpoint_text(address: object, port: int | None) -> str:
    text = str(address)
    if port is None:
        return text
    return f"[{text}]:{port}" if ":" in text else f"{text}:{port}"


def _reason(step: TraceStep | None) -> str:
    if step is None:
        return "no base chain on the path: nothing filters this packet"
    if step.table == ROUTING:
        return f"routing: {step.rule}: {step.effect}"
    if step.position == 0:
        return f"policy {step.effect.split()[0]} of {step.table} {step.chain} ({step.hook})"
    where = f", {step.where}" if step.where else ""
    return f"rule #{step.position} of {step.table} {step.chain}{where}: {step.rule}"


def _outcome_text(verdict: Verdict, reject_with: str | None) -> str:
    return f"reject:{reject_with}" if verdict is Verdict.REJECT else str(verdict.value)


@dataclass(frozen=True)
class Outcome:
    """One way the packet can end when some matches are unknown: the verdict of one branch,
    with the choices (`assumed`: rule, held?) that lead to it and its trace."""

    verdict: Verdict
    direction: Direction
    trace: tuple[TraceStep, ...]
    reject_with: str | None = None
    final_packet: Packet | None = None
    decided_by: TraceStep | None = None
    scanner: ScannerView | None = None
    assumed: tuple[tuple[str, bool], ...] = ()
    # A NAT rule whose target is unknown (a map, a range) rewrote the packet on the way.
    blind: bool = False
    # Where source NAT (snat, masquerade on postrouting or input) sent the connection's source:
    # "192.0.2.1", "192.0.2.1:1024", "the address of eth0" (a masquerade, address unknown).
    snat: str | None = None

    @property
    def outcome(self) -> str:
        return _outcome_text(self.verdict, self.reject_with)

    @property
    def reason(self) -> str:
        return _reason(self.decided_by)

    def key(self, packet: Packet) -> tuple[str, str | None]:
        """What tells two outcomes apart: the verdict (with its answer) and where NAT sent the
        packet. The path alone does not: accepted through input or forward is accepted."""
        return self.outcome, _nat_text(packet, self.final_packet)

    def to_json(self, packet: Packet) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "reject_with": self.reject_with,
            "direction": self.direction.value,
            "nat": _nat_text(packet, self.final_packet),
            "snat": self.snat,
            "final": _final_json(self.final_packet, self.snat),
            "reason": self.reason,
            "scanner": self.scanner.to_json() if self.scanner else None,
            "assumed": [{"rule": r, "holds": h} for r, h in self.assumed],
            "trace": [s.to_json() for s in self.trace],
        }


@dataclass(frozen=True)
class Decision:
    """The verdict on one packet, the trace that explains it, and what a scanner sees.

    When a match could not be decided, the fields describe the first branch (the one that
    follows the importer's assumptions), `outcomes` lists every distinct way the packet can
    end, and `certain` says whether they all agree."""

    packet: Packet
    verdict: Verdict
    direction: Direction
    trace: tuple[TraceStep, ...]
    reject_with: str | None = None
    final_packet: Packet | None = None  # after NAT
    decided_by: TraceStep | None = None
    scanner: ScannerView | None = None
    uncertain: tuple[str, ...] = field(default=())
    outcomes: tuple[Outcome, ...] = ()
    certain: bool = True
    # More than MAX_BRANCHES branches: `outcomes` is what was seen before evaluation stopped.
    truncated: bool = False
    # Source NAT of the connection (see Outcome.snat); final_packet.src carries a known address.
    snat: str | None = None
    # Rules decided by what the query stated rather than by the packet (`evaluate(limits=)`).
    stated: tuple[str, ...] = ()

    @property
    def outcome(self) -> str:
        """`accept`, `drop`, or `reject:<answer>`: the verdict as one comparable string."""
        return _outcome_text(self.verdict, self.reject_with)

    @property
    def possible(self) -> frozenset[str]:
        """Every outcome string (`accept`, `drop`, `reject:...`) some branch ends in."""
        return frozenset(o.outcome for o in self.outcomes) | {self.outcome}

    @property
    def reason(self) -> str:
        return _reason(self.decided_by)

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": str(self.packet),
            "packet": self.packet.to_json(),
            "verdict": self.verdict.value,
            "reject_with": self.reject_with,
            "direction": self.direction.value,
            "reason": self.reason,
            "nat": _nat_text(self.packet, self.final_packet),
            "snat": self.snat,
            "final": _final_json(self.final_packet, self.snat),
            "scanner": self.scanner.to_json() if self.scanner else None,
            "certain": self.certain,
            "uncertain": list(self.uncertain),
            "stated": list(self.stated),
            "outcomes": [o.to_json(self.packet) for o in self.outcomes],
            "truncated": self.truncated,
            "trace": [s.to_json() for s in self.trace],
        }


# --- matching ---------------------------------------------------------------------------


def _iface_hit(names: tuple[str, ...], name: str) -> bool:
    for pattern in names:
        if pattern.endswith("*") or pattern.endswith("+"):
            if name.startswith(pattern[:-1]):
                return True
        elif pattern == name:
            return True
    return False


def _in(ranges: tuple[tuple[int, int], ...], value: int) -> bool:
    return any(lo <= value <= hi for lo, hi in ranges)


_SYN = 0x02
_ACK = 0x10
# conntrack status bits a connection's first packet is known to have or lack, beyond DNAT/SNAT.
_NEW_STATUS_FALSE = frozenset({"seen-reply", "assured", "confirmed", "dying", "expected"})


def _component(m: Match, p: Packet) -> int | str | None:
    """The packet's value for one component of a concatenation (None: not decidable)."""
    f = m.field
    if f is Field.SADDR:
        return int(p.src)
    if f is Field.DADDR:
        return int(p.dst)
    if f in (Field.SPORT, Field.DPORT):
        if not p.has_ports:
            return None
        return p.sport if f is Field.SPORT else p.dport
    if f is Field.L4PROTO:
        return p.l4proto
    if f is Field.NFPROTO:
        return p.family
    if f is Field.IIF:
        return p.iif
    if f is Field.OIF:
        return p.oif
    if f is Field.CT_STATE:
        return p.state.value
    if f in (Field.ICMP_TYPE, Field.ICMP_CODE):
        if not p.is_icmp:
            return None
        return p.icmp_type if f is Field.ICMP_TYPE else p.icmp_code
    return None


def _concat_value(m: Match, p: Packet) -> bool | None:
    key: list[int | str | None] = []
    for part in m.parts:
        if (part.family and part.family != p.family) or (part.protos and p.l4proto not in part.protos):
            return False  # nft's dependency for that component fails: no lookup at all
        key.append(_component(part, p))
    maybe = False
    for element in m.elements:
        unknown = False
        for v, want in zip(key, element, strict=True):
            if v is None:
                unknown = True
            elif isinstance(want, str):
                if not isinstance(v, str) or not _iface_hit((want,), v):
                    break
            elif isinstance(v, str) or not want[0] <= v <= want[1]:
                break
        else:
            if not unknown:
                return not m.negate
            maybe = True
    return None if maybe else m.negate


def match_value(m: Match, p: Packet) -> bool | None:
    """Whether one match holds for a packet, implicit dependencies included; None when the
    model cannot tell (an unmodelled expression, or one that reads what it does not know)."""
    if m.family and m.family != p.family:
        return False
    if m.protos and p.l4proto not in m.protos:
        return False
    if m.dynamic:
        # Undecided membership, but the dependencies of a concatenation's parts still hold or not.
        for part in m.parts:
            if (part.family and part.family != p.family) or (part.protos and p.l4proto not in part.protos):
                return False
        return None
    f = m.field
    if f is Field.NFPROTO:
        hit = _in(m.ranges, p.family)
    elif f is Field.L4PROTO:
        hit = _in(m.ranges, p.l4proto)
    elif f is Field.SADDR:
        hit = _in(m.ranges, int(p.src))
    elif f is Field.DADDR:
        hit = _in(m.ranges, int(p.dst))
    elif f in (Field.SPORT, Field.DPORT):
        if not p.has_ports:
            # `th dport` (no protocol dependency) reads bytes 2-3 of any transport header:
            # on ICMP that is the checksum, which the model does not know.
            return None if not m.protos else False
        port = p.sport if f is Field.SPORT else p.dport
        if port is None:
            return False
        hit = _in(m.ranges, port)
    elif f is Field.IIF:
        hit = _iface_hit(m.names, p.iif)
    elif f is Field.OIF:
        hit = _iface_hit(m.names, p.oif)
    elif f is Field.CT_STATE:
        hit = p.state.value in m.names and not (m.exact and len(m.names) > 1)
    elif f is Field.ICMP_TYPE:
        if not p.is_icmp or p.icmp_type is None:
            return False
        hit = _in(m.ranges, p.icmp_type)
    elif f is Field.ICMP_CODE:
        if not p.is_icmp or p.icmp_code is None:
            return False
        hit = _in(m.ranges, p.icmp_code)
    elif f is Field.CONCAT:
        return _concat_value(m, p)
    elif f is Field.FIB_DADDR_TYPE:
        kind = _address_type(p)
        if kind is None:
            return None
        hit = kind in m.names
    elif f is Field.REVERSE_PATH:
        passed = _reverse_path(m, p)
        if passed is None:
            return None
        hit = passed
    elif f is Field.TCP_FLAGS:
        # A connection's first packet is a SYN; later ones carry flags the model does not know.
        if p.state is not CtState.NEW:
            return None
        mask, value = m.ranges[0]
        hit = (_SYN & mask) == value if m.exact else (_SYN & mask) != 0
    elif f is Field.CT_STATUS:
        # Known for a connection's first packet only: DNAT (SNAT) iff a NAT rule rewrote its
        # destination (source) on the way here.
        if p.state is not CtState.NEW:
            return None
        bits = {n for n in m.names if n in ("dnat", "snat") or n in _NEW_STATUS_FALSE}
        if len(bits) != len(m.names):
            return None
        hit = ("dnat" in bits and p.dnat) or ("snat" in bits and p.snat)
        if m.exact and len(m.names) > 1:
            hit = False
    else:  # OPAQUE: unknown, unless the importer knows its value on every modelled packet
        if m.plain is not None and p.l4proto not in EXTRA_HEADER_PROTOS:
            return m.plain
        return None
    return hit != m.negate


def _reverse_path(m: Match, p: Packet) -> bool | None:
    """Whether the reverse-path check passes (ipt_rpfilter/ip6t_rpfilter, nft_fib with `saddr .
    iif`): the route back to the source leaves through the input interface (any interface
    with `loose`). Loopback traffic always passes. Decided from the host's route to the source
    (`src_route`, live rules only); a route through another interface stays undecided, since a
    multipath route may still include the input one."""
    if p.iif == "lo":
        return True
    if not p.iif or p.src_route is None:
        return None
    if p.src_route == "":
        return False  # no route back at all (unreachable, prohibited)
    if p.src_route == "lo":
        # The source is one of the host's own addresses (a local route).
        return True if "accept-local" in m.names else None
    if p.src_route == p.iif or "loose" in m.names:
        return True
    return None


def _address_type(p: Packet) -> str | None:
    """The routing table's type for the destination, as `fib daddr type` reads it."""
    if p.dst.is_multicast:
        return "multicast"
    if p.dst.is_loopback or p.dst_local:
        return "local"
    if p.dst_local is None:
        return None
    if p.family == IPV4 and int(p.dst) == 0xFFFFFFFF:
        return "broadcast"
    return "unicast"


def assumption(m: Match, p: Packet) -> bool:
    """What the first branch takes an unknown match to be: the importer's assumption for an
    unmodelled expression (`negate` on an opaque match means "assumed not to hold"), the
    snapshot of a dynamic set, an ordinary packet for the rest: addressed to this host
    (`fib daddr type local`), a plain ACK after the handshake (`tcp flags`), and otherwise
    the value looked at absent."""
    if m.dynamic:
        return match_holds(replace(m, dynamic=False), p)
    if m.field is Field.OPAQUE:
        return not m.negate
    if m.field is Field.FIB_DADDR_TYPE:
        return ("local" in m.names) != m.negate
    if m.field is Field.REVERSE_PATH:
        return not m.negate  # an ordinary packet's source is routed back the way it came
    if m.field is Field.TCP_FLAGS and m.ranges:
        mask, value = m.ranges[0]
        hit = (_ACK & mask) == value if m.exact else (_ACK & mask) != 0
        return hit != m.negate
    return m.negate


def match_holds(m: Match, p: Packet) -> bool:
    """`match_value`, with an unknown answer replaced by the assumption."""
    v = match_value(m, p)
    return assumption(m, p) if v is None else v


def rule_value(rule: FilterRule, p: Packet) -> bool | None:
    """Three-valued: False as soon as one match fails, None if some cannot be decided."""
    if rule.action is FilterAction.REJECT and not (rule.reject or Reject()).applies_to(p.family, p.l4proto):
        return False
    unknown = False
    for m in rule.matches:
        v = match_value(m, p)
        if v is None:
            unknown = True
        elif not v:
            return False
    return None if unknown else True


def rule_matches(rule: FilterRule, p: Packet) -> bool:
    """`rule_value` with unknown matches at their assumptions."""
    v = rule_value(rule, p)
    if v is None:
        return all(match_holds(m, p) for m in rule.matches)
    return v


# --- scanner view -------------------------------------------------------------------------

# The errno a socket sees for each answer (Linux icmp_err_convert / icmpv6_err_convert).
ANSWER_ERRNO: dict[str, str] = {
    "tcp-reset": "ECONNREFUSED",
    "icmp-port-unreachable": "ECONNREFUSED",
    "icmp-host-unreachable": "EHOSTUNREACH",
    "icmp-net-unreachable": "ENETUNREACH",
    "icmp-prot-unreachable": "ENOPROTOOPT",
    "icmp-net-prohibited": "ENETUNREACH",
    "icmp-host-prohibited": "EHOSTUNREACH",
    "icmp-admin-prohibited": "EHOSTUNREACH",
    "icmpv6-port-unreachable": "ECONNREFUSED",
    "icmpv6-no-route": "ENETUNREACH",
    "icmpv6-admin-prohibited": "EACCES",
    "icmpv6-addr-unreachable": "EHOSTUNREACH",
    "icmpv6-policy-fail": "EACCES",
    "icmpv6-reject-route": "EACCES",
}
# ICMP errors Linux treats as transient (icmp_err_convert ... fatal = 0).
_SOFT = {"icmp-net-unreachable", "icmp-host-unreachable", "icmpv6-no-route", "icmpv6-addr-unreachable"}
_ERRNO_TEXT = {
    "ECONNREFUSED": "refused (Connection refused)",
    "EHOSTUNREACH": "fails: No route to host",
    "ENETUNREACH": "fails: Network is unreachable",
    "EACCES": "fails: Permission denied",
    "ENOPROTOOPT": "fails: Protocol not available",
}


# An accepted packet: open or closed when the caller knows whether something listens, else unfiltered.
_LISTENING_STATE = {True: PortState.OPEN, False: PortState.CLOSED, None: PortState.UNFILTERED}


def scanner_view(
    p: Packet, verdict: Verdict, answer: str | None, listening: bool | None = None
) -> ScannerView:
    port = f"port {p.dport}" if p.dport is not None else "the host"
    if verdict is Verdict.ACCEPT:
        if p.l4proto == IPPROTO_UDP:
            state = _LISTENING_STATE[listening]
            return ScannerView(
                state,
                "delivered; if nothing listens the kernel answers ICMP port-unreachable",
                "open if a service answers, closed if ICMP port-unreachable comes back",
                "ECONNREFUSED" if listening is False else "",
                f"accepted: the datagram reaches {port}",
            )
        state = _LISTENING_STATE[listening]
        return ScannerView(
            state,
            f"connects if a service listens on {port}, else refused (RST)",
            "open (SYN-ACK) if a service listens, closed (RST) if none does",
            "ECONNREFUSED" if listening is False else "",
            f"accepted: the packet reaches {port}",
        )
    if verdict is Verdict.DROP:
        if p.l4proto == IPPROTO_UDP:
            return ScannerView(
                PortState.OPEN_FILTERED,
                "no answer: recv() waits until it times out",
                "open|filtered (no response)",
                "",
                "dropped silently",
            )
        return ScannerView(
            PortState.FILTERED,
            "times out (no answer at all)",
            "filtered (no response)",
            "",
            "dropped silently",
        )
    answer = answer or "icmp-port-unreachable"
    errno = ANSWER_ERRNO.get(answer, "EHOSTUNREACH")
    said = _ERRNO_TEXT.get(errno, errno)
    if answer == "tcp-reset":
        return ScannerView(
            PortState.CLOSED,
            f"{said}",
            "closed (RST)",
            errno,
            "rejected with a TCP reset: indistinguishable from a closed port",
        )
    if answer.endswith("port-unreachable"):
        if p.l4proto == IPPROTO_UDP:
            return ScannerView(
                PortState.CLOSED,
                f"{said}",
                "closed (ICMP port-unreachable)",
                errno,
                "rejected with ICMP port-unreachable: looks like a closed UDP port",
            )
        return ScannerView(
            PortState.FILTERED,
            f"{said}",
            "filtered (ICMP port-unreachable)",
            errno,
            f"rejected with {answer}: connect() sees refused, a SYN scan sees filtered",
        )
    if p.l4proto == IPPROTO_UDP and answer in _SOFT:
        # Linux reports these to a UDP socket only when it asked for them (IP_RECVERR).
        said = f"nothing by default (a soft error: sockets with IP_RECVERR see {errno})"
    return ScannerView(
        PortState.FILTERED,
        said,
        f"filtered ({answer})",
        errno,
        f"rejected with {answer}: connect() {said}, a SYN scan sees filtered",
    )


# --- chains -------------------------------------------------------------------------------


# conntrack looks packets up at this priority on prerouting and output
# (NF_IP_PRI_CONNTRACK): a notrack in a chain before it leaves the packet untracked.
CONNTRACK_PRIORITY = -200


@dataclass
class _ChainResult:
    action: FilterAction  # ACCEPT, DROP, REJECT, or a NAT action
    rule: FilterRule | None
    step: TraceStep
    # A notrack statement ran before conntrack: the packet goes on UNTRACKED.
    untracked: bool = False


class _Branch:
    """The choices of one branch: unknown rule k takes `prefix[k]`, or its assumption once
    the prefix is used up. `taken` records every choice made, in order."""

    __slots__ = ("assumed", "limits", "notes", "prefix", "stated", "taken")

    def __init__(self, prefix: tuple[bool, ...], limits: bool | None = None) -> None:
        self.prefix = prefix
        self.taken: list[bool] = []
        self.assumed: list[tuple[str, bool]] = []
        self.notes: list[str] = []
        # Rate and count matches, when the query states them: True, limits not reached
        # (ordinary traffic); False, reached (a flood); None, undecided (forked).
        self.limits = limits
        self.stated: list[str] = []  # the rules those stated limits decided

    def choose(self, what: str, assumed: bool) -> bool:
        k = len(self.taken)
        value = self.prefix[k] if k < len(self.prefix) else assumed
        self.taken.append(value)
        self.assumed.append((what, value))
        return value


def _stated_limits(rule: FilterRule, p: Packet, branch: _Branch) -> bool | None:
    """A rule whose only undecided matches are rate or history matches, decided by the limits
    the query states (the ordinary case is each match's assumption); None otherwise."""
    unknown = [m for m in rule.matches if match_value(m, p) is None]
    if not unknown or not all(m.rate for m in unknown):
        return None
    return all(assumption(m, p) == branch.limits for m in unknown)


def _with_reverse_route(route: Callable[[IPAddress], str | None], p: Packet) -> Packet:
    """The packet with the host's route back to its source looked up (asked only when a
    reverse-path match needs it): "" for no route; left unknown when routes cannot be read."""
    dev = route(p.src)
    if dev is None:
        return replace(p, src_route="")
    return replace(p, src_route=dev) if dev else p


def _run_base_chain(walk: _Walk, table: Table, base: Chain, hook: Hook, p: Packet) -> _ChainResult:
    """One base chain from its first rule to the verdict that ends it (or its policy),
    following jumps and gotos; every rule tested goes on the walk's trace."""
    trace, branch, misses = walk.trace, walk.branch, walk.misses
    stack: list[tuple[Chain, int]] = []
    untracked = False
    table_name = str(table)

    def policy(why: str) -> _ChainResult:
        """The base chain's policy decides: traced like a rule, at position 0."""
        step = TraceStep(
            hook, str(table), base.name, 0, f"policy {base.policy}", "", True, f"{base.policy} ({why})"
        )
        trace.append(step)
        return _ChainResult(base.policy, None, step, untracked)

    chain, i = base, 0
    steps = 0
    while True:
        steps += 1
        if steps > 1_000_000:  # only a corrupt model could loop; the kernel refuses loops
            raise RuntimeError(f"evaluation did not terminate in {table} {base.name}")
        if i >= len(chain.rules):
            if stack:
                chain, i = stack.pop()
                continue
            return policy("end of base chain")
        rule = chain.rules[i]
        value = rule_value(rule, p)
        if (
            value is None
            and walk.route is not None
            and p.src_route is None
            and p.iif
            and any(m.field is Field.REVERSE_PATH for m in rule.matches)
        ):
            p = _with_reverse_route(walk.route, p)
            value = rule_value(rule, p)
        if value is None and branch.limits is not None:
            value = _stated_limits(rule, p, branch)
            if value is not None:
                held = "held" if value else "did not hold"
                reached = "limits not reached" if branch.limits else "limits reached"
                branch.stated.append(f"{table} {chain.name} #{i + 1}: {rule} ({held}: {reached})")
        unknown = value is None
        if value is None:
            what = f"{table} {chain.name} #{i + 1}: {rule}"
            assumed = all(assumption(m, p) for m in rule.matches if match_value(m, p) is None)
            # A rule without a verdict changes nothing either way: nothing to fork.
            hit = assumed if rule.action is FilterAction.CONTINUE else branch.choose(what, assumed)
            branch.notes.append(
                f"{what} (undecidable matches {'held' if hit else 'did not hold'}"
                f"{'' if hit == assumed else ', against the assumption'})"
            )
        else:
            hit = value
        if not hit:
            if misses or unknown:
                trace.append(
                    TraceStep(hook, table_name, chain.name, i + 1, rule, rule.where, False, "", unknown)
                )
            i += 1
            continue
        act = rule.action
        if act is FilterAction.JUMP or act is FilterAction.GOTO:
            effect = f"{act.value} {rule.target}"
        elif act is FilterAction.RETURN:
            effect = "return" if stack else f"return from base chain: policy {base.policy}"
        elif act is FilterAction.CONTINUE:
            effect = "continue"
        elif act is FilterAction.ACCEPT:
            effect = f"accept (ends base chain {base.name})"
        elif act is FilterAction.REJECT:
            effect = f"{rule.verdict_text()} ({(rule.reject or Reject()).answer(p.family)})"
        else:
            effect = rule.verdict_text()
        if rule.untracks and base.priority < CONNTRACK_PRIORITY and hook in (Hook.PREROUTING, Hook.OUTPUT):
            untracked = True
            effect = f"{effect}; notrack: the packet is untracked from here on" if effect else "notrack"
        step = TraceStep(hook, table_name, chain.name, i + 1, rule, rule.where, True, effect, unknown)
        trace.append(step)
        i += 1
        if act is FilterAction.CONTINUE:
            continue
        if act is FilterAction.JUMP or act is FilterAction.GOTO:
            target = table.chain(rule.target)
            if target is None:
                branch.notes.append(f"{table} {chain.name}: {act.value} to missing chain {rule.target!r}")
                continue
            if act is FilterAction.JUMP:
                if len(stack) >= MAX_JUMP_DEPTH:
                    raise UsageError(
                        f"invalid rules: jumps nest deeper than {MAX_JUMP_DEPTH} in {table} "
                        f"(at {chain.name} -> {rule.target}); the kernel refuses to load a loop"
                    )
                stack.append((chain, i))
            chain, i = target, 0
            continue
        if act is FilterAction.RETURN:
            if stack:
                chain, i = stack.pop()
                continue
            return policy("return from base chain")
        return _ChainResult(act, rule, step, untracked)


def _is_local(address: IPAddress, local: Collection[IPAddress] | None, default: bool) -> bool:
    if address.is_loopback:
        return True
    if local is None:
        return default
    return address in local


def evaluate(
    ruleset: Ruleset,
    packet: Packet,
    *,
    direction: Direction | None = None,
    local_addresses: Collection[IPAddress] | None = None,
    listening: bool | None = None,
    route: Callable[[IPAddress], str | None] | None = None,
    forwarding: Mapping[int, bool] | None = None,
    trace_misses: bool = True,
    masquerade_source: Callable[[str, IPAddress], IPAddress | None] | None = None,
    limits: bool | None = None,
) -> Decision:
    """The verdict netfilter gives `packet`, with the trace that explains it.

    `direction` fixes the path; without it the path follows the packet: with both an
    input and an output interface it is forwarded, with only an output interface it is
    locally generated, otherwise it is for this host unless prerouting DNAT sends it to
    an address that is not local (`local_addresses`; when unknown, only a DNAT to a
    different non-loopback address counts as forwarding). `route` names the output
    interface for a destination (the routing table; "" when unknown, None when there is
    no route), used when the packet has none. `forwarding` says per IP version (4, 6)
    whether this host forwards; when it is not given and only a DNAT makes the packet
    forwarded, both cases are followed (the decision is then uncertain).
    `trace_misses=False` leaves rules that did not match out of the trace (faster).
    `masquerade_source(oif, dst)` is the address a masquerade on output interface `oif`
    takes for a packet to `dst` (None when unknown); without it a masquerade's address is
    unknown and `snat` names the interface.
    `limits` states the rate and count matches (rate limits, quotas, connection counts; not
    a source's history, `-m recent`): True, not reached (ordinary traffic); False, reached (a
    flood); None, not known, so a rule that hinges on one forks. The rules they decided are
    in `stated`.

    Unknown matches fork the evaluation (see the module docstring): the fields describe
    the first branch, `outcomes` every distinct one, `certain` whether they agree.
    """
    runs: list[tuple[Outcome, _Branch]] = []
    pending: list[tuple[bool, ...]] = [()]
    truncated = False
    while pending:
        if len(runs) >= MAX_BRANCHES:
            truncated = True
            break
        prefix = pending.pop()
        branch = _Branch(prefix, limits)
        out = _evaluate_branch(
            ruleset, packet, direction, local_addresses, listening, route, forwarding, trace_misses, branch,
            masquerade_source,
        )  # fmt: skip
        runs.append((out, branch))
        for k in range(len(prefix), len(branch.taken)):
            pending.append((*branch.taken[:k], not branch.taken[k]))
    first, first_branch = runs[0]
    outcomes: dict[tuple[str, str | None], Outcome] = {}
    for out, branch in runs:
        outcomes.setdefault(out.key(packet), replace(out, assumed=tuple(branch.assumed)))
    notes = list(first_branch.notes)
    if truncated:
        notes.append(f"more than {MAX_BRANCHES} branches of undecidable matches: not all were followed")
    return Decision(
        packet,
        first.verdict,
        first.direction,
        first.trace,
        first.reject_with,
        first.final_packet,
        first.decided_by,
        first.scanner,
        tuple(notes),
        tuple(outcomes.values()),
        len(outcomes) == 1 and not truncated and not any(out.blind for out, _ in runs),
        truncated,
        first.snat,
        tuple(first_branch.stated),
    )


def _routing_step(rule: str, effect: str) -> TraceStep:
    return TraceStep(Hook.PREROUTING, ROUTING, "decision", 0, rule, "", True, effect)


class _Walk:
    """One branch's walk of a packet along its path: the rule set, the inputs that stay fixed,
    and what accumulates on the way (the trace, which NAT bindings are set up, whether a NAT
    target was unknown). Each stage of the path is a function that takes the packet and
    returns the packet to continue with, or the Outcome that ends the walk."""

    __slots__ = (
        "blind",
        "branch",
        "dst_bound",
        "listening",
        "local_addresses",
        "masquerade_source",
        "misses",
        "original",
        "route",
        "ruleset",
        "snat",
        "src_bound",
        "trace",
    )

    def __init__(
        self,
        ruleset: Ruleset,
        original: Packet,
        local_addresses: Collection[IPAddress] | None,
        listening: bool | None,
        route: Callable[[IPAddress], str | None] | None,
        misses: bool,
        branch: _Branch,
        masquerade_source: Callable[[str, IPAddress], IPAddress | None] | None = None,
    ) -> None:
        self.ruleset = ruleset
        self.original = original  # as it arrived, for what the sender observes of a drop
        self.local_addresses = local_addresses
        self.listening = listening
        self.route = route
        self.misses = misses
        self.branch = branch
        self.masquerade_source = masquerade_source
        self.trace: list[TraceStep] = []
        # The connection's two NAT bindings (nf_nat_initialized per manip type).
        self.dst_bound = False
        self.src_bound = False
        self.snat: str | None = None
        self.blind = False

    def stop(
        self, verdict: Verdict, answer: str | None, packet: Packet, step: TraceStep, direction: Direction
    ) -> Outcome:
        """The walk ends with a drop or reject: the sender sees it for the packet it sent."""
        return Outcome(
            verdict,
            direction,
            tuple(self.trace),
            answer,
            packet,
            step,
            scanner_view(self.original, verdict, answer, self.listening),
            blind=self.blind,
            snat=self.snat,
        )

    def delivered(self, packet: Packet, direction: Direction) -> Outcome:
        """The walk reached the end of its path: accepted, decided by the last accept seen."""
        steps = [s for s in self.trace if s.matched and (s.position == 0 or "accept" in s.effect)]
        return Outcome(
            Verdict.ACCEPT,
            direction,
            tuple(self.trace),
            None,
            packet,
            steps[-1] if steps else None,
            scanner_view(packet, Verdict.ACCEPT, None, self.listening),
            blind=self.blind,
            snat=self.snat,
        )


def _evaluate_branch(
    ruleset: Ruleset,
    packet: Packet,
    direction: Direction | None,
    local_addresses: Collection[IPAddress] | None,
    listening: bool | None,
    route: Callable[[IPAddress], str | None] | None,
    forwarding: Mapping[int, bool] | None,
    trace_misses: bool,
    branch: _Branch,
    masquerade_source: Callable[[str, IPAddress], IPAddress | None] | None = None,
) -> Outcome:
    """The kernel's walk: output -> postrouting for a packet this host sends; prerouting ->
    routing decision -> input, or forward -> postrouting, for one it receives."""
    stated = direction is not None or bool(packet.iif and packet.oif)
    if direction is None:
        if packet.iif and packet.oif:
            direction = Direction.FORWARD
        elif packet.oif:
            direction = Direction.OUTPUT
    if local_addresses is not None:
        packet = replace(packet, dst_local=_is_local(packet.dst, local_addresses, False))
    walk = _Walk(ruleset, packet, local_addresses, listening, route, trace_misses, branch, masquerade_source)
    if direction is Direction.OUTPUT:
        return _local_out(walk, packet)
    # Addressed to this host (its public address may sit behind NAT, off its interfaces)
    # unless prerouting DNAT sends it elsewhere: decided by routing, after prerouting.
    arrived = _hook(walk, Hook.PREROUTING, packet, direction or Direction.INPUT)
    if isinstance(arrived, Outcome):
        return arrived
    if direction is None:
        direction = _routing_decision(walk, arrived)
    if direction is Direction.INPUT:
        return _local_in(walk, arrived)
    return _forward(walk, arrived, forwarding, stated)


def _routing_decision(walk: _Walk, packet: Packet) -> Direction:
    """Input or forward, for a packet whose path its interfaces did not fix: it stays on this
    host unless prerouting DNAT sent it to an address that is not the host's own."""
    changed = packet.dst != walk.original.dst
    local = not changed or _is_local(packet.dst, walk.local_addresses, False)
    if changed and not local and walk.local_addresses is None:
        # A rules file does not say which addresses are the host's own.
        what = f"{packet.dst} (a DNAT target) is not an address of this host"
        local = not walk.branch.choose(f"{what} (not known from a rules file)", True)
        walk.branch.notes.append(f"{what}: {'assumed not' if local else 'assumed'}")
    return Direction.INPUT if local else Direction.FORWARD


def _local_in(walk: _Walk, packet: Packet) -> Outcome:
    """Input: the last hook of a packet delivered to this host."""
    delivered = _hook(walk, Hook.INPUT, packet, Direction.INPUT)
    if isinstance(delivered, Outcome):
        return delivered
    return walk.delivered(delivered, Direction.INPUT)


def _forward(walk: _Walk, packet: Packet, forwarding: Mapping[int, bool] | None, stated: bool) -> Outcome:
    """Routing for the forward path (forwarding on, a route), then forward -> postrouting."""
    routed = _route_forward(packet, walk.route, forwarding, stated, walk.branch)
    if isinstance(routed, TraceStep):
        walk.trace.append(routed)
        verdict = Verdict.REJECT if "unreachable" in routed.effect else Verdict.DROP
        answer = None
        if verdict is Verdict.REJECT:
            answer = "icmp-net-unreachable" if packet.family == IPV4 else "icmpv6-no-route"
        return walk.stop(verdict, answer, packet, routed, Direction.FORWARD)
    forwarded = _hook(walk, Hook.FORWARD, routed, Direction.FORWARD)
    if isinstance(forwarded, Outcome):
        return forwarded
    sent = _hook(walk, Hook.POSTROUTING, forwarded, Direction.FORWARD)
    if isinstance(sent, Outcome):
        return sent
    return walk.delivered(sent, Direction.FORWARD)


def _local_out(walk: _Walk, packet: Packet) -> Outcome:
    """A packet this host sends: routed first (its output interface), then output -> postrouting."""
    if not packet.oif and walk.route is not None:
        packet = replace(packet, oif=walk.route(packet.dst) or "")
    out = _hook(walk, Hook.OUTPUT, packet, Direction.OUTPUT)
    if isinstance(out, Outcome):
        return out
    sent = _hook(walk, Hook.POSTROUTING, out, Direction.OUTPUT)
    if isinstance(sent, Outcome):
        return sent
    return walk.delivered(sent, Direction.OUTPUT)


def _hook(walk: _Walk, hook: Hook, packet: Packet, direction: Direction) -> Packet | Outcome:
    """One hook: the base chains of every table on it, lowest priority first. Returns the
    packet to continue with (NAT and notrack may have changed it), or the Outcome of a drop,
    reject or an unread queue."""
    branch = walk.branch
    # Which binding this hook's nat chains set up: the destination where the packet enters
    # (prerouting) or leaves a local socket (output), the source on the way out.
    source_hook = hook in (Hook.POSTROUTING, Hook.INPUT)
    for table, chain in walk.ruleset.base_chains(hook, packet.family):
        if chain.type is ChainType.NAT:
            bound = walk.src_bound if source_hook else walk.dst_bound
            if bound or packet.state in (CtState.INVALID, CtState.UNTRACKED):
                continue
            # NAT rules see the connection's first packet; later ones reuse its binding.
            probe = replace(packet, state=CtState.NEW) if packet.state is not CtState.NEW else packet
            result = _run_base_chain(walk, table, chain, hook, probe)
        else:
            result = _run_base_chain(walk, table, chain, hook, packet)
        if result.untracked:
            packet = replace(packet, state=CtState.UNTRACKED)
        act = result.action
        if act is FilterAction.QUEUE and branch.choose(
            f"{table} {chain.name}: {result.rule}: a userspace program reads the queue "
            "and accepts the packet (with none, the kernel drops it)",
            False,
        ):
            continue  # accepted by the queue's reader: like accept, this base chain ends
        if act in (FilterAction.DROP, FilterAction.REJECT, FilterAction.QUEUE):
            verdict = Verdict.REJECT if act is FilterAction.REJECT else Verdict.DROP
            answer = None
            if act is FilterAction.REJECT and result.rule is not None:
                answer = (result.rule.reject or Reject()).answer(packet.family)
            return walk.stop(verdict, answer, packet, result.step, direction)
        rule = result.rule
        if act in (FilterAction.DNAT, FilterAction.REDIRECT) and rule is not None and not walk.dst_bound:
            walk.dst_bound = True
            packet = _destination_nat(walk, f"{table} {chain.name}", rule, act, packet)
        elif act in (FilterAction.SNAT, FilterAction.MASQUERADE) and rule is not None and not walk.src_bound:
            walk.src_bound = True
            packet = _source_nat(walk, f"{table} {chain.name}", rule, act, packet, result.step)
    return packet


def _destination_nat(walk: _Walk, where: str, rule: FilterRule, act: FilterAction, packet: Packet) -> Packet:
    """The packet after a `dnat` or `redirect` bound the connection's destination."""
    if rule.nat is not None and rule.nat.unknown:
        walk.blind = True
        walk.branch.notes.append(
            f"{where}: {rule} rewrites the destination to a value "
            "portkit cannot compute (a map or a range): the path after it is a guess"
        )
    rewritten = _apply_dnat(packet, rule, act)
    # conntrack sets the DNAT status bit only when the binding changes the tuple
    # (nf_nat_setup_info): a redirect or dnat to where the packet already goes
    # leaves `ct status dnat` false.
    changed = (rewritten.dst, rewritten.dport) != (packet.dst, packet.dport)
    if act is FilterAction.REDIRECT and not changed and not packet.dst.is_loopback:
        # A redirect goes to the input interface's first address, which the model
        # does not know: the same address (nothing changes) or another one.
        changed = not walk.branch.choose(
            f"{where}: {rule}: {packet.dst} is the first address of "
            f"{packet.iif or 'the input interface'}, so the redirect changes nothing "
            "(no DNAT status)",
            True,
        )
    packet = replace(rewritten, dnat=changed)
    if walk.local_addresses is not None or packet.dst.is_loopback:
        return replace(packet, dst_local=_is_local(packet.dst, walk.local_addresses, False))
    return replace(packet, dst_local=None)


def _source_nat(
    walk: _Walk, where: str, rule: FilterRule, act: FilterAction, packet: Packet, step: TraceStep
) -> Packet:
    """The packet after a `snat` or `masquerade` bound the connection's source. A masquerade
    takes the output interface's address (`masquerade_source`); the trace step of the rule
    says what the source became."""
    nat = rule.nat
    address: IPAddress | None = None
    if act is FilterAction.MASQUERADE:
        if packet.oif and walk.masquerade_source is not None:
            address = walk.masquerade_source(packet.oif, packet.dst)
        if address is not None and address.version != packet.family:
            address = None
    elif nat is not None and nat.address:
        try:
            address = ipaddress.ip_address(nat.address)
        except ValueError:
            address = None
        if address is not None and address.version != packet.family:
            address = None
    port = nat.port if nat is not None and nat.port is not None and packet.has_ports else None
    if nat is not None and nat.unknown:
        walk.branch.notes.append(
            f"{where}: {rule} rewrites the source to a value portkit cannot compute (a map or a range)"
        )
    rewritten = replace(packet, src=address if address is not None else packet.src, src_route=None)
    if port is not None:
        rewritten = replace(rewritten, sport=port)
    if address is None and act is FilterAction.MASQUERADE:
        text = MASQUERADE_UNKNOWN + (packet.oif or "the output interface")
        if port is not None:
            text += f", port {port}"
        changed = True
    elif address is None and (nat is None or nat.unknown or nat.address):
        text = SNAT_UNKNOWN + (" (a map or a range)" if nat is not None and nat.unknown else "")
        changed = True
    else:
        text = _endpoint_text(rewritten.src, port)
        # As for DNAT: the SNAT status bit only when the binding changes the tuple.
        changed = (rewritten.src, rewritten.sport) != (packet.src, packet.sport)
    # A binding that keeps the tuple (a masquerade of this host's own address) rewrites nothing.
    walk.snat = text if changed else None
    if walk.trace and walk.trace[-1] is step:
        said = f"source -> {text}" if changed else f"source stays {text}"
        walk.trace[-1] = replace(step, effect=f"{step.effect}: {said}")
    return replace(rewritten, snat=changed)


def _route_forward(
    packet: Packet,
    route: Callable[[IPAddress], str | None] | None,
    forwarding: Mapping[int, bool] | None,
    stated: bool,
    branch: _Branch,
) -> Packet | TraceStep:
    """The forward path's routing: the packet with its output interface, or the step that
    ends it (forwarding off, no route)."""
    sysctl = "net.ipv4.ip_forward" if packet.family == IPV4 else "net.ipv6.conf.all.forwarding"
    on = forwarding.get(packet.family) if forwarding is not None else None
    if on is None and not stated:
        # A file says nothing about the host's sysctls: a forward path that only a DNAT
        # opened holds only if the host forwards. Both cases are followed.
        on = branch.choose(f"{sysctl} = 1 (not known from a rules file)", True)
        branch.notes.append(
            f"a DNAT sends this packet to {packet.dst}, which is not a local address: the forward "
            f"path needs {sysctl} = 1 and a route, which a rules file does not say "
            f"({'assumed' if on else 'assumed not'}; --forwarding on|off states it)"
        )
    if on is False:
        if packet.family == IPV4 and packet.iif:
            # The kernel asks the input interface; net.ipv4.ip_forward sets it for all of them.
            sysctl = f"net.ipv4.conf.{packet.iif}.forwarding"
        return _routing_step(
            f"{sysctl} = 0", f"drop (this host does not forward; {packet.dst} is not a local address)"
        )
    if not packet.oif and route is not None:
        dev = route(packet.dst)
        if dev is None:
            return _routing_step(f"no route to {packet.dst}", "reject (network unreachable, ICMP error)")
        return replace(packet, oif=dev)
    return packet


def _apply_dnat(p: Packet, rule: FilterRule, act: FilterAction) -> Packet:
    nat = rule.nat
    if nat is None:
        return p
    if act is FilterAction.REDIRECT:
        return p.with_destination(
            ipaddress.ip_address("127.0.0.1" if p.family == IPV4 else "::1") if p.dst.is_loopback else p.dst,
            nat.port,
        )
    address = None
    if nat.address:
        try:
            address = ipaddress.ip_address(nat.address)
        except ValueError:
            address = None
        if address is not None and address.version != p.family:
            address = None
    return p.with_destination(address, nat.port)
