"""The firewall model: tables, chains, rules, matches and verdicts, as immutable values.

One model serves every dialect (nftables, iptables, ufw, portkit's policy file): importers
build it, the evaluator and the linter read it, exporters render it. It is deliberately
close to nftables, because nftables is what the kernel runs (iptables-nft and ufw are
front ends that end up as nftables rules), so a faithful nft model is a faithful model.

Every numeric match is a union of closed intervals (`ranges`): a port `22`, a port range
`1000-2000`, an address prefix `10.0.0.0/8` and a named set all become intervals, which
is what lets the evaluator compare them and the linter compute overlaps exactly.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.model.intervals import Interval
from portkit.model.protocols import (
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    IPV4,
    IPV6,
)

IPPROTO = {
    "icmp": IPPROTO_ICMP,
    "igmp": 2,
    "tcp": IPPROTO_TCP,
    "udp": IPPROTO_UDP,
    "dccp": 33,
    "gre": 47,
    "esp": 50,
    "ah": 51,
    "icmpv6": IPPROTO_ICMPV6,
    "ipv6-icmp": IPPROTO_ICMPV6,
    "sctp": IPPROTO_SCTP,
    "udplite": 136,
}
IPPROTO_NAMES = {number: name for name, number in IPPROTO.items() if name != "ipv6-icmp"}
# Transport protocols whose header starts with source and destination ports.
PORT_PROTOS = (IPPROTO_TCP, IPPROTO_UDP, IPPROTO["dccp"], IPPROTO_SCTP, IPPROTO["udplite"])

ICMP_TYPES = {
    "echo-reply": 0,
    "destination-unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo-request": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
    "info-request": 15,
    "info-reply": 16,
    "address-mask-request": 17,
    "address-mask-reply": 18,
}
ICMPV6_TYPES = {
    "destination-unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo-request": 128,
    "echo-reply": 129,
    "mld-listener-query": 130,
    "mld-listener-report": 131,
    "mld-listener-done": 132,
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
    "router-renumbering": 138,
    "mld2-listener-report": 143,
}


class Word(enum.Enum):
    """An enum whose members print as their word (`str(Hook.INPUT)` is `input`), as nft writes them."""

    def __str__(self) -> str:
        return str(self.value)


class Family(Word):
    """An nftables table family; `inet` holds both IPv4 and IPv6."""

    IP = "ip"
    IP6 = "ip6"
    INET = "inet"
    ARP = "arp"
    BRIDGE = "bridge"
    NETDEV = "netdev"

    def covers(self, ip_version: int) -> bool:
        """Whether packets of this IP version traverse chains of this family."""
        if self is Family.INET:
            return True
        return (self is Family.IP and ip_version == IPV4) or (self is Family.IP6 and ip_version == IPV6)


class Hook(Word):
    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
    POSTROUTING = "postrouting"
    INGRESS = "ingress"


class ChainType(Word):
    FILTER = "filter"
    NAT = "nat"
    ROUTE = "route"


class FilterAction(Word):
    """What a rule does when all its matches hold. CONTINUE is a rule with no verdict."""

    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"
    JUMP = "jump"
    GOTO = "goto"
    RETURN = "return"
    CONTINUE = "continue"
    DNAT = "dnat"
    REDIRECT = "redirect"
    SNAT = "snat"
    MASQUERADE = "masquerade"
    QUEUE = "queue"

    @property
    def terminal(self) -> bool:
        """Whether evaluation of the base chain stops at this rule."""
        return self in _TERMINAL


_TERMINAL = {
    FilterAction.ACCEPT,
    FilterAction.DROP,
    FilterAction.REJECT,
    FilterAction.DNAT,
    FilterAction.REDIRECT,
    FilterAction.SNAT,
    FilterAction.MASQUERADE,
    FilterAction.QUEUE,
}


class CtState(Word):
    NEW = "new"
    ESTABLISHED = "established"
    RELATED = "related"
    INVALID = "invalid"
    UNTRACKED = "untracked"


class Field(Word):
    """What a match looks at."""

    NFPROTO = "nfproto"  # ranges over {4, 6}
    L4PROTO = "l4proto"
    SADDR = "saddr"
    DADDR = "daddr"
    SPORT = "sport"
    DPORT = "dport"
    IIF = "iif"  # names; a trailing * is a prefix wildcard, as in nft and iptables
    OIF = "oif"
    CT_STATE = "ct state"  # names
    ICMP_TYPE = "icmp type"  # family 4: icmp, 6: icmpv6
    ICMP_CODE = "icmp code"
    CT_STATUS = "ct status"  # names (dnat, snat, ...): known for a connection's first packet only
    # ranges = ((mask, value),): `exact` holds when flags & mask == value, otherwise when
    # flags & mask != 0 (`tcp flags syn`). Known for a connection's first packet (a SYN) only.
    TCP_FLAGS = "tcp flags"
    FIB_DADDR_TYPE = "fib daddr type"  # names: local, unicast, multicast...; needs the host's addresses
    # The reverse-path check (nft `fib saddr . iif oif exists`, iptables `-m rpfilter`): the
    # route back to the source leaves through the input interface. `names` holds iptables'
    # flags (see RPF_FLAGS); `negate` is `oif missing` / `--invert`. Needs the host's routes.
    REVERSE_PATH = "fib saddr oif"
    CONCAT = "concat"  # `ip saddr . tcp dport { 10.0.0.1 . 22 }`: `parts` and `elements`
    OPAQUE = "opaque"  # an expression portkit cannot evaluate; kept as text


# Next-header values after which a packet carries headers the model does not describe (IPv6
# extension headers, AH, ESP, no next header): an opaque match's `plain` value does not apply.
EXTRA_HEADER_PROTOS = frozenset({0, 43, 44, 50, 51, 59, 60, 135, 139, 140, 253, 254})

# Fields whose matches are not a box of intervals (the linter's and the compiled evaluator's
# space): only the reference evaluator decides them.
NON_BOX_FIELDS = frozenset(
    {Field.CT_STATUS, Field.TCP_FLAGS, Field.FIB_DADDR_TYPE, Field.REVERSE_PATH, Field.CONCAT, Field.OPAQUE}
)

# The flags of a reverse-path match, as iptables' rpfilter names them: `loose` (any route back
# will do: nft's `fib saddr oif` without `. iif`), `validmark` (the lookup uses the packet's
# mark: nft's `. mark`), `accept-local` (a source that is one of the host's own addresses
# passes; nft has no such flag).
RPF_FLAGS = ("loose", "validmark", "accept-local")

TCP_FLAG_BITS = {
    "fin": 0x01,
    "syn": 0x02,
    "rst": 0x04,
    "psh": 0x08,
    "ack": 0x10,
    "urg": 0x20,
    "ecn": 0x40,
    "cwr": 0x80,
}


def tcp_flags_text(bits: int) -> str:
    """`syn | ack`, as nft writes a flag combination."""
    names = [n for n, b in TCP_FLAG_BITS.items() if bits & b]
    return " | ".join(names) if names else "0x0"


@dataclass(frozen=True)
class Match:
    """One condition of a rule.

    `family` (4/6) is the implicit dependency of address and ICMP matches and `protos`
    that of port matches: `ip saddr != 10.0.0.0/8` never matches an IPv6 packet and
    `tcp dport != 22` never matches a UDP packet, whatever the negation says.
    """

    field: Field
    ranges: tuple[Interval, ...] = ()
    names: tuple[str, ...] = ()
    negate: bool = False
    family: int = 0
    protos: tuple[int, ...] = ()
    set_name: str = ""
    text: str = ""
    # `ct state != new | established` compares the whole state word with two bits set, so it
    # always holds (and `==` never does); nft writes that for a comma list after `!=`.
    exact: bool = False
    # CONCAT: the components (value-less matches: field, family, protos) and the elements,
    # one value per component: an interval, or a name for interfaces. A packet matches when
    # its tuple falls in one element, as the kernel's concatenated set lookup does.
    parts: tuple[Match, ...] = ()
    elements: tuple[tuple[Interval | str, ...], ...] = ()
    # OPAQUE only: the match's value on every packet the model describes, when that is known
    # although the match itself is not modelled (`-m frag` is false and `-m policy --dir in
    # --pol none` true: a modelled packet has no extension headers and no IPsec). Packets
    # whose protocol is itself such a header (`EXTRA_HEADER_PROTOS`) stay undecided.
    plain: bool | None = None
    # What the match reads changes at run time in a way the model does not follow: a named
    # set's elements (flags dynamic or timeout, or a rule adds to it), the conntrack state of
    # a packet a notrack rule may select. The match is undecided; the first branch takes the
    # modelled value (the set's snapshot, a tracked packet's state).
    dynamic: bool = False
    # OPAQUE only: the match depends on the traffic's rate or count (a rate limit, a quota, a
    # connection count): undecided, unless the query states whether such limits are reached
    # (`evaluate(limits=...)`, `fw check --limits`). Its assumption (`negate`) is the ordinary
    # case, the limit not reached. A source's history (`-m recent`) is not one of these.
    rate: bool = False

    def __str__(self) -> str:
        if self.field is Field.OPAQUE and self.text:
            from portkit.firewall._nftexpr import render_json_text

            return render_json_text(self.text)  # nft's JSON for the match, written in nft syntax
        return self.text or render_match(self)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field.value, "negate": self.negate, "text": str(self)}
        if self.set_name:
            out["set"] = self.set_name
        return out

    def value_text(self) -> str:
        """The matched values as nft writes them (`22`, `{ 80, 443 }`, `10.0.0.0/8`)."""
        if self.set_name:
            return "@" + self.set_name
        if self.field is Field.CONCAT:
            elems = [
                " . ".join(
                    (f'"{v}"' if p.field in (Field.IIF, Field.OIF) else v)
                    if isinstance(v, str)
                    else render_interval(p.field, p.family, v)
                    for p, v in zip(self.parts, e, strict=True)
                )
                for e in self.elements
            ]
            return "{ " + ", ".join(elems) + " }"
        items = [
            *(f'"{n}"' if self.field in (Field.IIF, Field.OIF) else n for n in self.names),
            *(render_interval(self.field, self.family, r) for r in self.ranges),
        ]
        if len(items) == 1:
            return items[0]
        if self.field is Field.CT_STATE and self.exact:
            return " | ".join(items)
        return "{ " + ", ".join(items) + " }"


def render_interval(fld: Field, family: int, interval: Interval) -> str:
    lo, hi = interval
    if fld in (Field.SADDR, Field.DADDR):
        return render_address_interval(family, interval)
    if fld is Field.L4PROTO and lo == hi:
        return IPPROTO_NAMES.get(lo, str(lo))
    if fld is Field.NFPROTO and lo == hi:
        return "ipv4" if lo == 4 else "ipv6"
    if fld is Field.ICMP_TYPE and lo == hi:
        table = ICMP_TYPES if family == IPV4 else ICMPV6_TYPES
        for name, number in table.items():
            if number == lo:
                return name
    return str(lo) if lo == hi else f"{lo}-{hi}"


def render_address_interval(family: int, interval: Interval) -> str:
    lo, hi = interval
    bits = 32 if family == IPV4 else 128
    make = ipaddress.IPv4Address if family == IPV4 else ipaddress.IPv6Address
    if lo == hi:
        return str(make(lo))
    size = hi - lo + 1
    if size & (size - 1) == 0 and lo % size == 0:
        return f"{make(lo)}/{bits - size.bit_length() + 1}"
    return f"{make(lo)}-{make(hi)}"


def render_match(m: Match) -> str:
    """A match in nft syntax."""
    if m.field is Field.OPAQUE:
        return m.text or "<opaque>"
    if m.field is Field.CT_STATUS:
        # A bit test, as `ct status dnat` is: `== dnat` or a `{ }` set would compare the
        # whole status word.
        bits = ",".join(m.names)
        return f"ct status & ({bits.replace(',', ' | ')}) == 0" if m.negate else f"ct status {bits}"
    if m.field is Field.REVERSE_PATH:
        keys = ["saddr", *(["mark"] if "validmark" in m.names else [])]
        keys += [] if "loose" in m.names else ["iif"]
        text = f"fib {' . '.join(keys)} oif {'missing' if m.negate else 'exists'}"
        # nft has no accept-local flag: said in a comment-like suffix, never loadable as is.
        return text + (" <accept-local>" if "accept-local" in m.names else "")
    if m.field is Field.TCP_FLAGS:
        mask, value = m.ranges[0]
        if m.exact:
            lhs = "tcp flags" if mask == 0xFF else f"tcp flags & ({tcp_flags_text(mask)})"
            return f"{lhs} {'!=' if m.negate else '=='} {tcp_flags_text(value)}"
        return f"tcp flags & ({tcp_flags_text(mask)}) {'==' if m.negate else '!='} 0"
    op = "!= " if m.negate else ""
    return f"{match_key(m)} {op}{m.value_text()}"


def match_key(m: Match) -> str:
    """What a match looks at, in nft syntax (`ip saddr`, `tcp dport`, `ip saddr . tcp dport`)."""
    if m.field in (Field.SADDR, Field.DADDR):
        return f"{'ip' if m.family == IPV4 else 'ip6'} {m.field.value}"
    if m.field in (Field.SPORT, Field.DPORT):
        if len(m.protos) == 1:
            return f"{IPPROTO_NAMES.get(m.protos[0], 'th')} {m.field.value}"
        return f"th {m.field.value}"
    if m.field is Field.L4PROTO:
        if m.family:
            return "ip protocol" if m.family == IPV4 else "ip6 nexthdr"
        return "meta l4proto"
    if m.field is Field.NFPROTO:
        return "meta nfproto"
    if m.field in (Field.IIF, Field.OIF):
        return f"{m.field.value}name"
    if m.field in (Field.CT_STATE, Field.CT_STATUS, Field.FIB_DADDR_TYPE):
        return str(m.field)
    if m.field is Field.CONCAT:
        return " . ".join(match_key(p) for p in m.parts)
    if m.field in (Field.ICMP_TYPE, Field.ICMP_CODE):
        proto = "icmp" if m.family == IPV4 else "icmpv6"
        return f"{proto} {m.field.value.split()[1]}"
    return m.text or "<opaque>"


class RejectType(enum.Enum):
    TCP_RESET = "tcp reset"
    ICMP = "icmp"
    ICMPV6 = "icmpv6"
    ICMPX = "icmpx"


# icmpx codes are family-neutral; the kernel picks the family-specific code per packet.
_ICMPX_V4 = {
    "port-unreachable": "port-unreachable",
    "admin-prohibited": "admin-prohibited",
    "host-unreachable": "host-unreachable",
    "no-route": "net-unreachable",
}
_ICMPX_V6 = {
    "port-unreachable": "port-unreachable",
    "admin-prohibited": "admin-prohibited",
    "host-unreachable": "addr-unreachable",
    "no-route": "no-route",
}


@dataclass(frozen=True)
class Reject:
    """How a reject answers: a TCP reset or an ICMP/ICMPv6/ICMPx error with a code."""

    type: RejectType = RejectType.ICMPX
    code: str = "port-unreachable"

    def __str__(self) -> str:
        if self.type is RejectType.TCP_RESET:
            return "reject with tcp reset"
        return f"reject with {self.type.value} type {self.code}"

    def applies_to(self, ip_version: int, l4proto: int) -> bool:
        """The implicit dependency nft adds: `reject with tcp reset` only hits TCP, etc."""
        if self.type is RejectType.TCP_RESET:
            return l4proto == IPPROTO_TCP
        if self.type is RejectType.ICMP:
            return ip_version == IPV4
        if self.type is RejectType.ICMPV6:
            return ip_version == IPV6
        return True

    def answer(self, ip_version: int) -> str:
        """What goes back on the wire: `tcp-reset`, `icmp-port-unreachable`, `icmpv6-no-route` ..."""
        if self.type is RejectType.TCP_RESET:
            return "tcp-reset"
        code = self.code
        if self.type is RejectType.ICMPX:
            code = (_ICMPX_V4 if ip_version == IPV4 else _ICMPX_V6).get(code, code)
        return f"{'icmp' if ip_version == IPV4 else 'icmpv6'}-{code}"


@dataclass(frozen=True)
class NatTarget:
    """Where DNAT/REDIRECT sends a packet: an address (None keeps it) and a port (None keeps it)."""

    address: str | None = None
    port: int | None = None
    # The target is a map lookup or a range (`dnat to ip daddr map { ... }`): where the packet
    # goes is not known, so a decision through this rule is uncertain.
    unknown: bool = False

    def __str__(self) -> str:
        if self.address and self.port is not None:
            return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"
        if self.address:
            return self.address
        return f":{self.port}" if self.port is not None else ""


@dataclass(frozen=True)
class FilterRule:
    """An ordered rule: all matches must hold, then the action applies."""

    matches: tuple[Match, ...] = ()
    action: FilterAction = FilterAction.CONTINUE
    target: str = ""  # chain of jump/goto
    reject: Reject | None = None
    nat: NatTarget | None = None
    counter: bool = False
    log: str | None = None  # log prefix ("" for a log without prefix)
    comment: str = ""
    handle: int | None = None
    line: int | None = None
    opaque: tuple[str, ...] = ()  # statements kept as text that do not change the verdict

    @property
    def where(self) -> str:
        if self.handle is not None:
            return f"handle {self.handle}"
        if self.line is not None:
            return f"line {self.line}"
        return ""

    @property
    def untracks(self) -> bool:
        """Whether the rule's statements take the packet out of conntrack (nft `notrack`,
        iptables `-j NOTRACK` / `-j CT --notrack`)."""
        # nft's statements are kept as their JSON, iptables' as their words.
        return (
            '{"notrack":null}' in self.opaque
            or "notrack" in self.opaque
            or "-j NOTRACK" in self.opaque
            or ("-j CT" in self.opaque and "--notrack" in self.opaque)
        )

    @property
    def uncertain(self) -> bool:
        """Whether a match is beyond the box model (unmodelled, a concatenation, ct status):
        the linter does not reason about such a rule; the evaluator decides it, or forks."""
        return any(m.field in NON_BOX_FIELDS or m.dynamic for m in self.matches)

    def verdict_text(self) -> str:
        if self.action in (FilterAction.JUMP, FilterAction.GOTO):
            return f"{self.action.value} {self.target}"
        if self.action is FilterAction.REJECT:
            return str(self.reject or Reject())
        if self.action in (FilterAction.DNAT, FilterAction.REDIRECT, FilterAction.SNAT):
            return f"{self.action.value} to {self.nat}" if self.nat else self.action.value
        if self.action is FilterAction.CONTINUE:
            return ""
        return str(self.action.value)

    def __str__(self) -> str:
        # `meta l4proto tcp tcp dport 22` reads as `tcp dport 22`, as nft itself lists it.
        implied = {m.protos for m in self.matches if len(m.protos) == 1}
        parts = [
            str(m)
            for m in self.matches
            if not (
                m.field is Field.L4PROTO
                and not m.negate
                and not m.family
                and len(m.ranges) == 1
                and m.ranges[0][0] == m.ranges[0][1]
                and (m.ranges[0][0],) in implied
            )
        ]
        if self.counter:
            parts.append("counter")
        if self.log is not None:
            parts.append(f'log prefix "{self.log}"' if self.log else "log")
        if self.opaque:
            from portkit.firewall._nftexpr import render_json_text

            parts.extend(map(render_json_text, self.opaque))
        if self.action is not FilterAction.CONTINUE:
            parts.append(self.verdict_text())
        if self.comment:
            parts.append(f'comment "{self.comment}"')
        return " ".join(parts) or "(empty rule)"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rule": str(self),
            "action": self.action.value,
            "matches": [m.to_json() for m in self.matches],
        }
        if self.target:
            out["target"] = self.target
        if self.reject:
            out["reject"] = {"type": self.reject.type.value, "code": self.reject.code}
        if self.nat:
            out["nat_to"] = str(self.nat)
        if self.handle is not None:
            out["handle"] = self.handle
        if self.line is not None:
            out["line"] = self.line
        if self.comment:
            out["comment"] = self.comment
        return out


@dataclass(frozen=True)
class Chain:
    """A chain; a base chain has a hook, a type, a priority and a policy."""

    name: str
    rules: tuple[FilterRule, ...] = ()
    hook: Hook | None = None
    type: ChainType = ChainType.FILTER
    priority: int = 0
    policy: FilterAction = FilterAction.ACCEPT
    handle: int | None = None

    @property
    def is_base(self) -> bool:
        return self.hook is not None

    def __str__(self) -> str:
        if self.hook is None:
            return f"chain {self.name}"
        return (
            f"chain {self.name} ({self.type} hook {self.hook} priority {self.priority} policy {self.policy})"
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "base": self.is_base}
        if self.hook is not None:
            out.update(
                hook=self.hook.value, type=self.type.value, priority=self.priority, policy=self.policy.value
            )
        out["rules"] = [r.to_json() for r in self.rules]
        return out


# nft set key types portkit models: the field a value of that type is read as, and its family.
SET_TYPE_FIELDS: dict[str, tuple[Field, int]] = {
    "ipv4_addr": (Field.SADDR, 4),
    "ipv6_addr": (Field.SADDR, 6),
    "inet_service": (Field.DPORT, 0),
    "inet_proto": (Field.L4PROTO, 0),
    "ifname": (Field.IIF, 0),
    "ct_state": (Field.CT_STATE, 0),
    "icmp_type": (Field.ICMP_TYPE, 4),
    "icmpv6_type": (Field.ICMP_TYPE, 6),
    "nf_proto": (Field.NFPROTO, 0),
}


@dataclass(frozen=True)
class NamedSet:
    """A named set (`set allowed { type ipv4_addr; ... }`), resolved to intervals or names.
    A set of a concatenated type (`type ipv4_addr . inet_service`) holds `elements` instead:
    one value per component, as `Match.elements`."""

    name: str
    type: str
    ranges: tuple[Interval, ...] = ()
    names: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    elements: tuple[tuple[Interval | str, ...], ...] = ()
    dynamic: bool = False  # see Match.dynamic

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.type.split("."))

    def to_json(self) -> dict[str, Any]:
        if len(self.types) > 1:
            parts = [SET_TYPE_FIELDS.get(t, (Field.DPORT, 0)) for t in self.types]
            return {
                "name": self.name,
                "type": self.type,
                "elements": [
                    " . ".join(
                        (f'"{v}"' if fld is Field.IIF else v)
                        if isinstance(v, str)
                        else render_interval(fld, fam, v)
                        for (fld, fam), v in zip(parts, e, strict=True)
                    )
                    for e in self.elements
                ],
            }
        fld = Field.SADDR if "addr" in self.type else Field.DPORT
        fam = 6 if "ipv6" in self.type else 4
        return {
            "name": self.name,
            "type": self.type,
            "elements": [*self.names, *(render_interval(fld, fam, r) for r in self.ranges)],
        }


@dataclass(frozen=True)
class Table:
    family: Family
    name: str
    chains: tuple[Chain, ...] = ()
    sets: tuple[NamedSet, ...] = ()

    def chain(self, name: str) -> Chain | None:
        for c in self.chains:
            if c.name == name:
                return c
        return None

    def __str__(self) -> str:
        return f"{self.family} {self.name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "family": self.family.value,
            "name": self.name,
            "sets": [s.to_json() for s in self.sets],
            "chains": [c.to_json() for c in self.chains],
        }


@dataclass(frozen=True)
class Ruleset:
    """Everything the kernel (or a file) holds, plus notes on what an importer could not model."""

    tables: tuple[Table, ...] = ()
    source: str = ""
    notes: tuple[str, ...] = field(default=(), compare=False)

    def table(self, family: Family | str, name: str) -> Table | None:
        fam = Family(family) if isinstance(family, str) else family
        for t in self.tables:
            if t.family is fam and t.name == name:
                return t
        return None

    def base_chains(self, hook: Hook, ip_version: int) -> list[tuple[Table, Chain]]:
        """The base chains a packet of this IP version meets on `hook`, in the kernel's order."""
        found = [
            (c.priority, ti, ci, t, c)
            for ti, t in enumerate(self.tables)
            for ci, c in enumerate(t.chains)
            if c.hook is hook and t.family.covers(ip_version)
        ]
        found.sort(key=lambda x: (x[0], x[1], x[2]))
        return [(t, c) for *_, t, c in found]

    def rules(self) -> Iterator[tuple[Table, Chain, int, FilterRule]]:
        for t in self.tables:
            for c in t.chains:
                for i, r in enumerate(c.rules):
                    yield t, c, i, r

    @property
    def rule_count(self) -> int:
        return sum(len(c.rules) for t in self.tables for c in t.chains)

    def with_notes(self, *notes: str) -> Ruleset:
        return replace(self, notes=(*self.notes, *notes))

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "tables": [t.to_json() for t in self.tables],
            "notes": list(self.notes),
        }


def address_interval(text: str) -> tuple[int, Interval]:
    """`10.0.0.0/8`, `10.0.0.1`, `10.0.0.1-10.0.0.9`, `fd00::/8` -> (IP version, interval)."""
    text = text.strip()
    if "-" in text and "/" not in text:
        a, b = (ipaddress.ip_address(x.strip()) for x in text.split("-", 1))
        if a.version != b.version:
            raise ValueError(f"mixed address families in range {text!r}")
        return a.version, (int(a), int(b))
    net = ipaddress.ip_network(text, strict=False)
    return net.version, (int(net.network_address), int(net.broadcast_address))


def canonical(ruleset: Ruleset) -> Ruleset:
    """The ruleset without what does not change behaviour: handles, line numbers, counters'
    values, chain handles, and protocol matches implied by a port match (nft lists
    `meta l4proto tcp tcp dport 22` as `tcp dport 22`). Two imports of the same rules compare
    equal after this."""
    tables = []
    for t in ruleset.tables:
        chains = []
        for c in t.chains:
            rules = []
            for r in c.rules:
                implied = {
                    m.protos
                    for m in r.matches
                    if m.protos
                    and m.field
                    in (Field.SPORT, Field.DPORT, Field.ICMP_TYPE, Field.ICMP_CODE, Field.TCP_FLAGS)
                }
                if r.action is FilterAction.REJECT and r.reject and r.reject.type is RejectType.TCP_RESET:
                    implied.add((6,))
                versions = {m.family for m in r.matches if m.family and m.field is not Field.L4PROTO}
                if r.action is FilterAction.REJECT and r.reject and r.reject.type is RejectType.ICMP:
                    versions.add(4)
                if r.action is FilterAction.REJECT and r.reject and r.reject.type is RejectType.ICMPV6:
                    versions.add(6)
                kept = tuple(
                    replace(
                        m,
                        names=_canonical_names(m.names),
                        family=0
                        if m.field is Field.L4PROTO and t.family in (Family.IP, Family.IP6)
                        else m.family,
                    )
                    for m in r.matches
                    if not (
                        m.field is Field.L4PROTO
                        and not m.negate
                        and tuple(v for lo, hi in m.ranges for v in range(lo, hi + 1)) in implied
                    )
                    and not (
                        m.field is Field.NFPROTO
                        and not m.negate
                        and len(m.ranges) == 1
                        and m.ranges[0][0] == m.ranges[0][1]
                        and m.ranges[0][0] in versions
                    )
                )
                # Order inside a rule does not matter (nft reorders adjacent payload matches).
                kept = tuple(sorted(kept, key=lambda m: (m.field.value, str(m))))
                rules.append(replace(r, matches=kept, handle=None, line=None))
            chains.append(replace(c, rules=tuple(rules), handle=None))
        tables.append(replace(t, chains=tuple(chains)))
    return Ruleset(tuple(tables), "")


def _canonical_names(names: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted, without names a wildcard in the same set already covers (nft merges them)."""
    wild = [n[:-1] for n in names if n.endswith("*")]
    return tuple(sorted({n for n in names if n.endswith("*") or not any(n.startswith(w) for w in wild)}))
