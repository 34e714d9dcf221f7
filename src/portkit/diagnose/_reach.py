"""Why HOST:PORT cannot be reached: `diagnose_reach`, and `decide`, its pure core.

`decide` reads a `ReachFacts` (portkit.diagnose._facts) and walks the causes in the order a
connection attempt meets them (`REACH_ORDER`): each rule of `RULES` looks at one layer and
returns its findings; every rule also leaves a `Check`, passed or not. The probe has the last
word, both ways: a connection that succeeds is OK whatever the model says (the model may be
uncertain), and a probe that fails when no rule found a cause is never called OK: the probe's
own answer (silence, a refusal) then names the code, and the certainty says the model did not
explain it.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from portkit.diagnose._facts import FirewallView, HopFacts, ListenerFacts, PortSet, ReachFacts
from portkit.diagnose._model import (
    REACH_ORDER,
    Certainty,
    Check,
    Code,
    Diagnosis,
    Evidence,
    Finding,
    Fix,
    Source,
    primary_first,
)
from portkit.diagnose._probe import ProbeResult
from portkit.model.protocols import Transport
from portkit.sockets._netns import Namespace

if TYPE_CHECKING:
    from portkit.firewall import Decision

DEFAULT_TIMEOUT = 1.0


def _in(prefix: str, commands: list[str]) -> str:
    """A shell line that runs `commands` (in order, stopping at a failure) in a namespace."""
    joined = " && ".join(commands)
    if not prefix:
        return joined
    return prefix + (commands[0] if len(commands) == 1 else f"sh -c {shlex.quote(joined)}")


def _where(hop: HopFacts) -> str:
    return "this namespace" if hop.where == "this namespace" else f"netns {hop.where}"


def _target(facts: ReachFacts) -> str:
    host = f"[{facts.host}]" if ":" in facts.host else facts.host
    return f"{host}:{facts.port}/{facts.transport.value}"


# --- the rules: one layer each, in path order ------------------------------------------------

Rule = Callable[[ReachFacts], tuple[list[Finding], Check]]


def _resolution(facts: ReachFacts) -> tuple[list[Finding], Check]:
    r = facts.resolution
    ev = Evidence(
        f"resolving {r.name}", Source.RESOLVER, r.error or ", ".join(r.addresses) + f" (from {r.source})"
    )
    if r.addresses:
        return [], Check("name resolves", True, ev.showed)
    fix = Fix(f"check the name, or add it to {r.source.split()[0]} / the DNS zone")
    summary = f"{r.name} does not resolve: {r.error} (asked {r.source})"
    return [Finding(Code.NAME_NOT_RESOLVED, summary, (ev,), fix)], Check("name resolves", False, r.error)


def _server_listeners(facts: ReachFacts, port: int) -> list[ListenerFacts]:
    return [lst for lst in facts.listeners if lst.where == facts.server and lst.port == port]


def _final(facts: ReachFacts) -> tuple[str, int]:
    return facts.dnat if facts.dnat else (facts.address or "", facts.port)


def _family(address: str) -> int:
    return ipaddress.ip_address(address).version


def _is_wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::", "*")


def _serves(facts: ReachFacts, lst: ListenerFacts, family: int) -> bool:
    """Whether a listener takes connections of IP `family`: its own, or IPv4 too for a [::]
    socket without IPV6_V6ONLY (IPv4-mapped addresses)."""
    return lst.family == family or (family == 4 and lst.address == "::" and facts.dual_stack is True)


def _accepts(facts: ReachFacts, lst: ListenerFacts, address: str) -> bool:
    """Whether a listener's bound address takes connections to `address`."""
    return _serves(facts, lst, _family(address)) and (_is_wildcard(lst.address) or lst.address == address)


def _family_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    if facts.server is None or facts.address is None:
        return [], Check("address family", None, "the server side is not on this host")
    if not facts.sockets_read:
        return [], Check("address family", None, f"the sockets of {facts.server} could not be read")
    address, port = _final(facts)
    here = _server_listeners(facts, port)
    family = _family(address)
    same = [lst for lst in here if _serves(facts, lst, family)]
    other = [lst for lst in here if not _serves(facts, lst, family)]
    probe = facts.probe
    refused = probe is not None and probe.outcome == "refused"
    v6only = (
        family == 4
        and not same
        and any(lst.address == "::" for lst in other)
        and (facts.dual_stack is False or (facts.dual_stack is None and refused))
    )
    if same or not other:
        return [], Check(
            "address family", True, f"a listener of IPv{family} exists" if same else "no listener"
        )
    bound = ", ".join(str(lst) for lst in other)
    ev = [Evidence(f"listeners on port {port} in {facts.server}", Source.NETLINK, bound)]
    if len(facts.resolution.addresses) > 1:
        ev.insert(0, Evidence("resolver order", Source.RESOLVER, " then ".join(facts.resolution.addresses)))
    if v6only:
        summary = f"the only listener is [::]:{port} with IPV6_V6ONLY, and {address} is IPv4"
        fix = Fix("turn IPV6_V6ONLY off for the service's socket, or make it listen on 0.0.0.0 as well")
    else:
        other_family = 6 if family == 4 else 4
        summary = f"{address} is IPv{family}, but the service listens on IPv{other_family} only ({bound})"
        fix = Fix(f"connect to an IPv{other_family} address, or make the service listen on both families")
    return [Finding(Code.FAMILY_MISMATCH, summary, tuple(ev), fix)], Check("address family", False, summary)


_BLACKHOLES = ("blackhole", "unreachable", "prohibit")


def _route_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    findings = []
    for hop in facts.path:
        route = hop.route
        if hop.forwarding is False and hop.role == "router":
            continue  # a namespace that does not forward refuses every route (see the forward rule)
        ev = Evidence(f"route to {hop.destination} in {_where(hop)}", Source.NETLINK, str(route))
        if route.kind in _BLACKHOLES and hop.role == "client":
            fix = (
                Fix(f"remove the {route.kind} route", _in(hop.prefix, [f"ip route del {route.entry}"]))
                if route.entry
                else Fix(f"remove the {route.kind} route holding {hop.destination} (ip route show table all)")
            )
            summary = f"a {route.kind} route for {hop.destination} in {_where(hop)} throws the packet away"
            findings.append(Finding(Code.ROUTE_BLACKHOLE, summary, (ev,), fix))
        elif route.kind in _BLACKHOLES:
            summary = f"{_where(hop)} has a {route.kind} route for {hop.destination}"
            fix = (
                Fix(f"remove the {route.kind} route there", _in(hop.prefix, [f"ip route del {route.entry}"]))
                if route.entry
                else Fix(f"remove the {route.kind} route there")
            )
            findings.append(Finding(Code.ROUTE_BLACKHOLE, summary, (ev,), fix))
        elif route.kind == "none":
            summary = f"{_where(hop)} has no route to {hop.destination}"
            fix = Fix(
                f"add a route to {hop.destination} in {_where(hop)} "
                f"(ip route add {hop.destination} via GATEWAY)"
            )
            findings.append(Finding(Code.NO_ROUTE, summary, (ev,), fix))
    probe = facts.probe
    if (
        not findings
        and probe is not None
        and probe.answer is not None
        and probe.answer.kind in ("icmp net-unreachable", "icmp host-unreachable")
    ):
        ev = Evidence("the probe's answer", Source.PROBE, str(probe.answer))
        summary = f"{probe.answer.sender} answered that it has no route to {facts.address}"
        findings.append(
            Finding(Code.NO_ROUTE, summary, (ev,), Fix(f"add the missing route on {probe.answer.sender}"))
        )
    if not findings and probe is not None and probe.errno_name == "ENETUNREACH":
        ev = Evidence("connect()", Source.PROBE, str(probe))
        findings.append(Finding(Code.NO_ROUTE, f"no route to {facts.address}", (ev,), None))
    detail = "; ".join(f"{_where(h)}: {h.route}" for h in facts.path) or "no route looked up"
    return findings, Check("routes", not findings, detail)


def _rule_fix(hop: HopFacts, fw: FirewallView, facts: ReachFacts, port: int) -> Fix | None:
    """The fix for the rule or policy that decided, plus, on a router whose forward rules
    would also drop the replies, the rule that lets this flow's replies back."""
    fix = _request_fix(hop, fw, facts, port)
    forward = fw.decision is not None and fw.decision.direction.value == "forward"
    reply = _reply_command(fw, facts) if forward else None
    if fix is None or fix.command is None or reply is None or "ufw" in fw.managers:
        return fix
    return Fix(
        f"{fix.text}; and let its replies back, which the same forward rules drop",
        f"{fix.command} && {_in(hop.prefix, [reply])}",
    )


def _iptables_of(table_text: str) -> tuple[str, str, str]:
    """A trace step's "FAMILY TABLE" as (family, the iptables tool that edits it, its iptables
    table name): iptables-legacy's tables are read beside nftables' as `TABLE-legacy`."""
    from portkit.firewall import LEGACY_SUFFIX

    family, _, table = table_text.partition(" ")
    iptables = "ip6tables" if family == "ip6" else "iptables"
    if table.endswith(LEGACY_SUFFIX):
        iptables, table = f"{iptables}-legacy", table.removesuffix(LEGACY_SUFFIX)
    return family, iptables, table


def _reply_command(fw: FirewallView, facts: ReachFacts) -> str | None:
    """A rule accepting the flow's replies (established, from the target's address and port),
    at the top of the chain that drops them; None when they pass or cannot be named."""
    reply = fw.reply
    if reply is None or reply.verdict.value == "accept" or not reply.certain:
        return None
    step = reply.decided_by
    if step is None:
        return None
    packet = reply.packet
    proto = facts.transport.value
    family, iptables, table = _iptables_of(step.table)
    ip = "ip6" if packet.src.version == 6 else "ip"
    if step.where.startswith("handle") or (family not in ("ip", "ip6") and not step.where.startswith("line")):
        return (
            f"nft insert rule {step.table} {step.chain} ct state established,related "
            f"{ip} saddr {packet.src} {proto} sport {packet.sport} accept"
        )
    return (
        f"{iptables} -t {table} -I {step.chain} -s {packet.src} -p {proto} --sport {packet.sport} "
        "-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT"
    )


def _request_fix(hop: HopFacts, fw: FirewallView, facts: ReachFacts, port: int) -> Fix | None:
    decision = fw.decision
    step = decision.decided_by if decision is not None else None
    if step is None:
        return None
    proto = facts.transport.value
    if (
        "ufw" in fw.managers
        and hop.role == "server"
        and decision is not None
        and decision.direction.value == "input"
    ):
        # ufw owns the input rules (its chains, its default policy): a change made behind its
        # back is undone by the next `ufw reload`, so the fix goes through ufw.
        return Fix(
            f"allow it in ufw (the manager of {_where(hop)}'s rules)",
            _in(hop.prefix, [f"ufw allow {port}/{proto}"]),
        )
    family, iptables, table = _iptables_of(step.table)
    if step.position == 0:
        hook = step.hook.value
        if step.where.startswith("line") or (family in ("ip", "ip6") and not step.where):
            command = f"{iptables} -t {table} -I {step.chain} -p {proto} --dport {port} -j ACCEPT"
        else:
            command = f"nft insert rule {step.table} {step.chain} {proto} dport {port} accept"
        return Fix(
            f"the {hook} policy of {step.table} {step.chain} decides: accept the port first",
            _in(hop.prefix, [command]),
        )
    if (
        step.where.startswith("handle")
        and fw.port_set is not None
        and fw.port_set.elements > 1
        and not fw.port_set.shared  # then taking the port out would change the other rules too
    ):
        # Deleting the rule would also let through every other port of the set.
        named = fw.port_set
        if named.port_is_element:
            command = f"nft delete element {step.table} {named.name} {{ {port} }}"
            return Fix(
                f"take port {port} out of set {named.name}, which the rule ({step.rule}) drops; its "
                "other ports stay as they are",
                _in(hop.prefix, [command]),
            )
        return Fix(
            f"port {port} lies inside a range of set {named.name}, which the rule ({step.rule}) "
            f"matches: split that range around {port} (nft delete element, then add the two parts)"
        )
    if step.where.startswith("handle") and fw.map_entries > 1:
        # One key of a verdict map: deleting the rule would drop every other key's verdict too.
        return Fix(
            f"remove port {port}'s entry from the verdict map of rule {step.where} in {step.table} "
            f"{step.chain} (a named map: nft delete element {step.table} MAP {{ {port} }}; an "
            f"anonymous one: nft replace rule {step.table} {step.chain} {step.where} with the map "
            "without it)"
        )
    if not _pins_port(step.rule, port, fw.port_set, facts.transport):
        # The rule drops more than this port (a drop chain several rules jump or goto, a
        # source, a port range): deleting it would open all of that. Let the port through
        # just before it instead, in the same chain.
        if step.where.startswith("handle"):
            handle = step.where.removeprefix("handle ")
            where = f"{step.table} {step.chain} position {handle}"
            command = f"nft insert rule {where} {proto} dport {port} accept"
        elif step.where.startswith("line") or family in ("ip", "ip6"):
            where = f"-t {table} -I {step.chain} {step.position}"
            command = f"{iptables} {where} -p {proto} --dport {port} -j ACCEPT"
        else:
            return Fix(f"let port {port} through before the rule {step.rule} in {step.table} {step.chain}")
        return Fix(
            f"the rule ({step.rule}) is not about port {port} alone: accept the port just before it",
            _in(hop.prefix, [command]),
        )
    if step.where.startswith("handle"):
        command = f"nft delete rule {step.table} {step.chain} {step.where}"
        return Fix(f"delete the rule ({step.rule})", _in(hop.prefix, [command]))
    if step.where.startswith("line") or family in ("ip", "ip6"):
        command = f"{iptables} -t {table} -D {step.chain} {step.position}"
        return Fix(
            f"delete rule {step.position} of {table} {step.chain} ({step.rule})", _in(hop.prefix, [command])
        )
    return Fix(f"remove or change the rule {step.rule} in {step.table} {step.chain}")


def _pins_port(rule: object, port: int, port_set: PortSet | None, transport: Transport) -> bool:
    """Whether the rule matches destination port `port` of `transport` and no other, so that
    deleting it changes this port's fate alone (`th dport` is every transport's port)."""
    from portkit.firewall import FilterRule
    from portkit.firewall._model import Field

    if not isinstance(rule, FilterRule):
        return False
    for match in rule.matches:
        if match.field is not Field.DPORT or match.negate or match.protos != (transport.number,):
            continue
        if match.set_name:
            if port_set is not None and port_set.port_is_element and port_set.elements == 1:
                return True
            continue
        if [(r[0], r[1]) for r in match.ranges] == [(port, port)]:
            return True
    return False


def _verdict_finding(
    hop: HopFacts, facts: ReachFacts, code_drop: Code, code_reject: Code | None
) -> Finding | None:
    fw = hop.firewall
    if fw is None or fw.decision is None:
        return None
    decision = fw.decision
    verdict = decision.verdict.value
    if verdict == "accept":
        return None
    code = code_reject if verdict == "reject" and code_reject is not None else code_drop
    step = decision.decided_by
    rule = f"{decision.reason}"
    ev = [
        Evidence(
            f"firewall of {_where(hop)} ({step.hook if step else 'no hook'})", Source.FIREWALL_MODEL, rule
        )
    ]
    if not decision.certain:
        ev.append(
            Evidence("other possible outcomes", Source.FIREWALL_MODEL, ", ".join(sorted(decision.possible)))
        )
    if facts.probe is not None:
        ev.append(Evidence("the probe", Source.PROBE, str(facts.probe)))
    port = (
        facts.dnat[1]
        if facts.dnat and hop.role != "client" and decision.direction.value == "forward"
        else facts.port
    )
    what = {"drop": "drops", "reject": f"rejects ({decision.reject_with or 'reject'})"}[verdict]
    summary = f"the firewall of {_where(hop)} {what} it: {rule}"
    if not decision.certain:
        summary += " (uncertain: the model cannot decide every match)"
    return Finding(
        code, summary, tuple(ev), _rule_fix(hop, fw, facts, facts.port if hop.role == "client" else port)
    )


def _firewall_checks(facts: ReachFacts, roles: tuple[str, ...], name: str) -> list[Check]:
    checks = []
    for hop in facts.path:
        if hop.role not in roles or hop.firewall is None:
            continue
        fw = hop.firewall
        if fw.decision is None:
            checks.append(Check(f"{name} ({_where(hop)})", None, fw.unreadable))
        else:
            d = fw.decision
            passed = d.verdict.value == "accept" and d.certain
            detail = d.reason + ("" if d.certain else f" (uncertain: {', '.join(sorted(d.possible))})")
            checks.append(
                Check(f"{name} ({_where(hop)})", passed if d.certain or not passed else None, detail)
            )
    return checks


def _one(checks: list[Check], name: str) -> Check:
    if not checks:
        return Check(name, True, "no namespace of that kind on the path")
    passed = None if any(c.passed is None for c in checks) else all(c.passed for c in checks)
    return Check(name, passed, "; ".join(f"{c.name}: {c.detail}" for c in checks))


def _output_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    found = [
        f
        for hop in facts.path
        if hop.role == "client"
        for f in [_verdict_finding(hop, facts, Code.FW_OUTPUT_DROP, Code.FW_OUTPUT_REJECT)]
        if f
    ]
    return found, _one(_firewall_checks(facts, ("client",), "output firewall"), "client's output firewall")


def _forward_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    found = []
    for hop in facts.path:
        if hop.role == "router" and hop.forwarding is False and ":" not in hop.destination:
            ev = Evidence(
                f"net.ipv4.ip_forward in {_where(hop)}", Source.SYSCTL, "0: this namespace routes nothing"
            )
            fix = Fix(
                f"turn forwarding on in {_where(hop)}", _in(hop.prefix, ["sysctl -w net.ipv4.ip_forward=1"])
            )
            summary = f"{_where(hop)} is on the path but does not forward packets (ip_forward=0)"
            found.append(Finding(Code.FW_FORWARD_DROP, summary, (ev,), fix))
            continue
        forwarded = hop.role == "router" or (
            hop.role == "server" and hop.firewall is not None and hop.firewall.decision is not None
            and hop.firewall.decision.direction.value == "forward"
        )  # fmt: skip
        if forwarded:
            finding = _verdict_finding(hop, facts, Code.FW_FORWARD_DROP, None)
            if finding:
                found.append(finding)
    return found, _one(
        _firewall_checks(facts, ("router",), "forward firewall"), "forward firewalls on the path"
    )


def _rp_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    found = []
    for hop in facts.path:
        if hop.route.kind != "martian" or not any(v in (1, 2) for v in hop.rp_filter.values()):
            continue
        strict = [k for k, v in hop.rp_filter.items() if v == 1]
        ev = (
            Evidence(
                f"route back to {facts.source} as a packet on {hop.iif}", Source.NETLINK, hop.route.said
            ),
            Evidence(
                f"rp_filter in {_where(hop)}",
                Source.SYSCTL,
                ", ".join(f"{k}={v}" for k, v in hop.rp_filter.items()),
            ),
        )
        command = _in(hop.prefix, [f"sysctl -w {' '.join(f'{k}=2' for k in strict)}"]) if strict else None
        fix = Fix(
            "use loose reverse-path filtering (2), or route the replies back through the interface "
            "the requests arrive on",
            command,
        )
        summary = (
            f"reverse-path filtering in {_where(hop)} drops packets from {facts.source} arriving on "
            f"{hop.iif}: the route back leaves by another interface"
        )
        found.append(Finding(Code.RP_FILTER, summary, ev, fix))
    return found, Check(
        "reverse-path filter", not found, "; ".join(f.summary for f in found) or "no hop refuses the source"
    )


def _input_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    found = []
    for hop in facts.path:
        fw = hop.firewall
        if (
            hop.role != "server"
            or fw is None
            or fw.decision is None
            or fw.decision.direction.value != "input"
        ):
            continue
        finding = _verdict_finding(hop, facts, Code.FW_INPUT_DROP, Code.FW_INPUT_REJECT)
        if finding:
            found.append(finding)
    return found, _one(_firewall_checks(facts, ("server",), "input firewall"), "server's input firewall")


# Where each role meets the flow's replies: its chain, and what it does with them.
_REPLY_SIDE = {
    "client": ("input", "takes in"),
    "router": ("forward", "forwards back"),
    "server": ("output", "sends out"),
}


def _reply_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    """The request passes every firewall on the path, but one of them drops the replies.

    Each hop's replies are modelled as conntrack sees them (established): a client whose input
    policy drops with no rule for established flows, a server whose output rules drop its own
    port's answers, a router that forwards one way only. Certain drops only: where the model
    cannot decide, the check says so and the probe speaks.
    """
    found: list[Finding] = []
    checks: list[Check] = []
    for hop in facts.path:
        fw = hop.firewall
        if fw is None or fw.decision is None or fw.reply is None or hop.role not in _REPLY_SIDE:
            continue
        chain, does = _REPLY_SIDE[hop.role]
        reply = fw.reply
        name = f"replies' firewall ({_where(hop)}, {reply.direction.value})"
        if reply.verdict.value == "accept" or not reply.certain:
            passed = True if reply.certain else None
            detail = reply.reason
            if not reply.certain:
                detail += f" (uncertain: {', '.join(sorted(reply.possible))})"
            checks.append(Check(name, passed, detail))
            continue
        request = fw.decision
        if request.verdict.value != "accept":
            # The request is stopped here already: that finding names this firewall, and a
            # router's fix lets the replies back with it (_rule_fix).
            checks.append(Check(name, False, reply.reason))
            continue
        back = reply.packet
        what = "drops" if reply.verdict.value == "drop" else f"rejects ({reply.reject_with or 'reject'})"
        summary = (
            f"the request gets through, but the firewall of {_where(hop)} {what} the replies it "
            f"{does} (from {back.src} port {back.sport}): {reply.reason}"
        )
        ev = [
            Evidence(
                f"firewall of {_where(hop)} on the replies ({chain}, conntrack state established)",
                Source.FIREWALL_MODEL,
                reply.reason,
            )
        ]
        if facts.probe is not None:
            ev.append(Evidence("the probe", Source.PROBE, str(facts.probe)))
        command = _reply_command(fw, facts)
        fix = (
            Fix(
                f"let this flow's replies through the {chain} chain of {_where(hop)}",
                _in(hop.prefix, [command]),
            )
            if command is not None and "ufw" not in fw.managers
            else Fix(
                f"accept established flows in the {chain} chain of {_where(hop)} "
                "(e.g. `ct state established,related accept` at its top)"
            )
        )
        found.append(Finding(Code.FW_REPLY_DROP, summary, tuple(ev), fix))
        checks.append(Check(name, False, summary))
    return found, _one(checks, "replies' firewalls")


def _socket_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    """The socket layer: NAT to nothing, a service in another namespace, a listener bound elsewhere, none."""
    if facts.server is None or facts.address is None:
        if facts.dnat is not None and facts.inspectable:
            addr, port = facts.dnat
            ev = Evidence(
                "NAT on the path",
                Source.FIREWALL_MODEL,
                f"sends it to {addr}:{port}, an address no namespace here holds",
            )
            return [
                Finding(
                    Code.DNAT_TO_NOTHING,
                    f"NAT sends the port to {addr}:{port}, which nothing here holds",
                    (ev,),
                    Fix(f"start the service at {addr}:{port}, or point the rule where the service is"),
                )
            ], Check("listener", False, ev.showed)
        return [], Check("listener", None, "the server side is not on this host: only the probe tells")
    if not facts.sockets_read:
        return [], Check("listener", None, f"the sockets of {facts.server} could not be read")
    address, port = _final(facts)
    here = _server_listeners(facts, port)
    family = _family(address)
    same = [lst for lst in here if _serves(facts, lst, family)]
    if here and not same:
        return [], Check("listener", None, "only listeners of the other family (see address family)")
    ev_l = Evidence(
        f"{facts.transport.value} listeners on port {port} in {facts.server}",
        Source.NETLINK,
        ", ".join(str(lst) for lst in here) or "none",
    )
    if any(_accepts(facts, lst, address) for lst in same):
        return [], Check("listener", True, ev_l.showed)
    if same:
        loop = all(ipaddress.ip_address(lst.address).is_loopback for lst in same)
        bound = same[0].address
        wildcard = "0.0.0.0" if family == 4 else "::"
        if loop and not ipaddress.ip_address(address).is_loopback:
            summary = f"the service listens on {bound} only: {address} is not loopback"
            fix = Fix(f"bind to {wildcard} (or {address}) instead of {bound}{_bind_hint(same[0], wildcard)}")
            return [Finding(Code.BOUND_LOOPBACK_ONLY, summary, (ev_l,), fix)], Check(
                "listener", False, summary
            )
        summary = f"the service listens on {bound}, not on {address}"
        fix = Fix(
            f"bind to {wildcard} (or {address}) instead of {bound}{_bind_hint(same[0], wildcard)}, "
            f"or connect to {bound}"
        )
        return [Finding(Code.BOUND_OTHER_ADDRESS, summary, (ev_l,), fix)], Check("listener", False, summary)
    if facts.dnat is not None:
        summary = f"NAT sends the port to {address}:{port}, where nothing listens"
        ev = Evidence(
            "NAT on the path", Source.FIREWALL_MODEL, f"{facts.address}:{facts.port} -> {address}:{port}"
        )
        fix = Fix(f"start the service at {address}:{port}, or point the rule where the service listens")
        return [Finding(Code.DNAT_TO_NOTHING, summary, (ev, ev_l), fix)], Check("listener", False, summary)
    elsewhere = [
        lst
        for lst in facts.listeners
        if lst.port == port and lst.where in facts.neighbours and lst.family == family
    ]
    if elsewhere:
        inner = elsewhere[0]
        ev = Evidence(
            f"listeners on port {port} in other namespaces",
            Source.NETLINK,
            ", ".join(f"{lst.where}: {lst}" for lst in elsewhere),
        )
        summary = f"the service listens in {inner.where}, and nothing brings port {port} of {address} to it"
        server_hop = next((h for h in facts.path if h.role == "server"), None)
        fix = Fix(f"publish it (docker run -p {port}:{port}, or a DNAT rule to the container)")
        container = _container_address(facts, inner)
        if server_hop is not None and server_hop.firewall is not None and container:
            chains = server_hop.firewall.iptables_chains
            proto = facts.transport.value
            nat_chain = "DOCKER" if "nat DOCKER" in chains else "PREROUTING"
            commands = [
                f"iptables -t nat -A {nat_chain} -p {proto} --dport {port} "
                f"-j DNAT --to-destination {container}:{port}"
            ]
            if "filter DOCKER" in chains:
                commands.append(
                    f"iptables -t filter -A DOCKER -d {container}/32 -p {proto} --dport {port} -j ACCEPT"
                )
            fix = Fix(fix.text, _in(server_hop.prefix, commands))
        return [Finding(Code.NOT_PUBLISHED, summary, (ev_l, ev), fix)], Check("listener", False, summary)
    summary = f"nothing listens on {facts.transport.value} port {port} in {facts.server}"
    probe = facts.probe
    chain = [ev_l]
    fix = Fix(f"start the service that should listen on port {port}, or connect to the port it uses")
    if facts.forwards_missed:
        # A port forward of this port exists and did not take this packet: the usual case is a
        # LAN client using the public address of a forward made for the WAN side (hairpin).
        server_hop = next((h for h in facts.path if h.role == "server"), None)
        arriving = f" (arriving on {server_hop.iif})" if server_hop is not None and server_hop.iif else ""
        summary += f", and its port forward of port {port} does not apply to this packet{arriving}"
        rules = "; ".join(facts.forwards_missed)
        looked = f"port forwards of port {port} in {facts.server}"
        chain.append(Evidence(looked, Source.FIREWALL_MODEL, rules))
        fix = Fix(
            "make the forward take these packets too: for a client on the target's side, hairpin "
            "NAT (portkit nat add PORT TARGET --hairpin), or connect to the target directly"
        )
    if probe is not None:
        chain.append(Evidence("the probe", Source.PROBE, str(probe)))
    return [Finding(Code.NO_LISTENER, summary, tuple(chain), fix)], Check("listener", False, summary)


# Where common services set their listen address: process name -> the setting.
_BIND_SETTINGS: dict[str, str] = {
    "nginx": "nginx: listen {port};",
    "redis-server": "redis.conf: bind {wildcard}",
    "postgres": "postgresql.conf: listen_addresses = '*'",
    "mysqld": "my.cnf: bind-address = {wildcard}",
    "mariadbd": "my.cnf: bind-address = {wildcard}",
    "sshd": "sshd_config: ListenAddress {wildcard}",
    "haproxy": "haproxy.cfg: bind {wildcard}:{port}",
    "apache2": "ports.conf: Listen {port}",
    "httpd": "httpd.conf: Listen {port}",
    "memcached": "memcached.conf: -l {wildcard}",
    "mongod": "mongod.conf: net.bindIp: {wildcard}",
    "node": "server.listen({port}, '{wildcard}')",
}


def _bind_hint(listener: ListenerFacts, wildcard: str) -> str:
    """` (nginx: listen 8080;)`: where the owning process's listen address is set, if known."""
    names = [p.partition("/")[0] for p in listener.process.split(",") if p]
    for name in names:
        setting = _BIND_SETTINGS.get(name)
        if setting:
            return " (" + setting.format(port=listener.port, wildcard=wildcard) + ")"
    return f" ({names[0]}: its listen address)" if names else ""


def _container_address(facts: ReachFacts, inner: ListenerFacts) -> str | None:
    if not _is_wildcard(inner.address):
        return inner.address
    return facts.neighbours.get(inner.where)


def _backlog_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    if facts.transport is Transport.UDP:
        # Not a check left undone: a UDP socket has no accept queue to fill.
        return [], Check("accept queue", True, "UDP has no accept queue")
    if facts.server is None or facts.transport is not Transport.TCP or facts.address is None:
        return [], Check("accept queue", None, "no TCP listener on this host to look at")
    address, port = _final(facts)
    full = [
        lst
        for lst in _server_listeners(facts, port)
        if _accepts(facts, lst, address) and lst.recv_q > lst.backlog
    ]
    if not full:
        return [], Check("accept queue", True, "the listener's accept queue has room")
    lst = full[0]
    ev = [
        Evidence(
            f"listener {lst.address}:{lst.port} in {lst.where}",
            Source.NETLINK,
            f"Recv-Q {lst.recv_q} > backlog {lst.backlog}",
        )
    ]
    if facts.overflow_total:
        grew = f" (+{facts.overflows} while diagnosing)" if facts.overflows else ""
        ev.append(
            Evidence(f"TcpExtListenOverflows in {lst.where}", Source.COUNTER, f"{facts.overflow_total}{grew}")
        )
    summary = (
        f"the accept queue of {lst.process or 'the listener'} is full "
        f"({lst.recv_q} waiting, backlog {lst.backlog}): new connections are dropped"
    )
    fix = Fix(
        "the service does not accept() fast enough: make it accept, or raise its listen() backlog "
        "(and net.core.somaxconn)"
    )
    return [Finding(Code.BACKLOG_FULL, summary, tuple(ev), fix)], Check("accept queue", False, summary)


def _service_rule(facts: ReachFacts) -> tuple[list[Finding], Check]:
    if not facts.expect:
        return [], Check("service", True, "no --expect given")
    if facts.probe is None or facts.probe.outcome != "open":
        return [], Check("service", None, "the port did not answer, so its service was not identified")
    if facts.service is None:
        return [], Check("service", None, f"the service could not be identified (expected {facts.expect})")
    if _same_service(facts.service, facts.expect):
        return [], Check("service", True, f"{facts.service}, as expected")
    ev = Evidence("service detection", Source.PROBE, f"it speaks {facts.service}")
    summary = f"the port answers, but speaks {facts.service}, not {facts.expect}"
    return [
        Finding(
            Code.WRONG_SERVICE,
            summary,
            (ev,),
            Fix(f"connect to the port {facts.expect} really uses, or start {facts.expect} here"),
        )
    ], Check("service", False, summary)


def _same_service(found: str, expected: str) -> bool:
    found, expected = found.lower(), expected.lower()
    return found == expected or found.endswith("/" + expected) or found.split("-")[0] == expected


# The kernel's drop reasons (skb:kfree_skb) and the causes each one confirms.
_DROP_REASON_CODES: dict[str, frozenset[Code]] = {
    "NETFILTER_DROP": frozenset(
        {
            Code.FW_OUTPUT_DROP,
            Code.FW_OUTPUT_REJECT,
            Code.FW_INPUT_DROP,
            Code.FW_INPUT_REJECT,
            Code.FW_FORWARD_DROP,
            Code.FW_REPLY_DROP,
        }
    ),
    "NO_SOCKET": frozenset(
        {
            Code.NO_LISTENER,
            Code.BOUND_LOOPBACK_ONLY,
            Code.BOUND_OTHER_ADDRESS,
            Code.NOT_PUBLISHED,
            Code.DNAT_TO_NOTHING,
            Code.FAMILY_MISMATCH,
        }
    ),
    "TCP_LISTEN_OVERFLOW": frozenset({Code.BACKLOG_FULL}),
    "IP_RPFILTER": frozenset({Code.RP_FILTER}),
    "IP_INNOROUTES": frozenset({Code.NO_ROUTE}),
    "IP_OUTNOROUTES": frozenset({Code.NO_ROUTE}),
    "IP_INADDRERRORS": frozenset({Code.NO_ROUTE, Code.ROUTE_BLACKHOLE, Code.FW_FORWARD_DROP}),
}


_FIREWALL_CODES = frozenset(
    {
        Code.FW_OUTPUT_DROP,
        Code.FW_OUTPUT_REJECT,
        Code.FW_INPUT_DROP,
        Code.FW_INPUT_REJECT,
        Code.FW_FORWARD_DROP,
        Code.FW_REPLY_DROP,
    }
)


def _with_kernel_evidence(findings: list[Finding], facts: ReachFacts) -> list[Finding]:
    """Each finding with the kernel's drop reasons that confirm it added to its evidence, and
    the first firewall finding with the nft trace of the flow (when one was taken)."""
    if not facts.kernel_drops and not facts.traced:
        return findings
    out = []
    traced = False
    for finding in findings:
        if facts.traced and not traced and finding.code in _FIREWALL_CODES:
            finding = replace(finding, evidence=finding.evidence + facts.traced)
            traced = True
        confirming = tuple(
            ev for reason, ev in facts.kernel_drops if finding.code in _DROP_REASON_CODES.get(reason, ())
        )
        out.append(replace(finding, evidence=finding.evidence + confirming) if confirming else finding)
    return out


RULES: tuple[Rule, ...] = (
    _family_rule,
    _route_rule,
    _output_rule,
    _forward_rule,
    _rp_rule,
    _input_rule,
    _socket_rule,
    _backlog_rule,
    _reply_rule,
    _service_rule,
)


def _unread_netfilter(facts: ReachFacts, probe: ProbeResult) -> Finding | None:
    """The kernel dropped the probe in netfilter, yet no rule portkit read explains it.

    The rulesets read are nftables' (iptables-nft's rules among them); iptables-legacy's
    tables (and ebtables/arptables) sit in the same hooks unseen. Their drop reason is still
    NETFILTER_DROP, and a REJECT there answers like a closed port: without this the drop reads
    as filtering upstream and the reject as NO_LISTENER, on a path that is all this host's.
    """
    if facts.server is None or not any(reason == "NETFILTER_DROP" for reason, _ in facts.kernel_drops):
        return None
    answer = probe.answer
    rejected = probe.outcome in ("refused", "unreachable") or (
        answer is not None and "prohibited" in answer.kind
    )
    code = Code.FW_INPUT_REJECT if rejected else Code.FW_INPUT_DROP
    where = "" if facts.server == "this namespace" else f" in netns {facts.server}"
    return Finding(
        code,
        f"the kernel's netfilter {'rejected' if rejected else 'dropped'} the probe on this host, but "
        "no rule of the rulesets read (nftables, iptables-nft) does: the rule is in a table portkit "
        "does not read (iptables-legacy, ebtables, arptables)",
        (Evidence("the probe", Source.PROBE, str(probe)),),
        Fix(
            f"find the rule with `iptables-legacy-save` / `ip6tables-legacy-save`{where} and delete "
            "it, or move those rules to nftables"
        ),
    )


# The firewall codes for a hop whose rules could not be read: (drop, reject).
_UNSEEN_CODES = {
    "server": (Code.FW_INPUT_DROP, Code.FW_INPUT_REJECT),
    "router": (Code.FW_FORWARD_DROP, Code.FW_FORWARD_DROP),
    "client": (Code.FW_OUTPUT_DROP, Code.FW_OUTPUT_REJECT),
}


def _unseen_firewall(facts: ReachFacts, probe: ProbeResult) -> Finding | None:
    """The probe failed on a path that is all this host's, every other layer passed, and a
    firewall on it could not be read (no root): that firewall is what is left to blame.

    Without this a refusal reads as NO_LISTENER ("start the service") while the socket table
    shows the listener, and silence as filtering beyond this host.
    """
    if facts.server is None or not facts.inspectable:
        return None
    answer = probe.answer
    prohibited = answer is not None and "prohibited" in answer.kind
    rejected = probe.outcome in ("refused", "unreachable") or prohibited
    if not rejected and probe.outcome not in ("timeout", "silent"):
        return None
    unread = [h for h in facts.path if h.firewall is not None and h.firewall.decision is None]
    if not unread:
        return None
    # The server's input firewall is where a port is most often closed: name it first.
    hop = min(unread, key=lambda h: list(_UNSEEN_CODES).index(h.role) if h.role in _UNSEEN_CODES else 3)
    drop, reject = _UNSEEN_CODES.get(hop.role, (Code.FW_INPUT_DROP, Code.FW_INPUT_REJECT))
    why = hop.firewall.unreadable if hop.firewall is not None else ""
    names = ", ".join(dict.fromkeys(_where(h) for h in unread))
    what = "refused" if rejected else "got no answer"
    return Finding(
        reject if rejected else drop,
        f"the probe {what}, and nothing this diagnosis could read explains it: the firewall of "
        f"{names} most likely {'rejects' if rejected else 'drops'} it ({why})",
        (Evidence("the probe", Source.PROBE, str(probe)),),
        Fix(f"run the diagnosis as root to name the rule and get the command that removes it ({why})"),
    )


def _denied(facts: ReachFacts, probe: ProbeResult) -> Finding:
    """connect()/send() failed with EPERM or EACCES: this host's kernel refused to send the
    packet, and no output rule portkit read explains it."""
    client = next((h for h in facts.path if h.role == "client"), None)
    fw = client.firewall if client is not None else None
    unread = fw.unreadable if fw is not None and fw.decision is None else ""
    where = _where(client) if client is not None else "this namespace"
    if unread:
        cause = f"its output firewall, which could not be read ({unread})"
    else:
        cause = (
            "a netfilter rule in a table portkit does not read (iptables-legacy, ebtables), or a "
            "cgroup BPF program (systemd's IPAddressDeny=, a container runtime's egress policy)"
        )
    return Finding(
        Code.FW_OUTPUT_DROP,
        f"this host's kernel refused to send the probe ({probe.errno_name or 'EPERM'}): {cause}",
        (Evidence("the probe", Source.PROBE, str(probe)),),
        Fix(
            f"look in {where} for the output rule (`nft list ruleset`, `iptables-legacy-save`) "
            "or the unit's IPAddressDeny=/IPAddressAllow= (`systemctl show -p IPAddressDeny UNIT`)"
        ),
    )


def _client_error(probe: ProbeResult) -> Finding:
    """connect() failed on this host before anything was sent, for a reason no layer names."""
    ev = (Evidence("the probe", Source.PROBE, str(probe)),)
    if probe.errno_name == "EADDRNOTAVAIL":
        return Finding(
            Code.CLIENT_ERROR,
            "this host has no free source port for a connection to this address and port "
            "(EADDRNOTAVAIL): every port of net.ipv4.ip_local_port_range is in use toward it",
            ev,
            Fix(
                "close idle connections to it (or reuse them), widen net.ipv4.ip_local_port_range, "
                "or connect from more source addresses"
            ),
        )
    return Finding(
        Code.CLIENT_ERROR,
        f"the connection attempt failed on this host before an answer: {probe}",
        ev,
        None,
    )


def _probe_fallback(facts: ReachFacts, findings: list[Finding]) -> list[Finding]:
    """What the probe says when the rules found nothing, or when it contradicts them."""
    probe = facts.probe
    if probe is None:
        return findings
    if probe.outcome == "open":
        return [f for f in findings if f.code is Code.WRONG_SERVICE]
    if findings:
        return findings
    if probe.outcome == "denied":
        return [_denied(facts, probe)]
    if probe.outcome == "error":
        return [_client_error(probe)]
    unread = _unread_netfilter(facts, probe)
    if unread is not None:
        return [unread]
    if facts.transport is Transport.UDP and probe.outcome == "silent" and facts.server is not None:
        return findings  # a quiet UDP service: the socket exists and nothing drops
    unseen = _unseen_firewall(facts, probe)
    if unseen is not None:
        return [unseen]
    ev = [Evidence("the probe", Source.PROBE, str(probe))]
    if facts.trace:
        answered = [h for h in facts.trace if h.answer is not None]
        upto = answered[-1].ttl + 1 if answered else 1
        shown = ", ".join(f"{h.ttl}: {h.answer or '*'}" for h in facts.trace if h.ttl <= upto)
        if len(facts.trace) > upto:
            shown += f" (silent up to TTL {len(facts.trace)})"
        ev.append(Evidence(f"TCP traceroute to port {facts.port}", Source.PROBE, shown))
        last = (
            f"hop {answered[-1].ttl} ({answered[-1].answer.sender})"
            if answered and answered[-1].answer
            else "the first hop"
        )
    else:
        last = "the last hop this host can see"
    if probe.outcome in ("timeout", "silent") or (
        probe.answer is not None and "prohibited" in probe.answer.kind
    ):
        where = (
            "beyond this host's namespaces"
            if not facts.inspectable
            else "somewhere this diagnosis could not see"
        )
        answer = probe.answer
        if answer is not None and "prohibited" in answer.kind:
            summary = (
                f"refused by a filter {where}: {answer.kind} from {answer.sender} "
                f"(TTL {answer.ttl} on arrival)"
            )
        else:
            summary = f"no answer: the packets are filtered {where} (silence after {last})"
        return [
            Finding(
                Code.FILTERED_UPSTREAM,
                summary,
                tuple(ev),
                Fix("ask whoever runs the network or the host past that hop to open the port"),
            )
        ]
    if probe.outcome == "refused":
        return [
            Finding(
                Code.NO_LISTENER,
                f"refused: {probe}",
                tuple(ev),
                Fix(
                    f"start the service on port {facts.port}"
                    if facts.server is not None
                    # An RST is also what a reject rule sends: from here the two look the same.
                    else f"start the service on port {facts.port}, or, if it runs, look for a "
                    "reject rule in the server's firewall"
                ),
            )
        ]
    if probe.outcome == "unreachable":
        return [Finding(Code.NO_ROUTE, f"unreachable: {probe}", tuple(ev), None)]
    return findings


def _decisions(facts: ReachFacts) -> list[Decision]:
    """The firewall verdicts read on the path."""
    views = [h.firewall for h in facts.path if h.firewall is not None]
    return [fw.decision for fw in views if fw.decision is not None]


def decide(facts: ReachFacts, *, explain: bool = True) -> Diagnosis:
    """The diagnosis these facts support. Pure: no I/O, no clock."""
    findings, checks = _resolution(facts)
    checks_out = [checks]
    if not facts.resolution.addresses:
        return Diagnosis(
            "reach", _target(facts), tuple(findings), tuple(checks_out), Certainty.CLIENT_SIDE, facts.limits
        )
    found: list[Finding] = []
    for rule in RULES:
        more, check = rule(facts)
        found.extend(more)
        checks_out.append(check)
    probe = facts.probe
    if probe is not None:
        checks_out.append(
            Check(
                "probe",
                probe.outcome == "open" or (probe.outcome == "silent" and facts.transport is Transport.UDP),
                str(probe),
            )
        )
    unexplained = not found and probe is not None and probe.outcome not in ("open", "silent")
    found = _with_kernel_evidence(_probe_fallback(facts, found), facts)
    checks_out.extend(facts.kernel_checks)
    if not explain:
        checks_out = [c for c in checks_out if c.passed is not True]
    if facts.server is None:
        certainty = Certainty.CLIENT_SIDE
    elif (
        unexplained
        or not facts.root
        or any(c.passed is None and ("firewall" in c.name or c.name == "service") for c in checks_out)
        # A verdict the model could not follow all the way (a NAT map, an undecided match):
        # where the packet went, and so which socket it met, is then a guess.
        or any(not d.certain for d in _decisions(facts))
    ):
        certainty = Certainty.PARTIAL
    else:
        certainty = Certainty.FULL
    return Diagnosis(
        "reach", _target(facts), primary_first(found, REACH_ORDER), tuple(checks_out), certainty, facts.limits
    )


# --- the I/O: gather the facts, then decide -------------------------------------------------------


def diagnose_reach(
    host: str,
    port: int,
    protocol: Transport = Transport.TCP,
    *,
    from_netns: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    expect: str | None = None,
    explain: bool = False,
) -> Diagnosis:
    """Why `host:port` cannot be reached from here (or from `from_netns`: an `ip netns` name or
    a /proc/PID/ns/net path), with the evidence and the fix; `expect` names the service that
    should answer (service detection then checks it). `explain` keeps every check made."""
    from portkit.diagnose import _facts as facts_io
    from portkit.diagnose._dropwatch import DropWatch, softirq_pids, watch_drops
    from portkit.diagnose._netview import all_views, namespace_at, view_of
    from portkit.diagnose._probe import Hop, probe_tcp, probe_udp, traceroute_tcp
    from portkit.diagnose._target import refuse_link_local, valid_host
    from portkit.errors import PermissionNeeded, UsageError, quote

    if protocol not in (Transport.TCP, Transport.UDP):
        raise UsageError(f"invalid protocol {quote(str(protocol))}: expected tcp or udp")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise UsageError(f"invalid port {quote(str(port))}: ports are 1-65535")
    if not valid_host(host):
        raise UsageError(f"invalid host {quote(host)}: expected a host name or an IP address")
    refuse_link_local(host, host)
    if not timeout > 0:
        raise UsageError(f"invalid timeout {quote(str(timeout))}: expected a number of seconds above 0")
    try:
        client_ns = namespace_at(from_netns)
    except PermissionError:
        raise PermissionNeeded(f"opening network namespace {quote(from_netns)} needs root") from None
    except OSError:
        raise UsageError(
            f"unknown network namespace {quote(from_netns)}: expected an `ip netns` name or /proc/PID/ns/net"
        ) from None
    root = os.geteuid() == 0
    limits: list[str] = []
    client = view_of(client_ns)
    resolution = facts_io.resolve(client, host, protocol, timeout)
    base = ReachFacts(host, port, protocol, resolution, expect=expect, root=root)
    if not resolution.addresses:
        return decide(base, explain=explain)
    address = resolution.addresses[0]
    if root:
        views, skipped = all_views()
        if skipped:
            # Namespaces come and go (a container stopping): name them, they may not matter.
            limits.append(f"could not look into {len(skipped)} namespace(s): {'; '.join(skipped)[:300]}")
        unseen = [entry.partition(":")[0] for entry in skipped]
    else:
        views = [client]
        unseen = []
        limits.append(
            "without root: other network namespaces, their sockets and every firewall are not read, "
            "and the probe cannot see who answered (RST/ICMP sender); run as root for all of it"
        )
    import threading

    # The probe runs while the path is inspected: the firewall readers wait on nft and
    # iptables-save, the probe on the network, and neither needs the other.
    probed: list[ProbeResult] = []
    probe_done = threading.Event()

    watches: list[DropWatch] = []
    watch_done = threading.Event()

    def run_probe() -> None:
        # The kernel's own drop reasons are recorded while the probe's packets travel.
        try:
            with watch_drops(protocol, port=port, families=(_family(address),)) as drops:
                watches.append(drops)
                try:
                    if protocol is Transport.TCP:
                        probed.append(probe_tcp(client_ns, address, port, timeout))
                    else:
                        probed.append(probe_udp(client_ns, address, port, timeout))
                finally:
                    probe_done.set()
        finally:
            probe_done.set()
            watch_done.set()

    prober = threading.Thread(target=run_probe, daemon=True, name="diagnose probe")
    prober.start()
    facts_io.forget_rulesets()
    hops, source, server, dnat, inspectable = facts_io.walk(views, client, address, port, protocol)
    before = facts_io.overflow_counter(server) if server is not None and root else None
    ports = {port} | ({dnat[1]} if dnat else set())
    near = facts_io.neighbours_of(views, server) if server is not None else {}
    inspected = [server, *(v for v in views if v.label in near)] if server is not None else []
    try:
        listeners, warnings = facts_io.listeners_on(inspected, ports, protocol)
    except Exception as exc:  # a socket table that cannot be read is a limit, not a crash
        listeners, warnings = [], [f"the socket tables could not be read: {exc}"]
    sockets_read = server is not None and not any(
        w.startswith(f"sockets of {server.label} ") or w.startswith("the socket tables") for w in warnings
    )
    limits.extend(w for w in warnings if not any(label in w for label in unseen))
    dual_stack = None
    final_address, final_port = dnat or (address, port)
    if server is not None and protocol is Transport.TCP and ":" not in final_address:
        here = [lst for lst in listeners if lst.where == server.label and lst.port == final_port]
        if any(lst.address == "::" for lst in here) and not any(lst.family == 4 for lst in here):
            dual_stack = facts_io.takes_ipv4(server, final_port)
    # A forward "did not apply" only where the model is sure of the server's NAT (a map it
    # cannot read, say, leaves the rewrite undecided, and then nothing is claimed).
    decided = [h.firewall.decision for h in hops if h.role == "server" and h.firewall is not None]
    sure = bool(decided) and all(d is not None and d.certain for d in decided)
    missed = facts_io.forwards_missed(server, port, protocol) if server and not dnat and sure else ()
    # Past this host's namespaces only the probe can tell, and silence is then the likely
    # answer: a TCP traceroute to the port (root) runs beside what is left of the probe's wait,
    # and stops as soon as the probe is answered.
    uninspectable = not inspectable  # the walk left this host (a route that fails here needs no trace)
    tracing: list[list[Hop]] = []
    tracer = None
    answered = threading.Event()
    if uninspectable and protocol is Transport.TCP and root and not (probe_done.is_set() and probed):

        def run_trace() -> None:
            tracing.append(traceroute_tcp(client_ns, address, port, timeout, stop=answered))

        tracer = threading.Thread(target=run_trace, daemon=True, name="diagnose traceroute")
        tracer.start()
    probe_done.wait()
    probe = probed[0] if probed else ProbeResult("error", "", 0.0, None)
    after = facts_io.overflow_counter(server) if server is not None and root else None
    stuck = probe.outcome in ("timeout", "silent") or (
        probe.answer is not None and "prohibited" in probe.answer.kind
    )
    if not stuck:
        answered.set()
    if tracer is not None:
        tracer.join(timeout + 1.0)
    trace = tuple(tracing[0]) if stuck and tracing else None
    kernel_drops: tuple[tuple[str, Evidence], ...] = ()
    kernel_checks: tuple[Check, ...] = ()
    # The watch has its events once it has read them (its check passes); removing its trace
    # instance afterwards can take the kernel a while, and nothing here waits for that.
    deadline = time.monotonic() + 0.5
    while watches and not watch_done.is_set() and watches[0].check.passed is not True:
        if time.monotonic() > deadline:
            break
        watch_done.wait(0.01)
    if watches and (watch_done.is_set() or watches[0].check.passed is True):
        drops = watches[0]
        final_port = (dnat or (address, port))[1]
        # Drops that ran in the probe's own thread are its packets' (loopback and veth deliver in
        # the sender's softirq); ksoftirqd's are anyone's, so they count only when none ran there.
        events = drops.matching(final_port, pids={probe.thread}) if probe.thread else ()
        if not events and probe.thread:
            events = drops.matching(final_port, pids=softirq_pids())
        kernel_drops = tuple(
            (event.reason, Evidence("skb:kfree_skb tracepoint", Source.DROP_REASON, str(event)))
            for event in events[:8]
        )
        kernel_checks = (drops.check,)
    elif watches:
        kernel_checks = (Check("kernel drop reasons", None, "the kernel's drop trace was not read in time"),)
    if stuck and uninspectable and protocol is Transport.TCP and not root:
        limits.append("a TCP traceroute to the port needs root (raw sockets)")
    service = None
    if expect and probe.outcome == "open":
        service = _detect(client_ns, address, port, protocol, timeout)
    facts = replace(
        base,
        address=address,
        source=source,
        path=tuple(hops),
        server=server.label if server is not None else None,
        inspectable=inspectable and server is not None,
        dnat=dnat,
        listeners=tuple(listeners),
        neighbours=near,
        sockets_read=sockets_read,
        kernel_drops=kernel_drops,
        kernel_checks=kernel_checks,
        dual_stack=dual_stack,
        forwards_missed=missed,
        overflows=(after - before) if before is not None and after is not None else None,
        overflow_total=after,
        probe=probe,
        trace=trace,
        service=service,
        limits=tuple(limits),
    )
    diagnosis = decide(facts, explain=explain)
    if root and any(f.code in _ABOUT_LISTENERS for f in diagnosis.findings):
        # Which process holds a listener costs a scan of every process's descriptors: it is
        # looked up only when a finding names the listener.
        facts = replace(facts, listeners=tuple(facts_io.with_processes(listeners)))
        diagnosis = decide(facts, explain=explain)
    firewall = next((f for f in diagnosis.findings if f.code in _FIREWALL_CODES), None)
    if explain and root and firewall is not None:
        # --explain asks the kernel to confirm the model: a second probe, traced by nft in the
        # namespace whose rules the model says decide.
        facts = _traced(facts, firewall.code, client_ns, timeout)
        diagnosis = decide(facts, explain=explain)
    return diagnosis


# Which hop's firewall a firewall code is about.
_FIREWALL_ROLES = {
    Code.FW_OUTPUT_DROP: ("client",),
    Code.FW_OUTPUT_REJECT: ("client",),
    Code.FW_INPUT_DROP: ("server",),
    Code.FW_INPUT_REJECT: ("server",),
    Code.FW_FORWARD_DROP: ("router", "server"),
    Code.FW_REPLY_DROP: ("client", "router", "server"),
}


def _hop_netns(hop: HopFacts) -> str | None:
    """The namespace of a hop as trace_flow takes it: an `ip netns` name, a path, or None."""
    words = hop.prefix.split()
    if words[:3] == ["ip", "netns", "exec"] and len(words) > 3:
        return words[3]
    if words and words[0] == "nsenter" and len(words) > 1:
        return words[1].removeprefix("--net=")
    return None


def _traced(facts: ReachFacts, code: Code, client_ns: Namespace, timeout: float) -> ReachFacts:
    from portkit.diagnose._nfttrace import trace_flow
    from portkit.diagnose._probe import probe_tcp, probe_udp

    roles = _FIREWALL_ROLES[code]
    replies = code is Code.FW_REPLY_DROP
    refusing = [
        (h, d)
        for h in facts.path
        if h.role in roles and h.firewall is not None
        for d in [h.firewall.reply if replies else h.firewall.decision]
        if d is not None and d.verdict.value != "accept"
    ]  # fmt: skip
    hop, decision = refusing[0] if refusing else (None, None)
    if hop is None or decision is None or facts.address is None:
        return facts
    if replies:
        # The replies come from the address and port the request was delivered to.
        sport = decision.packet.sport
        address, port = str(decision.packet.src), sport if sport is not None else facts.port
    else:
        address = hop.destination
        port = facts.dnat[1] if facts.dnat and hop.destination == facts.dnat[0] else facts.port
    with trace_flow(address, port, facts.transport, netns=_hop_netns(hop), reverse=replies) as trace:
        if facts.transport is Transport.TCP:
            probe_tcp(client_ns, facts.address, facts.port, timeout)
        else:
            probe_udp(client_ns, facts.address, facts.port, timeout)
    # A retransmitted SYN is traced again: each step once.
    evidence = tuple({e.showed: e for e in trace.evidence()}.values())
    model = decision.decided_by
    dropped = trace.dropped_by()
    if dropped is not None and model is not None:
        same_chain = dropped.where == f"{model.table} {model.chain}"
        if dropped.kind == "policy":
            agrees = same_chain and model.position == 0
        elif model.where.startswith("line"):  # read from iptables-save: the kernel's handles differ
            agrees = same_chain and model.position > 0
        else:
            agrees = dropped.handle is not None and model.where == f"handle {dropped.handle}"
        verdict = "agrees with the model" if agrees else f"the model named {model.where or 'the policy'}"
        evidence += (Evidence("nft monitor trace", Source.NFT_TRACE, f"dropped by {dropped}: {verdict}"),)
    return replace(facts, traced=evidence, kernel_checks=(*facts.kernel_checks, trace.check))


_ABOUT_LISTENERS = frozenset(
    {
        Code.FAMILY_MISMATCH,
        Code.BOUND_LOOPBACK_ONLY,
        Code.BOUND_OTHER_ADDRESS,
        Code.NOT_PUBLISHED,
        Code.BACKLOG_FULL,
    }
)


def _detect(namespace: Namespace, address: str, port: int, protocol: Transport, timeout: float) -> str | None:
    """The service name detection gives the port (light intensity, scaled to the probe timeout)."""
    from portkit.services import detect_services
    from portkit.sockets._netns import run_in

    found = run_in(
        namespace,
        lambda: detect_services(
            [(address, port, protocol.value)], intensity=2, timeout_scale=min(1.0, timeout / 5)
        ),
    )
    from portkit.model.services import Method

    record = next(iter(found.values()), None)
    # Only what the service said counts: a record without a probed match carries the port
    # table's guess (2222/tcp is "EtherNetIP-1" there), and tcpwrapped (closed without a word)
    # names no protocol. Either way the service is not identified.
    if record is None or record.method is not Method.PROBED:
        return None
    name = str(record.name)
    return name if name and name not in ("unknown", "tcpwrapped") else None
