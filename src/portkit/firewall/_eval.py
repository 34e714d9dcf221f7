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

The decision also says what a client or a scanner would observe (`ScannerView`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._model import (
    Action,
    Chain,
    ChainType,
    CtState,
    Field,
    Hook,
    Match,
    Reject,
    Rule,
    Ruleset,
    Table,
    Word,
)
from portkit.firewall._packet import Packet
from portkit.model.endpoints import IPAddress

# The kernel refuses rule sets that nest jumps deeper than this.
MAX_JUMP_DEPTH = 16


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

    def __str__(self) -> str:
        loc = f"{self.table} {self.chain}"
        if self.position == 0:
            return f"[{self.hook}] {loc}: {self.rule} -> {self.effect}"
        mark = "match" if self.matched else "no match"
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
        }


@dataclass(frozen=True)
class ScannerView:
    """What the other side observes: connect(), a SYN scan, or a UDP probe."""

    state: str  # open | closed | filtered | unfiltered | open|filtered
    connect: str
    scan: str
    errno: str  # the errno connect()/recv() reports, "" for success or silence
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "connect": self.connect,
            "scan": self.scan,
            "errno": self.errno or None,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Decision:
    """The verdict on one packet, the trace that explains it, and what a scanner sees."""

    packet: Packet
    verdict: Verdict
    direction: Direction
    trace: tuple[TraceStep, ...]
    reject_with: str | None = None
    final_packet: Packet | None = None  # after NAT
    decided_by: TraceStep | None = None
    scanner: ScannerView | None = None
    uncertain: tuple[str, ...] = field(default=())

    @property
    def outcome(self) -> str:
        """`accept`, `drop`, or `reject:<answer>`: the verdict as one comparable string."""
        if self.verdict is Verdict.REJECT:
            return f"reject:{self.reject_with}"
        return str(self.verdict.value)

    @property
    def reason(self) -> str:
        step = self.decided_by
        if step is None:
            return "no base chain on the path: nothing filters this packet"
        if step.position == 0:
            return f"policy {step.effect.split()[0]} of {step.table} {step.chain} ({step.hook})"
        where = f", {step.where}" if step.where else ""
        return f"rule #{step.position} of {step.table} {step.chain}{where}: {step.rule}"

    def to_json(self) -> dict[str, Any]:
        return {
            "flow": str(self.packet),
            "packet": self.packet.to_json(),
            "verdict": self.verdict.value,
            "reject_with": self.reject_with,
            "direction": self.direction.value,
            "reason": self.reason,
            "nat": (
                f"{self.final_packet.dst}"
                + (f":{self.final_packet.dport}" if self.final_packet.dport is not None else "")
                if self.final_packet
                and (self.final_packet.dst, self.final_packet.dport) != (self.packet.dst, self.packet.dport)
                else None
            ),
            "scanner": self.scanner.to_json() if self.scanner else None,
            "uncertain": list(self.uncertain),
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


def match_holds(m: Match, p: Packet) -> bool:
    """Whether one match holds for a packet, implicit dependencies included."""
    if m.family and m.family != p.family:
        return False
    if m.protos and p.l4proto not in m.protos:
        return False
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
        port = p.sport if f is Field.SPORT else p.dport
        if port is None or not p.has_ports:
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
    else:  # OPAQUE: assumed to hold unless marked otherwise; the decision is flagged uncertain
        return not m.negate
    return hit != m.negate


def rule_matches(rule: Rule, p: Packet) -> bool:
    if rule.action is Action.REJECT and not (rule.reject or Reject()).applies_to(p.family, p.l4proto):
        return False
    return all(match_holds(m, p) for m in rule.matches)


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


def scanner_view(
    p: Packet, verdict: Verdict, answer: str | None, listening: bool | None = None
) -> ScannerView:
    port = f"port {p.dport}" if p.dport is not None else "the host"
    if verdict is Verdict.ACCEPT:
        if p.l4proto == 17:
            state = {True: "open", False: "closed"}.get(listening, "unfiltered")  # type: ignore[arg-type]
            return ScannerView(
                state,
                "delivered; if nothing listens the kernel answers ICMP port-unreachable",
                "open if a service answers, closed if ICMP port-unreachable comes back",
                "ECONNREFUSED" if listening is False else "",
                f"accepted: the datagram reaches {port}",
            )
        state = {True: "open", False: "closed"}.get(listening, "unfiltered")  # type: ignore[arg-type]
        return ScannerView(
            state,
            f"connects if a service listens on {port}, else refused (RST)",
            "open (SYN-ACK) if a service listens, closed (RST) if none does",
            "ECONNREFUSED" if listening is False else "",
            f"accepted: the packet reaches {port}",
        )
    if verdict is Verdict.DROP:
        if p.l4proto == 17:
            return ScannerView(
                "open|filtered",
                "no answer: recv() waits until it times out",
                "open|filtered (no response)",
                "",
                "dropped silently",
            )
        return ScannerView(
            "filtered", "times out (no answer at all)", "filtered (no response)", "", "dropped silently"
        )
    answer = answer or "icmp-port-unreachable"
    errno = ANSWER_ERRNO.get(answer, "EHOSTUNREACH")
    said = _ERRNO_TEXT.get(errno, errno)
    if answer == "tcp-reset":
        return ScannerView(
            "closed",
            f"{said}",
            "closed (RST)",
            errno,
            "rejected with a TCP reset: indistinguishable from a closed port",
        )
    if answer.endswith("port-unreachable"):
        if p.l4proto == 17:
            return ScannerView(
                "closed",
                f"{said}",
                "closed (ICMP port-unreachable)",
                errno,
                "rejected with ICMP port-unreachable: looks like a closed UDP port",
            )
        return ScannerView(
            "filtered",
            f"{said}",
            "filtered (ICMP port-unreachable)",
            errno,
            f"rejected with {answer}: connect() sees refused, a SYN scan sees filtered",
        )
    if p.l4proto == 17 and answer in _SOFT:
        # Linux reports these to a UDP socket only when it asked for them (IP_RECVERR).
        said = f"nothing by default (a soft error: sockets with IP_RECVERR see {errno})"
    return ScannerView(
        "filtered",
        said,
        f"filtered ({answer})",
        errno,
        f"rejected with {answer}: connect() {said}, a SYN scan sees filtered",
    )


# --- chains -------------------------------------------------------------------------------


@dataclass
class _ChainResult:
    action: Action  # ACCEPT, DROP, REJECT, or a NAT action
    rule: Rule | None
    step: TraceStep


def _run_base_chain(
    table: Table,
    base: Chain,
    hook: Hook,
    p: Packet,
    trace: list[TraceStep],
    uncertain: list[str],
    misses: bool = True,
) -> _ChainResult:
    stack: list[tuple[Chain, int]] = []
    table_name = str(table)

    def policy(why: str) -> _ChainResult:
        """The base chain's policy decides: traced like a rule, at position 0."""
        step = TraceStep(
            hook, str(table), base.name, 0, f"policy {base.policy}", "", True, f"{base.policy} ({why})"
        )
        trace.append(step)
        return _ChainResult(base.policy, None, step)

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
        hit = rule_matches(rule, p)
        if not hit:
            if rule.uncertain and all(match_holds(m, p) for m in rule.matches if m.field is not Field.OPAQUE):
                uncertain.append(
                    f"{table} {chain.name} #{i + 1}: {rule} (unmodelled matches assumed not to hold)"
                )
            if misses:
                trace.append(TraceStep(hook, table_name, chain.name, i + 1, rule, rule.where, False))
            i += 1
            continue
        act = rule.action
        effect = ""
        if hit:
            if rule.uncertain:
                uncertain.append(
                    f"{table} {chain.name} #{i + 1}: {rule} (unmodelled matches assumed to hold)"
                )
            if act is Action.JUMP or act is Action.GOTO:
                effect = f"{act.value} {rule.target}"
            elif act is Action.RETURN:
                effect = "return" if stack else f"return from base chain: policy {base.policy}"
            elif act is Action.CONTINUE:
                effect = "continue"
            elif act is Action.ACCEPT:
                effect = f"accept (ends base chain {base.name})"
            elif act is Action.REJECT:
                effect = f"{rule.verdict_text()} ({(rule.reject or Reject()).answer(p.family)})"
            else:
                effect = rule.verdict_text()
        step = TraceStep(hook, table_name, chain.name, i + 1, rule, rule.where, hit, effect)
        trace.append(step)
        i += 1
        if act is Action.CONTINUE:
            continue
        if act is Action.JUMP or act is Action.GOTO:
            target = table.chain(rule.target)
            if target is None:
                uncertain.append(f"{table} {chain.name}: {act.value} to missing chain {rule.target!r}")
                continue
            if act is Action.JUMP:
                if len(stack) >= MAX_JUMP_DEPTH:
                    raise UsageError(
                        f"invalid rules: jumps nest deeper than {MAX_JUMP_DEPTH} in {table} "
                        f"(at {chain.name} -> {rule.target}); the kernel refuses to load a loop"
                    )
                stack.append((chain, i))
            chain, i = target, 0
            continue
        if act is Action.RETURN:
            if stack:
                chain, i = stack.pop()
                continue
            return policy("return from base chain")
        return _ChainResult(act, rule, step)


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
    route: Callable[[IPAddress], str] | None = None,
    trace_misses: bool = True,
) -> Decision:
    """The verdict netfilter gives `packet`, with the trace that explains it.

    `direction` fixes the path; without it the path follows the packet: with both an
    input and an output interface it is forwarded, with only an output interface it is
    locally generated, otherwise it is for this host unless prerouting DNAT sends it to
    an address that is not local (`local_addresses`; when unknown, only a DNAT to a
    different non-loopback address counts as forwarding). `route` names the output
    interface for a destination (the routing table), used when the packet has none.
    `trace_misses=False` leaves rules that did not match out of the trace (faster).
    """
    trace: list[TraceStep] = []
    uncertain: list[str] = []
    if direction is None:
        if packet.iif and packet.oif:
            direction = Direction.FORWARD
        elif packet.oif:
            direction = Direction.OUTPUT
        else:
            # Addressed to this host (its public address may sit behind NAT, off its interfaces)
            # unless prerouting DNAT sends it elsewhere: decided after prerouting.
            direction = None
    original = packet
    if direction in (Direction.FORWARD, Direction.OUTPUT) and not packet.oif and route is not None:
        packet = replace(packet, oif=route(packet.dst))
    hooks = PATHS[direction] if direction else (Hook.PREROUTING,)
    nat_done = False
    pending_route = direction is None
    hook_index = 0
    while hook_index < len(hooks):
        hook = hooks[hook_index]
        hook_index += 1
        for table, chain in ruleset.base_chains(hook, packet.family):
            if chain.type is ChainType.NAT:
                if nat_done or packet.state in (CtState.INVALID, CtState.UNTRACKED):
                    continue
                # NAT rules see the connection's first packet; later ones reuse its binding.
                probe = replace(packet, state=CtState.NEW) if packet.state is not CtState.NEW else packet
                result = _run_base_chain(table, chain, hook, probe, trace, uncertain, trace_misses)
            else:
                result = _run_base_chain(table, chain, hook, packet, trace, uncertain, trace_misses)
            act = result.action
            if act in (Action.DROP, Action.REJECT, Action.QUEUE):
                verdict = Verdict.REJECT if act is Action.REJECT else Verdict.DROP
                answer = None
                if act is Action.REJECT and result.rule is not None:
                    answer = (result.rule.reject or Reject()).answer(packet.family)
                return Decision(
                    original,
                    verdict,
                    direction or Direction.INPUT,
                    tuple(trace),
                    answer,
                    packet,
                    result.step,
                    scanner_view(original, verdict, answer, listening),
                    tuple(uncertain),
                )
            if act in (Action.DNAT, Action.REDIRECT) and result.rule is not None and not nat_done:
                nat_done = True
                packet = _apply_dnat(packet, result.rule, act)
            elif act in (Action.SNAT, Action.MASQUERADE):
                nat_done = True
        if pending_route and hook is Hook.PREROUTING:
            # The routing decision, made after prerouting NAT.
            pending_route = False
            changed = packet.dst != original.dst
            local = not changed or _is_local(packet.dst, local_addresses, False)
            direction = Direction.INPUT if local else Direction.FORWARD
            hooks = PATHS[direction]
            hook_index = 1
            if direction is Direction.FORWARD and not packet.oif and route is not None:
                packet = replace(packet, oif=route(packet.dst))
    steps = [s for s in trace if s.matched and (s.position == 0 or "accept" in s.effect)]
    return Decision(
        original,
        Verdict.ACCEPT,
        direction or Direction.INPUT,
        tuple(trace),
        None,
        packet,
        steps[-1] if steps else None,
        scanner_view(packet, Verdict.ACCEPT, None, listening),
        tuple(uncertain),
    )


def _apply_dnat(p: Packet, rule: Rule, act: Action) -> Packet:
    nat = rule.nat
    if nat is None:
        return p
    if act is Action.REDIRECT:
        return p.with_destination(
            ipaddress.ip_address("127.0.0.1" if p.family == 4 else "::1") if p.dst.is_loopback else p.dst,
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
