"""portkit's own policy file: a short, readable, ordered rule list.

    # first match wins, like every firewall
    default incoming drop
    default outgoing accept
    allow established                      # ct state established,related accept
    allow in on lo
    allow tcp 22 from 10.0.0.0/8
    allow tcp 80,443
    reject udp 5000-5100 from 192.0.2.0/24 with icmp-admin-prohibited
    deny tcp 6379
    allow out tcp 25 to 192.0.2.10
    allow icmp type echo-request

Grammar of a rule line: ACTION [in|out|forward] [on IFACE] [PROTO [PORTS]] [from ADDRS [port PORTS]]
[to ADDRS [port PORTS]] [state STATES] [type ICMPTYPE] [with REJECT] [log].
ACTION is allow|accept, deny|drop or reject; ADDRS is `any` or a comma list of addresses,
prefixes and ranges (a leading `!` negates); PORTS is a port spec like `22,80,1000-2000`.
The file becomes one `inet portkit` table with input, forward and output base chains.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from portkit.errors import UsageError, quote
from portkit.firewall._model import (
    ICMP_TYPES,
    ICMPV6_TYPES,
    IPPROTO,
    Chain,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    Reject,
    RejectType,
    Ruleset,
    Table,
    address_interval,
)
from portkit.model import parse_decimal
from portkit.model.intervals import Interval, merge_intervals
from portkit.model.portspec import PortNames, parse_port_spec
from portkit.model.protocols import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPV4, IPV6

_ACTIONS = {
    "allow": FilterAction.ACCEPT,
    "accept": FilterAction.ACCEPT,
    "deny": FilterAction.DROP,
    "drop": FilterAction.DROP,
    "reject": FilterAction.REJECT,
}
_DIRECTIONS = {
    "in": Hook.INPUT,
    "incoming": Hook.INPUT,
    "input": Hook.INPUT,
    "out": Hook.OUTPUT,
    "outgoing": Hook.OUTPUT,
    "output": Hook.OUTPUT,
    "forward": Hook.FORWARD,
    "routed": Hook.FORWARD,
}
_REJECTS = {
    "tcp-reset": Reject(RejectType.TCP_RESET, ""),
    "icmp-port-unreachable": Reject(RejectType.ICMPX, "port-unreachable"),
    "port-unreachable": Reject(RejectType.ICMPX, "port-unreachable"),
    "icmp-admin-prohibited": Reject(RejectType.ICMPX, "admin-prohibited"),
    "admin-prohibited": Reject(RejectType.ICMPX, "admin-prohibited"),
    "icmp-host-unreachable": Reject(RejectType.ICMPX, "host-unreachable"),
    "host-unreachable": Reject(RejectType.ICMPX, "host-unreachable"),
    "no-route": Reject(RejectType.ICMPX, "no-route"),
}
_HELP = (
    "expected 'ACTION [in|out|forward] [on IFACE] [PROTO [PORTS]] [from ADDRS [port PORTS]] "
    "[to ADDRS [port PORTS]] [state STATES] [with REJECT]', e.g. 'allow tcp 22 from 10.0.0.0/8'"
)


@dataclass
class _Line:
    tokens: list[str]
    where: str
    names: PortNames
    i: int = 0
    matches: list[Match] = field(default_factory=list)

    def peek(self) -> str:
        return self.tokens[self.i] if self.i < len(self.tokens) else ""

    def take(self, what: str) -> str:
        if self.i >= len(self.tokens):
            raise UsageError(f"invalid policy rule at {self.where}: {what} is missing; {_HELP}")
        self.i += 1
        return self.tokens[self.i - 1]


def _ports(text: str, where: str, names: PortNames) -> tuple[Interval, ...]:
    try:
        spec = parse_port_spec(text, names)
    except UsageError as exc:
        raise UsageError(f"invalid policy rule at {where}: {exc}") from None
    return merge_intervals([(r.first, r.last) for r in (*spec.any, *spec.tcp, *spec.udp, *spec.sctp)])


def _addresses(text: str, fld: Field, where: str) -> Match | None:
    negate = text.startswith("!")
    body = text[1:] if negate else text
    if body == "any":
        return None
    ranges: dict[int, list[Interval]] = {}
    for part in body.split(","):
        try:
            version, iv = address_interval(part)
        except ValueError:
            raise UsageError(
                f"invalid address {part!r} at {where}: expected an address, "
                "prefix (10.0.0.0/8) or range (10.0.0.1-10.0.0.9)"
            ) from None
        ranges.setdefault(version, []).append(iv)
    if len(ranges) != 1:
        raise UsageError(f"invalid address list {text!r} at {where}: mix of IPv4 and IPv6")
    ((version, ivs),) = ranges.items()
    return Match(fld, merge_intervals(ivs), negate=negate, family=version)


def _default_names() -> PortNames:
    from portkit.registry import DEFAULT_NAMES

    return DEFAULT_NAMES


def parse_rule_line(
    text: str, where: str = "policy", names: PortNames | None = None
) -> tuple[Hook, FilterRule]:
    """One policy line -> (hook of its chain, rule). `names` resolves service names in port
    lists (`to any port ssh`); without it this entry point takes portkit's registry."""
    return _rule_line(text, where, names or _default_names())


def _rule_line(text: str, where: str, names: PortNames) -> tuple[Hook, FilterRule]:
    ln = _Line(text.split(), where, names)
    word = ln.take("an action").lower()
    if word not in _ACTIONS:
        raise UsageError(f"invalid policy rule at {where}: unknown action {word!r}; {_HELP}")
    action = _ACTIONS[word]
    hook = Hook.INPUT
    if ln.peek().lower() in _DIRECTIONS:
        hook = _DIRECTIONS[ln.take("").lower()]
    if ln.peek() == "established":
        ln.take("")
        return hook, FilterRule((Match(Field.CT_STATE, names=("established", "related")),), action)
    proto = 0
    family = 0
    reject: Reject | None = None
    log: str | None = None
    while ln.i < len(ln.tokens):
        tok = ln.take("").lower()
        if tok == "on":
            name = ln.take("an interface name")
            fld = Field.OIF if hook is Hook.OUTPUT else Field.IIF
            ln.matches.append(Match(fld, names=(name.rstrip("+") + "*" if name.endswith("+") else name,)))
        elif tok in IPPROTO or tok == "any":
            if tok == "any":
                continue
            proto = IPPROTO[tok]
            if proto == IPPROTO_ICMP:
                family = 4
            elif proto == IPPROTO_ICMPV6:
                family = 6
            ln.matches.append(Match(Field.L4PROTO, ((proto, proto),), family=family))
            if ln.peek()[:1].isdigit():
                ln.matches.append(Match(Field.DPORT, _ports(ln.take(""), where, ln.names), protos=(proto,)))
        elif tok[:1].isdigit() and proto:
            ln.matches.append(Match(Field.DPORT, _ports(tok, where, ln.names), protos=(proto,)))
        elif tok in ("from", "to"):
            fld = Field.SADDR if tok == "from" else Field.DADDR
            m = _addresses(ln.take("an address"), fld, where)
            if m is not None:
                ln.matches.append(m)
            if ln.peek() == "port":
                ln.take("")
                if not proto:
                    raise UsageError(f"invalid policy rule at {where}: 'port' needs a protocol (tcp/udp)")
                pf = Field.SPORT if tok == "from" else Field.DPORT
                ln.matches.append(Match(pf, _ports(ln.take("a port"), where, ln.names), protos=(proto,)))
        elif tok == "state":
            states = tuple(s.strip().lower() for s in ln.take("states").split(","))
            bad = [s for s in states if s not in ("new", "established", "related", "invalid", "untracked")]
            if bad:
                raise UsageError(
                    f"invalid state {bad[0]!r} at {where}: expected new, established, "
                    "related, invalid or untracked"
                )
            ln.matches.append(Match(Field.CT_STATE, names=states))
        elif tok == "type":
            if proto not in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                raise UsageError(f"invalid policy rule at {where}: 'type' needs icmp or icmpv6")
            table = ICMP_TYPES if proto == IPPROTO_ICMP else ICMPV6_TYPES
            name = ln.take("an ICMP type")
            number = parse_decimal(name)  # ASCII digits: int() would also take '²'
            num = number if number is not None else table.get(name)
            if num is None or num > 255:
                raise UsageError(
                    f"invalid ICMP type {quote(name)} at {where}: expected 0-255 or e.g. echo-request"
                )
            ln.matches.append(
                Match(
                    Field.ICMP_TYPE,
                    ((num, num),),
                    family=IPV4 if proto == IPPROTO_ICMP else IPV6,
                    protos=(proto,),
                )
            )
        elif tok == "with":
            name = ln.take("a reject kind").lower()
            if name not in _REJECTS:
                raise UsageError(
                    f"invalid reject kind {name!r} at {where}: expected one of " + ", ".join(_REJECTS)
                )
            reject = _REJECTS[name]
        elif tok == "log":
            log = ""
        else:
            raise UsageError(f"invalid policy rule at {where}: unexpected {tok!r}; {_HELP}")
    if action is FilterAction.REJECT and reject is None:
        reject = Reject(RejectType.TCP_RESET, "") if proto == IPPROTO_TCP else Reject()
    if reject is not None and reject.type is RejectType.TCP_RESET and proto != IPPROTO_TCP:
        raise UsageError(f"invalid policy rule at {where}: 'with tcp-reset' needs protocol tcp")
    return hook, FilterRule(tuple(ln.matches), action, reject=reject, log=log)


def parse_policy(text: str, *, source: str = "policy", names: PortNames | None = None) -> Ruleset:
    """A portkit policy file -> a ruleset with one `inet portkit` table.

    `names` resolves service names in port lists (`to any port ssh`); without it this entry
    point takes portkit's registry (`portkit.registry.DEFAULT_NAMES`), and nothing below it
    chooses one."""
    if names is None:
        names = _default_names()
    policies = {hook: FilterAction.ACCEPT for hook in (Hook.INPUT, Hook.FORWARD, Hook.OUTPUT)}
    rules: dict[Hook, list[FilterRule]] = {h: [] for h in policies}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source}:{lineno}"
        words = line.split()
        if words[0].lower() == "default":
            if len(words) != 3 or words[1].lower() not in _DIRECTIONS or words[2].lower() not in _ACTIONS:
                raise UsageError(
                    f"invalid default at {where}: expected 'default incoming|outgoing|routed "
                    "allow|deny', e.g. 'default incoming deny'"
                )
            act = _ACTIONS[words[2].lower()]
            if act is FilterAction.REJECT:
                raise UsageError(
                    f"invalid default at {where}: a chain policy is accept or drop, "
                    "not reject (add a final 'reject' rule instead)"
                )
            policies[_DIRECTIONS[words[1].lower()]] = act
            continue
        hook, rule = _rule_line(line, where, names)
        from dataclasses import replace

        rules[hook].append(replace(rule, line=lineno))
    chains = tuple(Chain(h.value, tuple(rules[h]), h, priority=0, policy=policies[h]) for h in policies)
    return Ruleset((Table(Family.INET, "portkit", chains),), source)
