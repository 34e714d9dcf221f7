"""Export: the fail-closed contract every renderer keeps, the dispatch, and the firewalld renderer.

An export may be less than its source, never more. A renderer never drops a match and keeps
the rule's verdict: a rule it cannot write faithfully is left out whole and reported as an
`Omission`. Leaving a rule out can only narrow what the rule set accepts when the rule is an
`accept` (or has no verdict and nothing but a counter or log) in a chain that only filters:
the packet then goes on to the rules after it, and every outcome there is at most an accept.
Everything else is unsafe to leave out: a drop or reject (the packet it stopped goes on), a
jump or goto (the called chain may drop), a return (the rules after it may accept), an accept
in a NAT chain (the rules after it may rewrite the destination), a NAT rewrite, a statement
with side effects (`meta mark set`, `notrack`, `add @set`) that later rules may read. Unsafe
omissions make `export_ruleset` refuse (exit 1, naming the rules) unless `force` is given.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import PortkitError, UsageError
from portkit.firewall._model import (
    IPPROTO_NAMES,
    Chain,
    ChainType,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Reject,
    RejectType,
    Ruleset,
    Table,
    render_address_interval,
)
from portkit.model.protocols import IPV4


def quote_rule(text: str, limit: int = 60) -> str:
    """A rule for a message: quoted, at most `limit` characters of it."""
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


@dataclass(frozen=True)
class Omission:
    """A rule (or a construct) the export leaves out, and whether that can only narrow."""

    where: str  # `inet fw input #3`
    rule: str  # the rule in nft syntax
    reason: str
    narrows: bool

    def __str__(self) -> str:
        head = f"{self.where} {quote_rule(self.rule)}" if self.rule else self.where
        if self.narrows:
            return f"{head}: left out, {self.reason} (leaving it out only narrows)"
        return f"{head}: {self.reason}"

    def to_json(self) -> dict[str, Any]:
        return {"where": self.where, "rule": self.rule, "reason": self.reason, "narrows": self.narrows}


@dataclass(frozen=True)
class Rendering:
    """A rendered rule set: the text, notes on what is not faithful, and the rules left out.

    It unpacks as `(text, problems)`, `problems` naming every note and every omission.
    """

    text: str
    notes: tuple[str, ...] = ()
    omitted: tuple[Omission, ...] = ()

    @property
    def problems(self) -> list[str]:
        return [*self.notes, *(str(o) for o in self.omitted)]

    @property
    def unsafe(self) -> tuple[Omission, ...]:
        """Omissions that could make the export accept more than its source."""
        return tuple(o for o in self.omitted if not o.narrows)

    def __iter__(self) -> Iterator[Any]:
        return iter((self.text, self.problems))

    def __getitem__(self, index: int) -> Any:
        return (self.text, self.problems)[index]


class ExportRefused(PortkitError):
    """The export would accept more than its source unless some rules were left out."""

    exit_status = 1

    def __init__(self, rendering: Rendering, target: str) -> None:
        self.rendering = rendering
        unsafe = rendering.unsafe
        shown = "; ".join(str(o) for o in unsafe[:3])
        more = f" (and {len(unsafe) - 3} more)" if len(unsafe) > 3 else ""
        # The rules first: an error line is kept to 200 characters by cutting its middle.
        super().__init__(
            f"refusing to export to {target}: {shown}{more}; leaving out what {target} cannot write "
            "could accept more than the source (--force leaves it out)"
        )


# Statements that change nothing a later rule or the kernel decides on: counting, logging,
# and clamping the TCP MSS option (nft JSON as the importer keeps it, and iptables words).
_HARMLESS_STATEMENTS = (
    '{"counter"',
    '{"log"',
    '{"mangle":{"key":{"tcp option":{"field":"size","name":"maxseg"}}',
    "-j NFLOG",
    "--nflog-",
    "-j TCPMSS",
    "--clamp-mss-to-pmtu",
    "--set-mss",
)


@dataclass
class OmissionPolicy:
    """Decides, per rule, whether leaving it out can only narrow (see the module docstring)."""

    ruleset: Ruleset
    _nat_reached: dict[tuple[int, str], bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for ti, t in enumerate(self.ruleset.tables):
            calls = {c.name: [r.target for r in c.rules if r.target] for c in t.chains}
            for c in t.chains:
                if c.hook is None or c.type is ChainType.FILTER:
                    continue
                todo = [c.name]
                while todo:
                    name = todo.pop()
                    if self._nat_reached.get((ti, name)):
                        continue
                    self._nat_reached[(ti, name)] = True
                    todo.extend(calls.get(name, []))

    def filter_only(self, table: Table, chain: Chain) -> bool:
        """Whether the chain only ever runs as a filter (never inside a NAT or route chain)."""
        if chain.hook is not None:
            return chain.type is ChainType.FILTER
        ti = next((i for i, t in enumerate(self.ruleset.tables) if t is table), -1)
        return not self._nat_reached.get((ti, chain.name), False)

    def narrows(self, table: Table, chain: Chain, rule: FilterRule) -> bool:
        if any(not s.startswith(_HARMLESS_STATEMENTS) for s in rule.opaque):
            return False
        if rule.action is FilterAction.ACCEPT:
            return self.filter_only(table, chain)
        return rule.action is FilterAction.CONTINUE

    def omit(self, table: Table, chain: Chain, index: int, rule: FilterRule, reason: str) -> Omission:
        return Omission(
            f"{table} {chain.name} #{index + 1}", str(rule), reason, self.narrows(table, chain, rule)
        )


def omission_of_chain(table: Table, chain: Chain, reason: str) -> Omission:
    """A whole base chain the target has no place for: only an accept-only filter chain is safe to lose."""
    harmless = (
        chain.type is ChainType.FILTER
        and chain.policy is FilterAction.ACCEPT
        and all(
            r.action in (FilterAction.ACCEPT, FilterAction.CONTINUE) and not r.opaque for r in chain.rules
        )
    )
    return Omission(f"{table} {chain.name}", str(chain), f"{reason} ({len(chain.rules)} rules)", harmless)


def one_chain_per_version(chains: list[tuple[Table, Chain]]) -> list[tuple[Table, Chain]]:
    """The base chains (all on one hook) a front end with one rule list can hold: the first,
    and one more only when it sees the other IP version alone (an `ip` and an `ip6` table, as
    iptables-nft writes them) with the same policy, since each rule then keeps its version."""
    if not chains:
        return []
    first_c = chains[0][1]
    out = [chains[0]]
    for t, c in chains[1:]:
        versions = {v for v in (4, 6) if t.family.covers(v)}
        taken = {v for ot, _ in out for v in (4, 6) if ot.family.covers(v)}
        if not versions & taken and c.policy is first_c.policy and len(out) == 1:
            out.append((t, c))
    return out


def implied_accepts(ruleset: Ruleset, tool: str, flows: tuple[str, ...]) -> list[Omission]:
    """What a front end accepts before any of its rules run, where the source does not.

    ufw's before.rules and firewalld's own chains accept these flows whatever the rules say;
    an export is only as narrow as its source if the source accepts them too."""
    from portkit.firewall._eval import Direction, Verdict, evaluate
    from portkit.firewall._packet import Packet

    wider = []
    for flow in flows:
        packet = Packet.parse(flow)
        decision = evaluate(ruleset, packet, direction=Direction.INPUT)
        if decision.verdict is not Verdict.ACCEPT or getattr(decision, "uncertain", False):
            wider.append(flow)
    if not wider:
        return []
    return [
        Omission(
            f"{tool} itself",
            "",
            f"{tool} accepts {'; '.join(wider[:2])}{' ...' if len(wider) > 2 else ''} before any "
            "rule, which the source does not",
            False,
        )
    ]


# What firewalld accepts in every zone before the zone's rules (its INPUT chain and a zone's
# ICMP handling): loopback, replies of tracked connections, ICMP.
_FIREWALLD_IMPLIED = (
    "tcp 127.0.0.1:40000 -> 127.0.0.1:5000 in lo",
    "tcp 192.0.2.7:5000 -> 198.51.100.1:40000 state established",
    "tcp [2001:db8::7]:5000 -> [2001:db8::1]:40000 state established",
    "icmp 192.0.2.7 -> 198.51.100.1 type echo-request",
    "icmpv6 2001:db8::7 -> 2001:db8::1 type echo-request",
)


def render_firewalld(ruleset: Ruleset, *, zone: str = "portkit") -> Rendering:
    """`firewall-cmd` commands: a new zone made the default zone, its target from the input
    policy, one rich rule per input rule in order (rich rule priorities keep it).

    A new zone starts without the services (ssh, dhcpv6-client ...) that firewalld's stock
    zones allow, so nothing is accepted that the rules do not accept."""
    policy = OmissionPolicy(ruleset)
    notes: list[str] = []
    omitted: list[Omission] = []
    inputs = [
        (t, c)
        for t in ruleset.tables
        for c in t.chains
        if c.hook is Hook.INPUT
        and c.type is ChainType.FILTER
        and t.family in (Family.IP, Family.IP6, Family.INET)
    ]
    used = one_chain_per_version(inputs)
    main = inputs[0] if inputs else None
    cmd = f"firewall-cmd --permanent --zone={zone}"
    target = "DROP" if main and main[1].policy is FilterAction.DROP else "ACCEPT"
    out = [f"firewall-cmd --permanent --new-zone={zone}", f"{cmd} --set-target={target}"]
    priority = -32000
    for t in ruleset.tables:
        for c in t.chains:
            if not any(t is ut and c is uc for ut, uc in used):
                # A regular chain is reached only through a jump, which is itself left out.
                if c.hook is not None and (c.rules or c.policy is not FilterAction.ACCEPT):
                    omitted.append(
                        omission_of_chain(
                            t, c, "a firewalld zone filters incoming traffic in one chain only; not rendered"
                        )
                    )
                continue
            for i, r in enumerate(c.rules):
                try:
                    bodies, verdict, family = _rich_rule(r, t.family)
                except _NotRich as exc:
                    omitted.append(policy.omit(t, c, i, r, str(exc)))
                    continue
                for body in bodies:
                    fam = f' family="{family}"' if family else ""
                    words = " ".join(x for x in (f'rule priority="{priority}"{fam}', *body, verdict) if x)
                    out.append(f"{cmd} --add-rich-rule='{words}'")
                priority += 1
    out.append(f"firewall-cmd --set-default-zone={zone}")
    out.append("firewall-cmd --reload")
    omitted.extend(implied_accepts(ruleset, "firewalld", _FIREWALLD_IMPLIED))
    return Rendering("\n".join(out) + "\n", tuple(notes), tuple(omitted))


class _NotRich(Exception):
    """The rule cannot be a firewalld rich rule; the message says why."""


def _rich_rule(r: FilterRule, table_family: Family) -> tuple[list[list[str]], str, str]:
    """(rule bodies, verdict, family) of one rich rule per port; a rule of an `ip` or `ip6`
    table gets that family, since a rich rule without one applies to both."""
    if r.action not in (FilterAction.ACCEPT, FilterAction.DROP, FilterAction.REJECT):
        raise _NotRich(f"firewalld rich rules cannot '{r.verdict_text() or 'continue'}'")
    if r.opaque:
        raise _NotRich(f"firewalld cannot write {'; '.join(r.opaque)}")
    parts: list[str] = []
    family = {Family.IP: "ipv4", Family.IP6: "ipv6"}.get(table_family, "")
    ports: list[str] = []
    proto = ""
    for m in r.matches:
        if m.field is Field.CT_STATE:
            raise _NotRich(
                "firewalld accepts established/related traffic itself and cannot match conntrack state"
            )
        if m.field in (Field.SADDR, Field.DADDR) and len(m.ranges) == 1 and not m.set_name:
            fam = "ipv4" if m.family == IPV4 else "ipv6"
            if family and family != fam:
                return [], "", ""
            family = fam
            text = render_address_interval(m.family, m.ranges[0])
            if "-" in text:
                raise _NotRich(f"firewalld cannot express the range {text}")
            kind = "source" if m.field is Field.SADDR else "destination"
            parts.append(f'{kind} {"NOT " if m.negate else ""}address="{text}"')
        elif (
            m.field is Field.L4PROTO
            and not m.negate
            and len(m.ranges) == 1
            and m.ranges[0][0] == m.ranges[0][1]
        ):
            # firewalld checks protocols against /etc/protocols, which calls ICMPv6 ipv6-icmp.
            name = (
                "ipv6-icmp"
                if m.ranges[0][0] == 58
                else IPPROTO_NAMES.get(m.ranges[0][0], str(m.ranges[0][0]))
            )
            if proto and proto != name:
                return [], "", ""  # two protocols: never matches
            proto = name
        elif (
            m.field is Field.NFPROTO
            and not m.negate
            and len(m.ranges) == 1
            and m.ranges[0][0] == m.ranges[0][1]
        ):
            fam = "ipv4" if m.ranges[0][0] == 4 else "ipv6"
            if family and family != fam:
                return [], "", ""  # never matches
            family = fam
        elif m.field is Field.DPORT and not m.negate and not m.set_name and m.ranges:
            if len(m.protos) == 1:
                name = IPPROTO_NAMES.get(m.protos[0], "")
                if proto and proto != name:
                    return [], "", ""  # two protocols: never matches
                proto = name
            ports = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in m.ranges]
        elif m.field is Field.IIF:
            raise _NotRich("firewalld binds interfaces to zones, not rules")
        else:
            raise _NotRich(f"firewalld rich rules cannot express {m}")
    if ports and proto not in ("tcp", "udp", "sctp", "dccp"):
        raise _NotRich("ports without a single tcp, udp, sctp or dccp protocol")
    verdict = {FilterAction.ACCEPT: "accept", FilterAction.DROP: "drop"}.get(r.action, "")
    if r.action is FilterAction.REJECT:
        rej = r.reject or Reject()
        if rej.type is RejectType.TCP_RESET:
            if proto and proto != "tcp":
                raise _NotRich("a tcp reset for a protocol other than tcp")
            if not family:
                raise _NotRich("firewalld needs an address family for reject type tcp-reset")
            verdict = 'reject type="tcp-reset"'
            proto = "tcp"
        elif not family:
            if rej.code != "port-unreachable":
                raise _NotRich(f"reject type {rej.code} needs an address family in firewalld")
            verdict = "reject"
        else:
            if (rej.type is RejectType.ICMP and family == "ipv6") or (
                rej.type is RejectType.ICMPV6 and family == "ipv4"
            ):
                return [], "", ""
            from portkit.firewall._iptables import reject_name

            # firewalld takes iptables' names for reject types (icmp6-adm-prohibited ...).
            reject_type = reject_name(rej, 4 if family == "ipv4" else 6)
            if reject_type is None:
                raise _NotRich(f"firewalld has no reject type for {rej.answer(4 if family == 'ipv4' else 6)}")
            verdict = f'reject type="{reject_type}"'
    if ports:
        return [[*parts, f'port port="{p}" protocol="{proto}"'] for p in ports], verdict, family
    return [[*parts, f'protocol value="{proto}"'] if proto else parts], verdict, family


class _Renderer:
    """The render function of each target."""

    @staticmethod
    def get(target: str) -> Any:
        from portkit.firewall._iptables import render_iptables
        from portkit.firewall._nft import render_nft
        from portkit.firewall._ufw import render_ufw

        table: dict[str, Any] = {
            "nft": render_nft,
            "iptables": lambda rs: render_iptables(rs, version=4),
            "ip6tables": lambda rs: render_iptables(rs, version=6),
            "ufw": render_ufw,
            "firewalld": render_firewalld,
        }
        if target not in table:
            raise UsageError(
                f"invalid export target {target!r}: expected nft, iptables, ip6tables, ufw or firewalld"
            )
        return table[target]


def export_ruleset(ruleset: Ruleset, target: str, *, force: bool = False) -> Rendering:
    """Render for `nft`, `iptables`, `ip6tables`, `ufw` or `firewalld`, never wider than the source.

    Raises ExportRefused when a rule that cannot be rendered is not safe to leave out;
    `force` leaves such rules out anyway (the Rendering still names them)."""
    rendering: Rendering = _Renderer.get(target)(ruleset)
    if rendering.unsafe and not force:
        raise ExportRefused(rendering, target)
    return rendering


def check_export(text: str, target: str) -> None:
    """Load an export with the real tool in a scratch network namespace (needs root).

    nft checks with `nft -c`; iptables-restore's `--test` stops short of the kernel, which
    alone refuses some rules (REJECT outside filter, for one), so iptables exports are loaded
    for real into the scratch namespace, which is then deleted. ufw and firewalld have no
    offline check. Raises PortkitError with the tool's first complaint."""
    import os
    import secrets
    import subprocess

    from portkit.errors import PermissionNeeded
    from portkit.firewall._live import run_tool

    tools = {
        "nft": ["nft", "-c", "-f", "-"],
        "iptables": ["iptables-restore"],
        "ip6tables": ["ip6tables-restore"],
    }
    if target not in tools:
        raise UsageError(f"--check works for nft, iptables and ip6tables exports, not {target}")
    if os.geteuid() != 0:
        raise PermissionNeeded("--check needs root (it loads the export in a scratch network namespace)")
    name = f"portkit-check-{os.getpid()}-{secrets.token_hex(3)}"
    created = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if created.returncode != 0:
        raise PortkitError(f"cannot create a scratch network namespace: {created.stderr.strip()}")
    try:
        proc = run_tool(tools[target], netns=name, stdin=text)
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("Try `")]
        raise PortkitError(f"{tools[target][0]} refuses the export: {' '.join(lines[:2])[:200]}")
