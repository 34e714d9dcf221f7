"""iptables in and out: `iptables-save` text (v4 and v6) -> model, and model -> `iptables-restore`.

iptables-save is also how portkit reads rules that iptables-nft put in the kernel: nft
shows their `conntrack`, `multiport`, `DNAT`... as opaque `xt` expressions, but
iptables-save decodes them. Built-in chains become base chains with the priority
iptables-nft gives them, so iptables rules and native nft tables order correctly.
"""

from __future__ import annotations

import itertools
import re
import shlex
import socket
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._export import Omission, OmissionPolicy, Rendering, omission_of_chain
from portkit.firewall._model import (
    IPPROTO_NAMES,
    PORT_PROTOS,
    RPF_FLAGS,
    Chain,
    ChainType,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    NatTarget,
    Reject,
    RejectType,
    Ruleset,
    Table,
    address_interval,
    render_address_interval,
)
from portkit.model.endpoints import IPAddress
from portkit.model.intervals import Interval, intersect_intervals, merge_intervals, subtract_intervals
from portkit.model.protocols import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPV4, IPV6

_BUILTIN: dict[str, dict[str, tuple[Hook, int]]] = {
    "filter": {"INPUT": (Hook.INPUT, 0), "FORWARD": (Hook.FORWARD, 0), "OUTPUT": (Hook.OUTPUT, 0)},
    "nat": {
        "PREROUTING": (Hook.PREROUTING, -100),
        "INPUT": (Hook.INPUT, 100),
        "OUTPUT": (Hook.OUTPUT, -100),
        "POSTROUTING": (Hook.POSTROUTING, 100),
    },
    "mangle": {
        "PREROUTING": (Hook.PREROUTING, -150),
        "INPUT": (Hook.INPUT, -150),
        "FORWARD": (Hook.FORWARD, -150),
        "OUTPUT": (Hook.OUTPUT, -150),
        "POSTROUTING": (Hook.POSTROUTING, -150),
    },
    "raw": {"PREROUTING": (Hook.PREROUTING, -300), "OUTPUT": (Hook.OUTPUT, -300)},
    "security": {"INPUT": (Hook.INPUT, 50), "FORWARD": (Hook.FORWARD, 50), "OUTPUT": (Hook.OUTPUT, 50)},
}
_NAT_ACTIONS = frozenset(
    {FilterAction.DNAT, FilterAction.SNAT, FilterAction.MASQUERADE, FilterAction.REDIRECT}
)
# iptables-nft (the iptables of current distributions) registers the security table's chains at
# priority 150, legacy iptables at 50: a live read of an iptables-nft host shows 150.
_IPTABLES_NFT_PRIORITY = {("security", hook): 150 for hook in (Hook.INPUT, Hook.FORWARD, Hook.OUTPUT)}
_REJECT_IN: dict[str, tuple[RejectType, str]] = {
    "tcp-reset": (RejectType.TCP_RESET, ""),
    "icmp-net-unreachable": (RejectType.ICMP, "net-unreachable"),
    "icmp-host-unreachable": (RejectType.ICMP, "host-unreachable"),
    "icmp-port-unreachable": (RejectType.ICMP, "port-unreachable"),
    "icmp-proto-unreachable": (RejectType.ICMP, "prot-unreachable"),
    "icmp-net-prohibited": (RejectType.ICMP, "net-prohibited"),
    "icmp-host-prohibited": (RejectType.ICMP, "host-prohibited"),
    "icmp-admin-prohibited": (RejectType.ICMP, "admin-prohibited"),
    "icmp6-no-route": (RejectType.ICMPV6, "no-route"),
    "no-route": (RejectType.ICMPV6, "no-route"),
    "icmp6-adm-prohibited": (RejectType.ICMPV6, "admin-prohibited"),
    "adm-prohibited": (RejectType.ICMPV6, "admin-prohibited"),
    "icmp6-addr-unreachable": (RejectType.ICMPV6, "addr-unreachable"),
    "addr-unreach": (RejectType.ICMPV6, "addr-unreachable"),
    "icmp6-port-unreachable": (RejectType.ICMPV6, "port-unreachable"),
    "port-unreach": (RejectType.ICMPV6, "port-unreachable"),
}
_STATES = ("INVALID", "NEW", "ESTABLISHED", "RELATED", "UNTRACKED")
# conntrack's virtual states: the connection's NAT status bits (`ct status snat/dnat`).
_NAT_STATES = {"SNAT": "snat", "DNAT": "dnat"}
# --ctstatus names and the nft status bits they test (NONE tests no bit at all).
_CT_STATUS = {
    "NONE": "",
    "EXPECTED": "expected",
    "SEEN_REPLY": "seen-reply",
    "ASSURED": "assured",
    "CONFIRMED": "confirmed",
}

# iptables' own protocol names, tried after the system's protocol database
# (libxtables' xtables_chain_protos; newer releases added the last three).
_XT_PROTOS = {
    "tcp": 6,
    "sctp": 132,
    "udp": 17,
    "udplite": 136,
    "icmp": 1,
    "icmpv6": 58,
    "ipv6-icmp": 58,
    "esp": 50,
    "ah": 51,
    "ipv6-mh": 135,
    "mh": 135,
    "mobility-header": 135,
    "dccp": 33,
    "ipcomp": 108,
    "all": 0,
}
# A number as libxtables' xtables_strtoui reads it (strtoumax, base 0): decimal, 0x hex, 0 octal.
_C_NUMBER = re.compile(r"[ \t\n\v\f\r]*\+?(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)", re.ASCII)


def _c_uint(text: str, limit: int) -> int | None:
    m = _C_NUMBER.fullmatch(text)
    if m is None:
        return None
    value = int(m.group(1), 0) if not re.fullmatch(r"0[0-7]+", m.group(1)) else int(m.group(1), 8)
    return value if value <= limit else None


def parse_ip_protocol(text: str, where: str) -> int:
    """`-p` as iptables reads it: lower-cased, then a number 0-255, `all`, a name from the
    system's protocol database (getprotobyname, /etc/protocols) or one of iptables' own."""
    name = text.lower()
    num = _c_uint(name, 255)
    if num is not None:
        return num
    if name == "all":
        return 0
    try:
        return socket.getprotobyname(name)
    except (OSError, ValueError):
        pass
    if name in _XT_PROTOS:
        return _XT_PROTOS[name]
    raise UsageError(
        f"invalid protocol {text[:60]!r} at {where}: iptables accepts a number 0-255, 'all' "
        "or a protocol name from /etc/protocols"
    )


# libxtables' ICMP names (xtables' libxt_icmp.h): name, type, lowest and highest code.
# A name may be abbreviated to any unambiguous prefix, case-insensitively.
_ICMP_NAMES: tuple[tuple[str, int, int, int], ...] = (
    ("any", 0xFF, 0, 0xFF),
    ("echo-reply", 0, 0, 0xFF),
    ("pong", 0, 0, 0xFF),
    ("destination-unreachable", 3, 0, 0xFF),
    ("network-unreachable", 3, 0, 0),
    ("host-unreachable", 3, 1, 1),
    ("protocol-unreachable", 3, 2, 2),
    ("port-unreachable", 3, 3, 3),
    ("fragmentation-needed", 3, 4, 4),
    ("source-route-failed", 3, 5, 5),
    ("network-unknown", 3, 6, 6),
    ("host-unknown", 3, 7, 7),
    ("network-prohibited", 3, 9, 9),
    ("host-prohibited", 3, 10, 10),
    ("tos-network-unreachable", 3, 11, 11),
    ("tos-host-unreachable", 3, 12, 12),
    ("communication-prohibited", 3, 13, 13),
    ("host-precedence-violation", 3, 14, 14),
    ("precedence-cutoff", 3, 15, 15),
    ("source-quench", 4, 0, 0xFF),
    ("redirect", 5, 0, 0xFF),
    ("network-redirect", 5, 0, 0),
    ("host-redirect", 5, 1, 1),
    ("tos-network-redirect", 5, 2, 2),
    ("tos-host-redirect", 5, 3, 3),
    ("echo-request", 8, 0, 0xFF),
    ("ping", 8, 0, 0xFF),
    ("router-advertisement", 9, 0, 0xFF),
    ("router-solicitation", 10, 0, 0xFF),
    ("time-exceeded", 11, 0, 0xFF),
    ("ttl-exceeded", 11, 0, 0xFF),
    ("ttl-zero-during-transit", 11, 0, 0),
    ("ttl-zero-during-reassembly", 11, 1, 1),
    ("parameter-problem", 12, 0, 0xFF),
    ("ip-header-bad", 12, 0, 0),
    ("required-option-missing", 12, 1, 1),
    ("timestamp-request", 13, 0, 0xFF),
    ("timestamp-reply", 14, 0, 0xFF),
    ("address-mask-request", 17, 0, 0xFF),
    ("address-mask-reply", 18, 0, 0xFF),
)
_ICMPV6_NAMES: tuple[tuple[str, int, int, int], ...] = (
    ("destination-unreachable", 1, 0, 0xFF),
    ("no-route", 1, 0, 0),
    ("communication-prohibited", 1, 1, 1),
    ("beyond-scope", 1, 2, 2),
    ("address-unreachable", 1, 3, 3),
    ("port-unreachable", 1, 4, 4),
    ("failed-policy", 1, 5, 5),
    ("reject-route", 1, 6, 6),
    ("packet-too-big", 2, 0, 0xFF),
    ("time-exceeded", 3, 0, 0xFF),
    ("ttl-exceeded", 3, 0, 0xFF),
    ("ttl-zero-during-transit", 3, 0, 0),
    ("ttl-zero-during-reassembly", 3, 1, 1),
    ("parameter-problem", 4, 0, 0xFF),
    ("bad-header", 4, 0, 0),
    ("unknown-header-type", 4, 1, 1),
    ("unknown-option", 4, 2, 2),
    ("echo-request", 128, 0, 0xFF),
    ("ping", 128, 0, 0xFF),
    ("echo-reply", 129, 0, 0xFF),
    ("pong", 129, 0, 0xFF),
    ("mld-listener-query", 130, 0, 0xFF),
    ("mld-listener-report", 131, 0, 0xFF),
    ("mld-listener-done", 132, 0, 0xFF),
    ("mld-listener-reduction", 132, 0, 0xFF),
    ("router-solicitation", 133, 0, 0xFF),
    ("router-advertisement", 134, 0, 0xFF),
    ("neighbour-solicitation", 135, 0, 0xFF),
    ("neighbor-solicitation", 135, 0, 0xFF),
    ("neighbour-advertisement", 136, 0, 0xFF),
    ("neighbor-advertisement", 136, 0, 0xFF),
    ("redirect", 137, 0, 0xFF),
)


def parse_icmp_type(text: str, version: int, where: str) -> tuple[int, int, int]:
    """`--icmp-type` / `--icmpv6-type` as iptables reads it: (type, lowest code, highest
    code); type 0xFF in IPv4 is `any`."""
    table = _ICMP_NAMES if version == IPV4 else _ICMPV6_NAMES
    what = "ICMP" if version == IPV4 else "ICMPv6"
    low = text.lower()
    hits = [e for e in table if e[0].startswith(low)]
    if len({e[0] for e in hits}) > 1 and not any(e[0] == low for e in hits):
        raise UsageError(f"invalid {what} type {text[:60]!r} at {where}: ambiguous abbreviation")
    if hits:
        exact = [e for e in hits if e[0] == low] or hits
        return exact[0][1], exact[0][2], exact[0][3]
    typ, slash, code = text.partition("/")
    t = _c_uint(typ, 255)
    lo_code, _, hi_code = code.partition(":")
    lo = _c_uint(lo_code, 255) if slash else 0
    hi = (_c_uint(hi_code, 255) if hi_code else lo) if slash else 255
    if t is None or lo is None or hi is None:
        raise UsageError(
            f"invalid {what} type {text[:60]!r} at {where}: expected a name like echo-request, "
            "a number 0-255 or TYPE/CODE"
        )
    return t, lo, hi


@dataclass(frozen=True)
class AddressTypes:
    """The routes of the host's `local` routing table, which the kernel's `addrtype` match
    reads (`ip route show table local`): per IP version, (prefix interval, route type) pairs
    such as (127.0.0.0/8, "local") and (192.0.2.255/32, "broadcast"). `whole` is False when
    only the local addresses are known (`from_addresses`): then only LOCAL is decided."""

    routes: tuple[tuple[int, Interval, str], ...]
    whole: bool = True

    @classmethod
    def from_addresses(cls, addresses: Collection[IPAddress]) -> AddressTypes:
        """The local routes a host with these addresses (and loopback up) has."""
        routes = [(4, address_interval("127.0.0.0/8")[1], "local"), (6, address_interval("::1")[1], "local")]
        routes += [(a.version, (int(a), int(a)), "local") for a in addresses]
        return cls(tuple(routes), whole=False)

    def decides(self, version: int, types: frozenset[str]) -> bool:
        """Whether an addrtype match on `types` (upper case) can be decided from these routes."""
        if types == {"LOCAL"}:
            return True
        return version == IPV4 and self.whole

    def addresses(self, version: int, wanted: frozenset[str]) -> tuple[Interval, ...]:
        """The addresses whose type (longest-prefix match in the local table; an IPv4
        address not in it is `unicast`) is one of `wanted`."""
        size = 32 if version == IPV4 else 128
        top = (1 << size) - 1
        # Paint shorter prefixes first, so longer ones (more specific) win.
        painted: list[tuple[int, int, str]] = []
        if version == IPV4:
            painted = [(0, top, "unicast")]
        routes = sorted(
            (r for r in self.routes if r[0] == version), key=lambda r: r[1][1] - r[1][0], reverse=True
        )
        fixed = []
        if version == IPV4:
            fixed = [
                ((0, 0x00FFFFFF), "broadcast"),
                ((0xE0000000, 0xEFFFFFFF), "multicast"),
                ((top, top), "broadcast"),
            ]
        for (lo, hi), kind in [*((iv, kind) for _, iv, kind in routes), *fixed]:
            out: list[tuple[int, int, str]] = []
            for a, b, k in painted:
                if b < lo or a > hi:
                    out.append((a, b, k))
                    continue
                if a < lo:
                    out.append((a, lo - 1, k))
                if b > hi:
                    out.append((hi + 1, b, k))
            out.append((lo, hi, kind))
            painted = sorted(out)
        return merge_intervals([(a, b) for a, b, k in painted if k in wanted])


# addrtype's type names (iptables spells them in capitals).
_ADDRTYPES = (
    "UNSPEC",
    "UNICAST",
    "LOCAL",
    "BROADCAST",
    "ANYCAST",
    "MULTICAST",
    "BLACKHOLE",
    "UNREACHABLE",
    "PROHIBIT",
    "THROW",
    "NAT",
    "XRESOLVE",
)
# ip6t_ipv6header's header names and bits (a plain packet's headers are just `proto`).
_V6HEADERS = {
    "hop": 1,
    "hop-by-hop": 1,
    "0": 1,
    "dst": 2,
    "ipv6-opts": 2,
    "60": 2,
    "route": 4,
    "ipv6-route": 4,
    "43": 4,
    "frag": 8,
    "ipv6-frag": 8,
    "44": 8,
    "auth": 16,
    "ah": 16,
    "51": 16,
    "esp": 32,
    "50": 32,
    "none": 64,
    "ipv6-nonxt": 64,
    "59": 64,
    "prot": 128,
    "proto": 128,
    "protocol": 128,
    "255": 128,
}
# Options of the transport matches iptables loads implicitly with `-p`: they may follow
# any other module's options in a rule.
_PROTO_OPTIONS = frozenset(
    {
        "--sport",
        "--source-port",
        "--dport",
        "--destination-port",
        "--tcp-flags",
        "--syn",
        "--tcp-option",
        "--icmp-type",
        "--icmpv6-type",
    }
)
# Targets that end the chain with a verdict that depends on what the model does not know
# (TPROXY: accept if a socket takes the packet, else drop; SYNPROXY: answers or drops).
_UNKNOWN_VERDICT_TARGETS = frozenset({"TPROXY", "SYNPROXY"})
# Targets that change the packet or its connection, or only report it, and let it go on to the
# next rule (the kernel's XT_CONTINUE). Any other target portkit does not know may end the chain
# (xtables-addons' TARPIT drops, CLUSTERIP drops what another node answers): undecided.
_CONTINUE_TARGETS = frozenset(
    {
        "MARK", "CONNMARK", "CT", "NOTRACK", "TCPMSS", "TCPOPTSTRIP", "TOS", "DSCP", "TTL", "HL",
        "ECN", "CLASSIFY", "SECMARK", "CONNSECMARK", "NFLOG", "ULOG", "AUDIT", "TRACE", "CHECKSUM",
        "IDLETIMER", "LED", "HMARK", "RATEEST", "SET", "TEE", "SNPT", "DNPT",
    }
)  # fmt: skip
# Options of the targets portkit reads (REJECT, NAT, LOG).
_TARGET_OPTIONS = frozenset(
    {
        "--reject-with",
        "--to-destination",
        "--to-source",
        "--to-ports",
        "--to",
        "--log-prefix",
        "--log-level",
        "--log-tcp-sequence",
        "--log-tcp-options",
        "--log-ip-options",
        "--log-uid",
        "--log-macdecode",
        "--random",
        "--random-fully",
        "--persistent",
    }
)
# Matches modelled option by option; any other module is read whole and classified.
_MODELLED = frozenset(
    {
        "tcp",
        "udp",
        "udplite",
        "sctp",
        "dccp",
        "multiport",
        "conntrack",
        "state",
        "comment",
        "icmp",
        "icmp6",
        "iprange",
    }
)
_MODULE_PROTO: dict[str, tuple[int, ...]] = {
    "tcp": (6,),
    "udp": (17,),
    "udplite": (136,),
    "sctp": (132,),
    "dccp": (33,),
}
_PORT_OPTIONS = {
    "--sport": Field.SPORT,
    "--source-port": Field.SPORT,
    "--dport": Field.DPORT,
    "--destination-port": Field.DPORT,
    "--sports": Field.SPORT,
    "--source-ports": Field.SPORT,
    "--dports": Field.DPORT,
    "--destination-ports": Field.DPORT,
}
_TCP_FLAG_NAMES = {
    "FIN": 0x01,
    "SYN": 0x02,
    "RST": 0x04,
    "PSH": 0x08,
    "ACK": 0x10,
    "URG": 0x20,
    "ALL": 0x3F,
    "NONE": 0,
}


def _tcp_flag_words(bits: int) -> str:
    return ",".join(n for n, b in _TCP_FLAG_NAMES.items() if n not in ("ALL", "NONE") and bits & b) or "NONE"


def _tcp_flags_args(m: Match) -> list[str]:
    """`--tcp-flags MASK COMP` (holds when flags & MASK == COMP) for a `tcp flags` match: an
    exact comparison as is, nft's any-of test (`tcp flags syn`) as `! --tcp-flags MASK NONE`.
    iptables has no names for the ECE and CWR bits."""
    mask, value = m.ranges[0]
    if (mask | value) & ~_TCP_FLAG_NAMES["ALL"]:
        raise _Unrenderable(f"match {m}: iptables names no ECE or CWR flag")
    if m.exact:
        negate, comp = m.negate, value
    else:
        negate, comp = not m.negate, 0  # any of the bits set: not (none of them set)
    return [*(["!"] if negate else []), "--tcp-flags", _tcp_flag_words(mask), _tcp_flag_words(comp)]


def _port(text: str, proto: tuple[int, ...], where: str) -> int:
    if text.isascii() and text.isdigit():
        value = int(text)
    else:
        name = IPPROTO_NAMES.get(proto[0], "tcp") if proto else "tcp"
        try:
            value = socket.getservbyname(text, name)
        except (OSError, ValueError):
            raise UsageError(
                f"invalid port {text[:60]!r} at {where}: expected a number 0-65535 or a service name"
            ) from None
    if value > 65535:
        raise UsageError(f"invalid port {text[:60]!r} at {where}: ports are 0-65535")
    return value


def _ports(text: str, proto: tuple[int, ...] = (), where: str = "") -> tuple[Interval, ...]:
    out: list[Interval] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        a = _port(lo, proto, where) if lo else 0
        b = (_port(hi, proto, where) if hi else 65535) if sep else a
        out.append((min(a, b), max(a, b)))
    return merge_intervals(out)


def _addresses(text: str, version: int) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for part in text.split(","):
        ver, iv = address_interval(part)
        if ver != version:
            raise UsageError(f"invalid address {part!r} in an IPv{version} ruleset")
        out.append(iv)
    return merge_intervals(out)


def _range(text: str, version: int) -> tuple[Interval, ...]:
    """`--src-range 10.0.0.1-10.0.0.9` (one address is a range of one)."""
    lo, _, hi = text.partition("-")
    v1, a = address_interval(lo)
    v2, b = address_interval(hi or lo)
    if v1 != version or v2 != version:
        raise UsageError(f"invalid address range {text[:60]!r} in an IPv{version} ruleset")
    return merge_intervals([(a[0], b[1])])


@dataclass
class _Module:
    """A match module read whole: its name and options as (negated, option, values)."""

    name: str
    options: list[tuple[bool, str, list[str]]] = field(default_factory=list)

    @property
    def text(self) -> str:
        out = ["-m", self.name]
        for neg, opt, values in self.options:
            out += [*(["!"] if neg else []), opt, *values]
        return " ".join(shlex.quote(x) if x != "!" else x for x in out)

    def get(self, option: str) -> tuple[bool, list[str]] | None:
        for neg, opt, values in self.options:
            if opt == option:
                return neg, values
        return None


class _RuleParser:
    """Parse the arguments of one `-A CHAIN ...` line."""

    def __init__(
        self,
        args: list[str],
        version: int,
        where: str,
        notes: list[str],
        chains: set[str],
        addrtypes: AddressTypes | None = None,
    ) -> None:
        self.args = args
        self.chains = chains
        self.i = 0
        self.version = version
        self.where = where
        self.notes = notes
        self.addrtypes = addrtypes
        self.matches: list[Match] = []
        self.proto: tuple[int, ...] = ()
        self.fields: dict[str, Any] = {"action": FilterAction.CONTINUE}
        self.module = ""
        self.whole: _Module | None = None
        self.target_seen = False
        self.in_target = False

    def take_name(self, option: str) -> str:
        """The module or target name after -m, -j or -g."""
        name = self.take() if self.i < len(self.args) else ""
        if not name or name.startswith("-") or name == "!":
            raise UsageError(f"invalid iptables rule at {self.where}: {option} lacks its name")
        return name

    def take(self) -> str:
        if self.i >= len(self.args):
            raise UsageError(f"invalid iptables rule at {self.where}: an option lacks its value")
        v = self.args[self.i]
        self.i += 1
        return v

    def values(self) -> list[str]:
        """The values of an option read greedily: every argument up to the next option."""
        out = []
        while self.i < len(self.args) and not self.args[self.i].startswith("-") and self.args[self.i] != "!":
            out.append(self.take())
        return out

    def parse(self) -> list[FilterRule]:
        """The rule, or two for a target that ends the chain with a verdict portkit cannot
        know (TPROXY, SYNPROXY): an undecided accept, then a drop."""
        negate = False
        while self.i < len(self.args):
            a = self.take()
            if a == "!":
                if negate or self.i >= len(self.args):
                    raise UsageError(
                        f"invalid iptables rule at {self.where}: a '!' without one option after it"
                    )
                negate = True
                continue
            if negate and a in ("-m", "--match", "-j", "--jump", "-g", "--goto"):
                raise UsageError(f"invalid iptables rule at {self.where}: '!' cannot negate {a}")
            self.option(a, negate)
            negate = False
        self.flush_module()
        unknown = self.fields.pop("unknown_verdict", "")
        stranger = self.fields.pop("unknown_target", "")
        if stranger:
            # May accept, may drop, may go on: an undecided accept, an undecided drop, and
            # what follows the rule otherwise.
            self.notes.append(
                f"{self.where}: target {stranger} is not one portkit knows: it may accept, drop or "
                "let the packet go on (all are followed)"
            )
            verdicts = [
                FilterRule(
                    matches=(*self.matches, Match(Field.OPAQUE, text=f"-j {stranger} {verb} the packet")),
                    **{**self.fields, "action": action},
                )
                for verb, action in (("accepts", FilterAction.ACCEPT), ("drops", FilterAction.DROP))
            ]
            return verdicts
        if not unknown:
            return [FilterRule(matches=tuple(self.matches), **self.fields)]
        text = f"-j {unknown} accepts the packet (its verdict depends on sockets and state)"
        self.notes.append(f"{self.where}: target {unknown} ends the chain: undecided between accept and drop")
        verdict = Match(Field.OPAQUE, text=text)
        return [
            FilterRule(matches=(*self.matches, verdict), **{**self.fields, "action": FilterAction.ACCEPT}),
            FilterRule(matches=tuple(self.matches), **{**self.fields, "action": FilterAction.DROP}),
        ]

    # --- matches read whole ---

    def flush_module(self) -> None:
        mod, self.whole = self.whole, None
        if mod is None:
            return
        for m in _classify(mod, self.version, self.proto, self.addrtypes, self.where):
            self.matches.append(m)
            if m.field is Field.OPAQUE:
                if m.plain is not None:
                    self.notes.append(
                        f"{self.where}: match '{m.text}' is {'true' if m.plain else 'false'} for every "
                        f"packet portkit models ({_PLAIN_WHY.get(mod.name, 'see the match')})"
                    )
                else:
                    holds, why = assume_opaque(mod)
                    self.notes.append(
                        f"{self.where}: match '{m.text}' is not modelled: undecided (both outcomes are "
                        f"followed; the first branch assumes it {'holds' if holds else 'does not'}: {why})"
                    )

    def unknown(self, text: str, *, protos: tuple[int, ...] = ()) -> None:
        """An option portkit does not model: undecided, never dropped."""
        holds, why = assume_opaque(_Module(text.split()[1] if text.startswith("-m ") else ""))
        self.matches.append(Match(Field.OPAQUE, text=text, negate=not holds, protos=protos))
        self.notes.append(f"{self.where}: match '{text}' is not modelled: undecided ({why})")

    # --- options ---

    def option(self, a: str, negate: bool) -> None:
        if a in ("-p", "--protocol"):
            raw = self.take()
            num = parse_ip_protocol(raw, self.where)
            if num == 0:
                if negate:
                    raise UsageError(
                        f"invalid iptables rule at {self.where}: '! -p {raw[:20]}' would never match"
                    )
                return
            self.proto = (num,)
            self.matches.append(Match(Field.L4PROTO, ((num, num),), negate=negate))
        elif a in ("-s", "--source", "-d", "--destination"):
            fld = Field.SADDR if a in ("-s", "--source") else Field.DADDR
            self.matches.append(
                Match(fld, _addresses(self.take(), self.version), negate=negate, family=self.version)
            )
        elif a in ("-i", "--in-interface", "-o", "--out-interface"):
            fld = Field.IIF if a in ("-i", "--in-interface") else Field.OIF
            name = self.take()
            self.matches.append(
                Match(fld, names=(name[:-1] + "*" if name.endswith("+") else name,), negate=negate)
            )
        elif a in ("-f", "--fragment"):
            # Later fragments of a datagram; a modelled packet is a whole one.
            text = f"{'! ' if negate else ''}-f"
            self.matches.append(Match(Field.OPAQUE, text=text, negate=not negate, family=4, plain=negate))
        elif a in ("-m", "--match"):
            self.flush_module()
            self.in_target = False
            self.module = self.take_name(a)
            if self.module not in _MODELLED:
                self.whole = _Module(self.module)
        elif a in ("-j", "--jump", "-g", "--goto"):
            self.flush_module()
            self.target_seen = self.in_target = True
            self.target(self.take_name(a), goto=a in ("-g", "--goto"))
        elif a in ("-c", "--set-counters"):
            self.take()
            self.take()
        elif self.target_seen and a in _TARGET_OPTIONS:
            self.flush_module()
            self.target_option(a)
        elif a in _PROTO_OPTIONS or (self.whole is None and self.module in _MODELLED and not self.in_target):
            self.modelled_option(a, negate)
        elif self.in_target:
            # iptables takes options in any order (ufw writes `-j LOG --log-prefix P -m limit
            # ...`): the others after -j are the target's until the next -m.
            self.target_option(a)
        elif self.whole is not None:
            self.whole.options.append((negate, a, self.values()))
        else:
            self.unknown(" ".join([*(["!"] if negate else []), a, *self.values()]))

    def modelled_option(self, a: str, negate: bool) -> None:
        # A port match reads its protocol's header: `-m tcp` is valid for protocol 6 only.
        protos = self.proto or _MODULE_PROTO.get(self.module, ())
        if a in _PORT_OPTIONS:
            self.matches.append(
                Match(_PORT_OPTIONS[a], _ports(self.take(), protos, self.where), negate=negate, protos=protos)
            )
        elif a == "--ports":
            # multiport: the source or the destination port is one of them.
            ports = _ports(self.take(), protos, self.where)
            anyport: Interval = (0, 65535)
            parts = (Match(Field.SPORT, protos=protos), Match(Field.DPORT, protos=protos))
            elements = tuple((r, anyport) for r in ports) + tuple((anyport, r) for r in ports)
            self.matches.append(
                Match(Field.CONCAT, negate=negate, parts=parts, elements=elements, protos=protos)
            )
        elif a in ("--tcp-flags", "--syn"):
            if a == "--syn":
                mask, comp = 0x17, 0x02
            else:
                mask, comp = self.flags(self.take()), self.flags(self.take())
            self.matches.append(
                Match(Field.TCP_FLAGS, ((mask, comp),), negate=negate, protos=(6,), exact=True)
            )
        elif a in ("--icmp-type", "--icmpv6-type"):
            self.icmp(self.take(), negate)
        elif a in ("--ctstate", "--state"):
            self.states(a, self.take(), negate)
        elif a == "--ctstatus":
            self.ctstatus(self.take(), negate)
        elif a in ("--src-range", "--dst-range"):
            fld = Field.SADDR if a == "--src-range" else Field.DADDR
            self.matches.append(
                Match(fld, _range(self.take(), self.version), negate=negate, family=self.version)
            )
        elif a == "--comment":
            self.fields["comment"] = self.take()
        else:
            # Another option of a modelled module (`--tcp-option`, `--chunk-types`,
            # `--ctorigdst`...): undecided, with the module's protocol dependency.
            module = self.module or "tcp"
            text = " ".join(
                ["-m", module, *(["!"] if negate else []), a, *(shlex.quote(v) for v in self.values())]
            )
            protos = self.proto if module in ("tcp", "udp", "udplite", "sctp", "dccp", "multiport") else ()
            if a == "--tcp-option":
                protos = (6,)
            self.unknown(text, protos=protos)

    def flags(self, text: str) -> int:
        bits = 0
        for name in text.upper().split(","):
            if name not in _TCP_FLAG_NAMES:
                raise UsageError(
                    f"invalid TCP flag {name[:20]!r} at {self.where}: "
                    "expected FIN, SYN, RST, PSH, ACK, URG, ALL or NONE"
                )
            bits |= _TCP_FLAG_NAMES[name]
        return bits

    def icmp(self, raw: str, negate: bool) -> None:
        typ, lo, hi = parse_icmp_type(raw, self.version, self.where)
        fam = self.version
        proto = (IPPROTO_ICMPV6,) if fam == IPV6 else (IPPROTO_ICMP,)
        if fam == IPV4 and typ == 0xFF:  # any
            self.matches.append(Match(Field.ICMP_TYPE, ((0, 255),), negate=negate, family=fam, protos=proto))
            return
        if (lo, hi) == (0, 255):
            self.matches.append(
                Match(Field.ICMP_TYPE, ((typ, typ),), negate=negate, family=fam, protos=proto)
            )
            return
        if not negate:
            self.matches.append(Match(Field.ICMP_TYPE, ((typ, typ),), family=fam, protos=proto))
            self.matches.append(Match(Field.ICMP_CODE, ((lo, hi),), family=fam, protos=proto))
            return
        # `! --icmp-type 3/1` negates the pair: any other type, or type 3 with another code.
        parts = (
            Match(Field.ICMP_TYPE, family=fam, protos=proto),
            Match(Field.ICMP_CODE, family=fam, protos=proto),
        )
        self.matches.append(
            Match(
                Field.CONCAT,
                negate=True,
                parts=parts,
                elements=(((typ, typ), (lo, hi)),),
                family=fam,
                protos=proto,
            )
        )

    def states(self, option: str, raw: str, negate: bool) -> None:
        names = [s.upper() for s in raw.split(",")]
        allowed = _STATES + (tuple(_NAT_STATES) if option == "--ctstate" else ())
        bad = [n for n in names if n not in allowed]
        if bad:
            raise UsageError(
                f"invalid conntrack state {bad[0][:30]!r} at {self.where}: expected {', '.join(allowed)}"
            )
        plain = [n.lower() for n in names if n in _STATES]
        nat = [_NAT_STATES[n] for n in names if n in _NAT_STATES]
        if plain and nat:
            # Either a state or a NAT bit: one match cannot say that; undecided.
            self.unknown(f"-m conntrack {'! ' if negate else ''}--ctstate {raw}")
        elif nat:
            self.matches.append(Match(Field.CT_STATUS, names=tuple(nat), negate=negate))
        else:
            self.matches.append(Match(Field.CT_STATE, names=tuple(plain), negate=negate))

    def ctstatus(self, raw: str, negate: bool) -> None:
        names = [s.upper() for s in raw.split(",")]
        bad = [n for n in names if n not in _CT_STATUS]
        if bad:
            raise UsageError(
                f"invalid conntrack status {bad[0][:30]!r} at {self.where}: expected {', '.join(_CT_STATUS)}"
            )
        bits = tuple(_CT_STATUS[n] for n in names if _CT_STATUS[n])
        if not bits:  # NONE alone: an empty mask, which no connection has any bit of
            text = f"-m conntrack {'! ' if negate else ''}--ctstatus {raw}"
            self.matches.append(Match(Field.OPAQUE, text=text, negate=not negate, plain=negate))
            return
        self.matches.append(Match(Field.CT_STATUS, names=bits, negate=negate))

    # --- target ---

    def target_option(self, a: str) -> None:
        v6 = self.version == IPV6
        if a == "--reject-with":
            kind = self.take()
            rt, code = _REJECT_IN.get(kind, (RejectType.ICMPV6 if v6 else RejectType.ICMP, kind))
            self.fields["reject"] = Reject(rt, code)
        elif a in ("--to-destination", "--to-ports", "--to-source", "--to"):
            self.fields["nat"] = _nat_target(self.take(), a == "--to-ports")
        elif a == "--log-prefix":
            self.fields["log"] = self.take().strip()
        else:
            # An option of a target portkit does not model (`--set-mark`): kept as text.
            value = " ".join(self.values())
            self.fields["opaque"] = (*self.fields.get("opaque", ()), f"{a} {value}".strip())

    def target(self, name: str, *, goto: bool) -> None:
        simple = {
            "ACCEPT": FilterAction.ACCEPT,
            "DROP": FilterAction.DROP,
            "RETURN": FilterAction.RETURN,
            "REJECT": FilterAction.REJECT,
            "DNAT": FilterAction.DNAT,
            "SNAT": FilterAction.SNAT,
            "MASQUERADE": FilterAction.MASQUERADE,
            "REDIRECT": FilterAction.REDIRECT,
            "QUEUE": FilterAction.QUEUE,
            "NFQUEUE": FilterAction.QUEUE,
        }
        if goto and (name in simple or name in ("LOG", *_UNKNOWN_VERDICT_TARGETS)):
            # iptables-restore: "Chain 'ACCEPT' does not exist".
            raise UsageError(f"invalid iptables rule at {self.where}: -g needs a chain, {name!r} is a target")
        if name in simple:
            self.fields["action"] = simple[name]
            if name == "REJECT":
                self.fields.setdefault(
                    "reject",
                    Reject(
                        RejectType.ICMPV6 if self.version == IPV6 else RejectType.ICMP, "port-unreachable"
                    ),
                )
        elif name == "LOG":
            self.fields["log"] = self.fields.get("log", "")
        elif name in _UNKNOWN_VERDICT_TARGETS and name not in self.chains:
            self.fields["unknown_verdict"] = name
            self.fields["opaque"] = (*self.fields.get("opaque", ()), f"-j {name}")
        elif name.isupper() and name not in self.chains:
            # Targets like MARK, CT, TCPMSS, NOTRACK change the packet, not the verdict.
            self.fields["opaque"] = (*self.fields.get("opaque", ()), f"-j {name}")
            if name not in _CONTINUE_TARGETS:
                self.fields["unknown_target"] = name
        else:
            if name not in self.chains:
                # iptables-restore: "Chain 'nosuch' does not exist" (targets are upper case).
                raise UsageError(
                    f"invalid iptables rule at {self.where}: no chain {name[:40]!r} is declared, "
                    "and no target has that name"
                )
            self.fields["action"] = FilterAction.GOTO if goto else FilterAction.JUMP
            self.fields["target"] = name


# Why a module's value is known for every modelled packet.
_PLAIN_WHY = {
    "frag": "it is not a fragment: no fragment header",
    "hbh": "no hop-by-hop options header",
    "dst": "no destination options header",
    "rt": "no routing header",
    "ah": "no authentication header",
    "ipv6header": "its only header after IPv6 is the transport header",
    "policy": "it did not arrive through IPsec",
    "recent": "--set records the source and always matches",
}


# Matches on the traffic's rate or count, which `--limits` states. Not `recent`: a source's
# history is not stated by a rate (a scan of a dozen ports trips ufw's `limit`, six hits).
_RATE_MODULES = frozenset({"limit", "hashlimit", "connlimit"})


def _opaque(mod: _Module, version: int, **kw: Any) -> Match:
    holds, _ = assume_opaque(mod)
    return Match(Field.OPAQUE, text=mod.text, negate=not holds, rate=mod.name in _RATE_MODULES, **kw)


def _classify(
    mod: _Module, version: int, proto: tuple[int, ...], addrtypes: AddressTypes | None, where: str
) -> list[Match]:
    """The matches a module read whole stands for: exact where the kernel's answer for a
    modelled packet is known, otherwise one undecided opaque match."""
    name = mod.name
    if name in ("frag", "hbh", "dst", "rt") or (name == "ah" and version == IPV6):
        # IPv6 extension headers: a modelled packet has none; the kernel's match needs one.
        return [_opaque(mod, version, family=IPV6 if version == IPV6 else 0, plain=False)]
    if name in ("ah", "esp", "mh"):
        # The header of protocol AH/ESP/MH itself (iptables requires `-p` to say so).
        num = {"ah": 51, "esp": 50, "mh": 135}[name]
        return [_opaque(mod, version, protos=(num,))]
    if name == "policy":
        direction = mod.get("--dir")
        pol = mod.get("--pol")
        if direction and direction[1][:1] == ["in"] and pol and pol[1][:1] in (["none"], ["ipsec"]):
            # Inbound: a modelled packet was not decapsulated from IPsec (no secpath).
            none = pol[1][0] == "none"
            return [_opaque(mod, version, plain=none)]
        return [_opaque(mod, version)]
    if name == "ipv6header":
        header = mod.get("--header")
        if header is None:
            return [_opaque(mod, version)]
        bits = 0
        for h in header[1][0].split(",") if header[1] else []:
            if h.lower() not in _V6HEADERS:
                raise UsageError(f"invalid IPv6 header name {h[:30]!r} at {where}")
            bits |= _V6HEADERS[h.lower()]
        seen = 128  # a modelled packet: the transport header right after the IPv6 header
        inverted = header[0]
        if mod.get("--soft") is not None:
            value = (seen & bits) == 0 if inverted else (seen & bits) == bits
        else:
            value = (seen != bits) if inverted else (seen == bits)
        return [_opaque(mod, version, family=6, plain=value)]
    if name == "addrtype":
        return _addrtype(mod, version, addrtypes, where)
    if name == "recent":
        got = mod.get("--set")
        if got is not None and not any(o in ("--rcheck", "--update", "--remove") for _, o, _v in mod.options):
            # --set records the source and always matches (`! --set` never does).
            return [_opaque(mod, version, plain=not got[0])]
    if name == "tcpmss":
        return [_opaque(mod, version, protos=(6,))]
    if name == "rpfilter":
        flags = {opt.removeprefix("--") for _, opt, _v in mod.options}
        if all(not neg and not values for neg, _o, values in mod.options) and flags <= {*RPF_FLAGS, "invert"}:
            names = tuple(f for f in RPF_FLAGS if f in flags)
            return [Match(Field.REVERSE_PATH, names=names, negate="invert" in flags)]
    return [_opaque(mod, version)]


def _addrtype(mod: _Module, version: int, addrtypes: AddressTypes | None, where: str) -> list[Match]:
    if not mod.options or any(o.startswith("--limit-iface") for _, o, _v in mod.options):
        return [_opaque(mod, version)]
    out: list[Match] = []
    for neg, opt, values in mod.options:
        if opt not in ("--src-type", "--dst-type") or len(values) != 1:
            return [_opaque(mod, version)]
        types = frozenset(t.upper() for t in values[0].split(","))
        bad = sorted(types - set(_ADDRTYPES))
        if bad:
            raise UsageError(
                f"invalid address type {bad[0][:30]!r} at {where}: expected one of {', '.join(_ADDRTYPES)}"
            )
        fld = Field.SADDR if opt == "--src-type" else Field.DADDR
        if types == {"MULTICAST"}:
            net = "224.0.0.0/4" if version == IPV4 else "ff00::/8"
            out.append(Match(fld, (address_interval(net)[1],), negate=neg, family=version))
        elif addrtypes is not None and addrtypes.decides(version, types):
            # IPv4: the type of the address's longest match in the local table; IPv6
            # (LOCAL only): a local or anycast route.
            kinds = frozenset(t.lower() for t in types)
            if version == IPV6:
                kinds = frozenset({"local", "anycast"})
            out.append(Match(fld, addrtypes.addresses(version, kinds), negate=neg, family=version))
        elif types == {"LOCAL"} and opt == "--dst-type":
            # Decided when the packet is evaluated, from the host's addresses if known
            # (`fib daddr type local`, as nft writes it).
            out.append(Match(Field.FIB_DADDR_TYPE, names=("local",), negate=neg))
        else:
            return [_opaque(mod, version)]
    return out


# The first branch's assumption for a match that stays undecided: (module, option, holds?, why),
# an empty option matching any; `holds` flips when the option is negated.
_ASSUMPTIONS: tuple[tuple[str, str, bool, str], ...] = (
    ("addrtype", "--dst-type LOCAL", True, "traffic for this host is addressed to a local address"),
    ("rpfilter", "--invert", False, "the reverse path has a route"),
    ("rpfilter", "", True, "the reverse path has a route"),
    ("addrtype", "", False, "an ordinary unicast packet is not broadcast, multicast or otherwise special"),
    ("limit", "", True, "below the rate limit"),
    ("hashlimit", "--hashlimit-above", False, "below the rate limit"),
    ("hashlimit", "", True, "below the rate limit"),
    ("connlimit", "--connlimit-above", False, "below the connection limit"),
    ("connlimit", "", True, "below the connection limit"),
    ("hl", "", False, "ordinary packets do not have that hop limit"),
    ("ttl", "", False, "ordinary packets do not have that TTL"),
    ("recent", "--set", True, "--set only records the source"),
    ("recent", "", False, "the source is not in the recent list"),
    ("mark", "", False, "packets are not marked"),
    ("connmark", "", False, "connections are not marked"),
    ("set", "", False, "the address is not in the ipset"),
    ("owner", "", False, "the socket is not that owner's"),
    ("physdev", "", False, "the packet was not bridged"),
    ("policy", "--pol none", True, "no IPsec policy applies"),
    ("policy", "", False, "no IPsec policy applies"),
    ("pkttype", "--pkt-type unicast", True, "an ordinary packet is unicast"),
    ("pkttype", "", False, "an ordinary packet is unicast"),
)


def assume_opaque(mod: _Module) -> tuple[bool, str]:
    """What the first branch takes an undecided match to be, and why."""
    if mod.name in ("mark", "connmark") and mod.options and mod.options[0][2]:
        # An unmarked packet (mark 0) matches `--mark VALUE/MASK` when VALUE is 0.
        neg, _opt, values = mod.options[0]
        mark = _c_uint(values[0].partition("/")[0], 0xFFFFFFFF)
        return (mark == 0) != neg, "packets and connections are not marked"
    for module, option, holds, why in _ASSUMPTIONS:
        if module != mod.name:
            continue
        if not option:
            return holds != (bool(mod.options) and mod.options[0][0]), why
        opt, _, value = option.partition(" ")
        got = mod.get(opt)
        if got is not None and (not value or (got[1] and got[1][0].upper() == value.upper())):
            return holds != got[0], why
    return True, "unknown match; the verdict may differ"


def _nat_target(text: str, ports_only: bool) -> NatTarget:
    """A NAT target's `[ADDR[-ADDR]][:PORT[-PORT]]` (or `--to-ports PORT[-PORT]`). Which of a
    range the kernel picks depends on the flow (addresses by a hash of it, ports on which are
    free), so a range is `unknown`, as the nftables importer has it: never its first value."""
    if ports_only:
        addr, port = "", text
    elif text.startswith("["):
        addr, _, port = text[1:].partition("]:")
        addr = addr.replace("]-[", "-").rstrip("]")
    elif text.count(":") == 1:
        addr, _, port = text.partition(":")
    else:
        addr, port = text, ""
    port = port.split("/")[0]  # a `/BASEPORT` offset (iptables 1.8.6+) shifts within the range
    unknown = "-" in addr or "-" in port
    return NatTarget(
        None if not addr or "-" in addr else addr,
        None if not port or "-" in port else int(port),
        unknown=unknown,
    )


# `:CHAIN POLICY [packets:bytes]`: what iptables-restore takes as POLICY (iptables 1.8.9, both
# backends loading for real). A built-in chain takes ACCEPT or DROP, case-sensitive, or `-` to
# keep the policy it has (ACCEPT in a fresh table); anything else is refused ("Bad policy name").
# A user chain has no policy and iptables-save writes `-`; the nf_tables backend loads any word
# there and ignores it, the legacy backend refuses all but `-`. No word at all, both refuse.
# `--test` of the nf_tables backend does not check policies: only a real load refuses `:INPUT FROB`.
_POLICY_WORDS = {"ACCEPT": FilterAction.ACCEPT, "DROP": FilterAction.DROP, "-": FilterAction.ACCEPT}


def _chain_policy(chain: str, word: str, builtin: bool, where: str, notes: list[str]) -> FilterAction:
    if not word:
        expected = "ACCEPT or DROP (or - to keep the current one)" if builtin else "- (user chains have none)"
        raise UsageError(f"invalid chain {chain[:40]!r} at {where}: no policy, expected {expected}")
    if not builtin:
        if word != "-":
            notes.append(
                f"{where}: policy {word[:40]!r} on user chain {chain[:40]!r} ignored, as iptables-restore "
                "(nf_tables) does; iptables-legacy-restore refuses it (expected -)"
            )
        return FilterAction.ACCEPT  # never used: a user chain's end returns to the caller
    policy = _POLICY_WORDS.get(word)
    if policy is None:
        raise UsageError(
            f"invalid policy {word[:40]!r} for chain {chain[:40]!r} at {where}: "
            "expected ACCEPT or DROP (or - to keep the current one)"
        )
    return policy


def import_iptables_save(
    text: str, *, version: int = 4, source: str = "iptables-save", addrtypes: AddressTypes | None = None
) -> Ruleset:
    """Build the model from `iptables-save` (version=4) or `ip6tables-save` (version=6) text.

    `addrtypes` (the host's local routing table) lets `-m addrtype` be decided as the kernel
    decides it; without it, types other than MULTICAST are undecided."""
    family = Family.IP if version == IPV4 else Family.IP6
    tables: list[Table] = []
    notes: list[str] = []
    table_name = ""
    chains: dict[str, dict[str, Any]] = {}
    order: list[str] = []

    def finish() -> None:
        if table_name:
            out = []
            for name in order:
                c = chains[name]
                out.append(Chain(name, tuple(c["rules"]), c["hook"], c["type"], c["prio"], c["policy"]))
            tables.append(Table(family, table_name, tuple(out)))

    lines = text.splitlines()
    # Chain names are needed before rules to tell a user chain from an unknown target.
    user_chains = {ln[1:].split()[0] for ln in lines if ln.startswith(":") and ln[1:].split()}
    user_chains |= {ln.split()[1] for ln in lines if ln.startswith("-N ") and len(ln.split()) > 1}

    def declare(name: str, word: str, where: str) -> None:
        builtin = _BUILTIN.get(table_name, {}).get(name)
        hook, prio = builtin if builtin else (None, 0)
        ctype = ChainType.NAT if table_name == "nat" else ChainType.FILTER
        policy = _chain_policy(name, word, builtin is not None, where, notes)
        chains[name] = {"rules": [], "hook": hook, "type": ctype, "prio": prio, "policy": policy}
        order.append(name)
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{lineno}"
        if line.startswith("*"):
            finish()
            table_name = line[1:].strip()
            chains, order = {}, []
        elif line == "COMMIT":
            finish()
            table_name = ""
        elif line.startswith(":"):
            parts = line[1:].split()
            if not table_name:
                raise UsageError(f"invalid iptables-save text at {where}: a chain outside a *table section")
            if not parts:
                raise UsageError(f"invalid iptables-save text at {where}: ':' without a chain name")
            declare(parts[0], parts[1] if len(parts) > 1 else "", where)
        elif line.startswith(("-N ", "-P ")):
            # iptables-restore runs these commands too (hand-written files use them).
            if not table_name:
                raise UsageError(f"invalid iptables-save text at {where}: a command outside a *table section")
            parts = line.split()
            name = parts[1]
            builtin = _BUILTIN.get(table_name, {}).get(name) is not None
            if parts[0] == "-N":
                if len(parts) != 2:
                    raise UsageError(f"invalid iptables-save text at {where}: -N takes one chain name")
                if builtin or name in chains:
                    raise UsageError(
                        f"invalid iptables-save text at {where}: chain {name[:40]!r} already exists"
                    )
                declare(name, "-", where)
            else:
                if len(parts) != 3 or not builtin:
                    raise UsageError(
                        f"invalid iptables-save text at {where}: -P sets the policy of a built-in chain "
                        f"of {table_name!r}, not {name[:40]!r}"
                    )
                if name not in chains:
                    declare(name, parts[2], where)
                else:
                    chains[name]["policy"] = _chain_policy(name, parts[2], True, where, notes)
        elif line.startswith("-A ") or line.startswith("-I "):
            if not table_name:
                raise UsageError(f"invalid iptables-save text at {where}: a rule outside a *table section")
            try:
                args = shlex.split(line)
            except ValueError as exc:
                raise UsageError(f"invalid iptables rule at {where}: {exc}") from None
            chain = args[1]
            # `-I CHAIN [N] rule` inserts at position N (1, the head, when not given).
            insert_at: int | None = None
            if args[0] == "-I":
                insert_at = 1
                if len(args) > 2 and args[2].isascii() and args[2].isdigit():
                    insert_at = int(args[2])
                    args = [*args[:2], *args[3:]]
            if chain not in chains:
                chains[chain] = {
                    "rules": [],
                    "hook": None,
                    "type": ChainType.FILTER,
                    "prio": 0,
                    "policy": FilterAction.ACCEPT,
                }
                order.append(chain)
            try:
                parsed = _RuleParser(args[2:], version, where, notes, user_chains, addrtypes).parse()
            except (ValueError, KeyError) as exc:
                if isinstance(exc, UsageError):
                    raise
                raise UsageError(f"invalid iptables rule at {where}: {exc}") from None
            placed = [replace(rule, line=lineno) for rule in parsed]
            if insert_at is None:
                chains[chain]["rules"].extend(placed)
            else:
                # Positions count kernel rules; a rule portkit splits in two is one of them.
                kernel_lines = sorted({r.line for r in chains[chain]["rules"]}, key=lambda n: n or 0)
                kernel_rules: list[list[FilterRule]] = []
                for rule in chains[chain]["rules"]:
                    if not kernel_rules or kernel_rules[-1][0].line != rule.line:
                        kernel_rules.append([rule])
                    else:
                        kernel_rules[-1].append(rule)
                if not 1 <= insert_at <= len(kernel_rules) + 1 or len(kernel_lines) != len(kernel_rules):
                    raise UsageError(
                        f"invalid iptables rule at {where}: no position {insert_at} in chain {chain[:40]!r} "
                        f"(it has {len(kernel_rules)} rules)"
                    )
                kernel_rules.insert(insert_at - 1, placed)
                chains[chain]["rules"] = [r for group in kernel_rules for r in group]
        else:
            raise UsageError(
                f"invalid iptables-save text at {where}: {line[:60]!r} "
                "(expected *table, :CHAIN POLICY, -N, -P, -A or -I CHAIN ... or COMMIT)"
            )
    finish()
    return Ruleset(_untracked(tuple(tables), notes), source, tuple(notes))


def _untracked(tables: tuple[Table, ...], notes: list[str]) -> tuple[Table, ...]:
    """A packet a raw-table notrack rule selects has conntrack state UNTRACKED, which the
    evaluator does not model: on the protocols such rules can select, conntrack matches are
    undecided. Each rule with one is split by protocol (the two halves never overlap, so the
    chain does what the one rule did): exact off those protocols, undecided on them."""
    notracks = [r for t in tables for c in t.chains for r in c.rules if r.untracks]
    if not notracks:
        return tables
    protos: set[int] | None = set()
    for r in notracks:
        named = [m for m in r.matches if m.field is Field.L4PROTO and not m.negate]
        if not named or protos is None:
            protos = None
            continue
        protos |= {p for lo, hi in named[0].ranges for p in range(lo, hi + 1)}
    where = [f"line {r.line}" for r in notracks]
    notes.append(
        f"notrack rules ({', '.join(where[:5])}) leave the packets they select untracked, which "
        "portkit does not model: conntrack state and status matches are undecided "
        + ("for every packet" if protos is None else f"for protocols {', '.join(map(str, sorted(protos)))}")
    )
    ct_fields = (Field.CT_STATE, Field.CT_STATUS)

    def split(rule: FilterRule) -> tuple[FilterRule, ...]:
        if not any(m.field in ct_fields for m in rule.matches):
            return (rule,)
        # Undecided; the first branch takes the state of a tracked packet.
        unknown = tuple(replace(m, dynamic=True) if m.field in ct_fields else m for m in rule.matches)
        if protos is None:
            return (replace(rule, matches=unknown),)
        ranges = merge_intervals([(p, p) for p in sorted(protos)])
        return (
            replace(rule, matches=(Match(Field.L4PROTO, ranges, negate=True), *rule.matches)),
            replace(rule, matches=(Match(Field.L4PROTO, ranges), *unknown)),
        )

    def chain(c: Chain) -> Chain:
        return replace(c, rules=tuple(x for r in c.rules for x in split(r)))

    return tuple(replace(t, chains=tuple(chain(c) for c in t.chains)) for t in tables)


# --- export -----------------------------------------------------------------------------------

_REJECT_OUT = {v: k for k, v in reversed(list(_REJECT_IN.items()))}
_HOOK_CHAIN = {
    Hook.PREROUTING: "PREROUTING",
    Hook.INPUT: "INPUT",
    Hook.FORWARD: "FORWARD",
    Hook.OUTPUT: "OUTPUT",
    Hook.POSTROUTING: "POSTROUTING",
}
# Tables that can hold a filtering base chain per hook, in the kernel's order; with several
# nft base chains on one hook each gets its own table, so an accept in one still lets the
# next one decide, as in nftables.
_FILTER_SLOTS = {
    Hook.PREROUTING: ("mangle",),
    Hook.INPUT: ("mangle", "filter", "security"),
    Hook.FORWARD: ("mangle", "filter", "security"),
    Hook.OUTPUT: ("mangle", "filter", "security"),
    Hook.POSTROUTING: ("mangle",),
}
# iptables refuses `-i` in built-in chains where no input interface exists, and `-o` where no
# output one is known yet. It does not look into user chains (where, as in nft, such a match
# simply never holds), so only rules of base chains are checked.
_NO_IIF = {Hook.OUTPUT, Hook.POSTROUTING}
_NO_OIF = {Hook.PREROUTING, Hook.INPUT}
# XT_EXTENSION_MAXNAMELEN is 29 with the NUL: iptables-restore refuses a 29-character chain name.
CHAIN_NAME_MAX = 28
IFNAME_MAX = 15  # IFNAMSIZ 16 with the NUL
COMMENT_MAX = 255  # XT_MAX_COMMENT_LEN 256 with the NUL
LOG_PREFIX_MAX = 29  # xt_LOG's prefix[30] with the NUL
_TARGET_NAMES = {
    "ACCEPT",
    "DROP",
    "RETURN",
    "QUEUE",
    "NFQUEUE",
    "REJECT",
    "LOG",
    "NFLOG",
    "DNAT",
    "SNAT",
    "MASQUERADE",
    "REDIRECT",
    "MARK",
    "CONNMARK",
    "CT",
    "NOTRACK",
    "TCPMSS",
}
_SAFE_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+.:/,=@%![]")


# The words iptables' conntrack --ctstatus and addrtype --dst-type take (iptables-extensions(8)).
_CT_STATUS_WORDS = frozenset({"EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SNAT", "DNAT"})
_ADDRTYPE_WORDS = frozenset(
    {"UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST"}
    | {"BLACKHOLE", "UNREACHABLE", "PROHIBIT"}
)


class _Unrenderable(Exception):
    """This rule cannot be written for iptables faithfully; the message says why."""


def quote_arg(arg: str) -> str:
    """One argument as iptables-restore tokenises it: double quotes, `\\` escapes `"` and `\\`.

    iptables-restore knows no single quotes: `'a b'` is two words, `'a` and `b'`."""
    if arg and all(ch in _SAFE_WORD for ch in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _iface(name: str) -> str:
    if name.endswith("*"):
        name = name[:-1] + "+"
    if not name or len(name) > IFNAME_MAX or any(ch in name for ch in ' \t\n"\\'):
        raise _Unrenderable(f"interface name {name!r} cannot be written for iptables")
    return name


def _single(ranges: tuple[Interval, ...]) -> int | None:
    return ranges[0][0] if len(ranges) == 1 and ranges[0][0] == ranges[0][1] else None


def _one_match_per_address(rule: FilterRule, version: int) -> FilterRule | None:
    """The rule with its matches on one address field (several: `! -d 127.0.0.0/8` beside
    the host's addresses, nft's `ip daddr != a ip daddr b`) folded into one: iptables takes
    one `-s` and one `-d` per rule. None when they leave no address at all."""
    everything: tuple[Interval, ...] = ((0, (1 << (32 if version == IPV4 else 128)) - 1),)
    for fld in (Field.SADDR, Field.DADDR):
        same = [m for m in rule.matches if m.field is fld and not m.set_name and m.family in (0, version)]
        if len(same) < 2:
            continue
        allowed = everything
        for m in same:
            ranges = merge_intervals(m.ranges)
            fold = subtract_intervals if m.negate else intersect_intervals
            allowed = fold(allowed, ranges)
        if not allowed:
            return None
        one = Match(fld, ranges=allowed, family=version)
        rule = replace(rule, matches=(*(m for m in rule.matches if m not in same), one))
    return rule


def _rule_variants(
    rule: FilterRule,
    version: int,
    hooks: set[Hook],
    chain_names: dict[str, str],
    notes: list[str],
    where: str,
) -> list[list[str]] | None:
    """iptables argument lists for one rule (several when a set must be split), or None when
    the rule never applies to this IP version. Raises _Unrenderable rather than drop a match."""
    rej = rule.reject if rule.action is FilterAction.REJECT else None
    if rej and rej.type in (RejectType.ICMP, RejectType.ICMPV6) and not rej.applies_to(version, 0):
        return None  # nft's `reject with icmp` only hits IPv4 packets, `icmpv6` only IPv6 ones
    nat_to = rule.nat.address if rule.nat and rule.action in (FilterAction.DNAT, FilterAction.SNAT) else None
    if nat_to and (":" in nat_to) != (version == IPV6):
        return None  # nft's `dnat ip to ...` only hits IPv4 packets, `dnat ip6 to` only IPv6 ones
    merged = _one_match_per_address(rule, version)
    if merged is None:
        return None  # the address matches exclude each other: the rule never applies
    rule = merged
    variants: list[list[str]] = [[]]
    proto_num = 0
    proto_set = False
    icmp_codes = [m for m in rule.matches if m.field is Field.ICMP_CODE]
    # `-p` first: the port and ICMP matches after it need to know the protocol.
    for m in sorted(rule.matches, key=lambda m: m.field is not Field.L4PROTO):
        if proto_set and m.field in (Field.SPORT, Field.DPORT, Field.ICMP_TYPE):
            raise _Unrenderable(f"a protocol set with {m} cannot be written for iptables")
        if m.family and m.family != version:
            return None
        if m.field is Field.NFPROTO:
            versions = {v for lo, hi in m.ranges for v in range(lo, hi + 1)}
            if (version in versions) == m.negate:
                return None
            continue
        neg = ["!"] if m.negate else []
        opts: list[list[str]] = []
        if m.set_name and m.field not in (
            Field.SADDR,
            Field.DADDR,
            Field.SPORT,
            Field.DPORT,
            Field.IIF,
            Field.OIF,
        ):
            raise _Unrenderable(f"set @{m.set_name} on {m.field} cannot be written for iptables")
        if m.field is Field.L4PROTO:
            if _single(m.ranges) is not None:
                proto_num = m.ranges[0][0]
                opts = [[*neg, "-p", IPPROTO_NAMES.get(proto_num, str(proto_num))]]
            elif not m.negate:
                proto_set = True
                opts = [
                    ["-p", IPPROTO_NAMES.get(p, str(p))] for lo, hi in m.ranges for p in range(lo, hi + 1)
                ]
            else:
                raise _Unrenderable("a negated protocol set cannot be written for iptables")
        elif m.field in (Field.SADDR, Field.DADDR):
            flag = "-s" if m.field is Field.SADDR else "-d"
            texts = [render_address_interval(version, r) for r in m.ranges]
            if m.negate and len(texts) > 1:
                raise _Unrenderable(f"a negated address set ({m}) cannot be written for iptables")
            if not texts:
                raise _Unrenderable(f"an empty address set ({m}) cannot be written for iptables")
            for t in texts:
                if "-" in t:
                    opts.append(["-m", "iprange", *neg, "--src-range" if flag == "-s" else "--dst-range", t])
                else:
                    opts.append([*neg, flag, t])
        elif m.field in (Field.SPORT, Field.DPORT):
            if proto_num and m.protos and proto_num not in m.protos:
                return None  # `tcp dport` never matches a UDP packet
            if not proto_num and len(m.protos) == 1:
                proto_num = m.protos[0]
                variants = [[*v, "-p", IPPROTO_NAMES[proto_num]] for v in variants]
            if not proto_num or proto_num not in PORT_PROTOS:
                raise _Unrenderable(f"a port match without a single port protocol ({m})")
            texts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in m.ranges]
            if not texts:
                raise _Unrenderable(f"an empty port set ({m}) cannot be written for iptables")
            side = "--sport" if m.field is Field.SPORT else "--dport"
            name = IPPROTO_NAMES[proto_num]
            if len(texts) == 1:
                opts = [["-m", name, *neg, side, texts[0]]]
            elif (
                proto_num in PORT_PROTOS
                and sum(1 if "-" not in t and ":" not in t else 2 for t in texts) <= 15
            ):
                opts = [["-m", "multiport", *neg, side + "s", ",".join(texts)]]
            elif not m.negate:
                opts = [["-m", name, side, t] for t in texts]
            else:
                raise _Unrenderable(f"a negated set of {len(texts)} ports exceeds multiport's 15")
        elif m.field in (Field.IIF, Field.OIF):
            flag = "-i" if m.field is Field.IIF else "-o"
            bad = hooks & (_NO_IIF if m.field is Field.IIF else _NO_OIF)
            if bad:
                raise _Unrenderable(f"iptables cannot use {flag} in {', '.join(sorted(map(str, bad)))}")
            if m.negate and len(m.names) > 1:
                raise _Unrenderable("a negated interface set cannot be written for iptables")
            if not m.names:
                raise _Unrenderable(f"an empty interface set ({m}) cannot be written for iptables")
            opts = [[*neg, flag, _iface(n)] for n in m.names]
        elif m.field is Field.CT_STATE:
            if m.exact:
                # `ct state != a | b` always holds and `== a | b` never does (see Match.exact).
                if m.negate:
                    continue
                return None
            if not m.names:
                raise _Unrenderable(f"an empty conntrack state set ({m})")
            opts = [["-m", "conntrack", *neg, "--ctstate", ",".join(s.upper() for s in m.names)]]
        elif m.field is Field.CT_STATUS:
            # Both test bits: nft `ct status a,b` holds when any is set, as `--ctstatus A,B`
            # does. iptables names the NAT bits as the virtual states `--ctstate SNAT/DNAT`
            # (xt_conntrack sets those state bits from IPS_SRC_NAT/IPS_DST_NAT).
            bits = [n.upper().replace("-", "_") for n in m.names]
            nat = [b for b in bits if b in ("SNAT", "DNAT")]
            if (
                not bits
                or any(b not in _CT_STATUS_WORDS for b in bits)
                or (m.exact and len(bits) > 1)
                or (nat and len(nat) != len(bits))
            ):
                raise _Unrenderable(f"match {m} cannot be written for iptables")
            option = "--ctstate" if nat else "--ctstatus"
            opts = [["-m", "conntrack", *neg, option, ",".join(bits)]]
        elif m.field is Field.REVERSE_PATH:
            # The kernel takes rpfilter in PREROUTING of raw and mangle only (xt_rpfilter);
            # a regular chain's hooks are not known here.
            if hooks != {Hook.PREROUTING}:
                raise _Unrenderable(f"iptables' rpfilter works in PREROUTING only ({m})")
            flags = [f"--{f}" for f in RPF_FLAGS if f in m.names]
            opts = [["-m", "rpfilter", *flags, *(["--invert"] if m.negate else [])]]
        elif m.field is Field.FIB_DADDR_TYPE:
            # `fib daddr type T` (no oif/iif flag) is addrtype's --dst-type T without
            # --limit-iface-in: both ask the routing table for the destination's type.
            addr_types = [n.upper() for n in m.names]
            if not addr_types or any(t not in _ADDRTYPE_WORDS for t in addr_types):
                raise _Unrenderable(f"match {m} cannot be written for iptables")
            opts = [["-m", "addrtype", *neg, "--dst-type", ",".join(addr_types)]]
        elif m.field is Field.ICMP_TYPE:
            flag = "--icmp-type" if version == IPV4 else "--icmpv6-type"
            proto = "icmp" if version == IPV4 else "ipv6-icmp"
            if proto_num and proto_num not in (IPPROTO_ICMP, IPPROTO_ICMPV6):
                return None
            prefix = [] if proto_num in (IPPROTO_ICMP, IPPROTO_ICMPV6) else ["-p", proto]
            proto_num = IPPROTO_ICMP if version == IPV4 else IPPROTO_ICMPV6
            types = [t for lo, hi in m.ranges for t in range(lo, hi + 1)]
            if m.negate and len(types) > 1:
                raise _Unrenderable("a negated ICMP type set cannot be written for iptables")
            code = ""
            if icmp_codes:
                c = icmp_codes[0]
                if (
                    len(icmp_codes) > 1
                    or c.negate != m.negate
                    or _single(c.ranges) is None
                    or len(types) != 1
                ):
                    raise _Unrenderable(f"iptables writes one ICMP code with one type only ({c})")
                code = f"/{c.ranges[0][0]}"
            module = "icmp" if version == IPV4 else "icmp6"
            opts = [[*prefix, "-m", module, *neg, flag, f"{t}{code}"] for t in types]
        elif m.field is Field.ICMP_CODE:
            if not any(x.field is Field.ICMP_TYPE for x in rule.matches):
                raise _Unrenderable(f"iptables matches an ICMP code only with its type ({m})")
            continue
        elif m.field is Field.TCP_FLAGS:
            if proto_num and proto_num != IPPROTO_TCP:
                return None  # `tcp flags` never matches another protocol
            if not proto_num:
                if proto_set:
                    raise _Unrenderable(f"a protocol set with {m} cannot be written for iptables")
                variants = [[*v, "-p", "tcp"] for v in variants]
                proto_num = IPPROTO_TCP
            opts = [["-m", "tcp", *_tcp_flags_args(m)]]
        elif m.field is Field.OPAQUE and m.text.startswith("-m "):
            # A match iptables-save wrote and portkit does not model goes back as written.
            try:
                opts = [shlex.split(m.text)]
            except ValueError:
                raise _Unrenderable(f"match {m.text!r} cannot be written for iptables") from None
        else:
            raise _Unrenderable(f"match {m} cannot be written for iptables")
        variants = [[*v, *o] for v in variants for o in opts]
    target = _target(rule, version, chain_names)
    if rule.action is FilterAction.REJECT and rule.reject and rule.reject.type is RejectType.TCP_RESET:
        if proto_num and proto_num != IPPROTO_TCP:
            return None
        if not proto_num:
            if proto_set:
                raise _Unrenderable("a protocol set with a tcp reset cannot be written for iptables")
            variants = [[*v, "-p", "tcp"] for v in variants]
    if rule.comment:
        comment = " ".join(rule.comment.split())
        if len(comment.encode()) > COMMENT_MAX:
            comment = comment.encode()[:COMMENT_MAX].decode(errors="ignore")
            notes.append(f"{where}: comment shortened to iptables' {COMMENT_MAX} bytes")
        target = ["-m", "comment", "--comment", comment, *target]
    out = [[*v, *target] for v in variants]
    if rule.log is not None and rule.action is not FilterAction.CONTINUE:
        log = ["-j", "LOG", *_log_prefix(rule.log, where, notes)]
        out = [x for v in variants for x in ([*v, *log], [*v, *target])]
    elif rule.log is not None:
        out = [[*v, *target, *_log_prefix(rule.log, where, notes)] for v in variants]
    return out


def _log_prefix(prefix: str, where: str, notes: list[str]) -> list[str]:
    if not prefix:
        return []
    if len(prefix) > LOG_PREFIX_MAX:
        notes.append(f"{where}: log prefix shortened to iptables' {LOG_PREFIX_MAX} characters")
        prefix = prefix[:LOG_PREFIX_MAX]
    return ["--log-prefix", prefix]


def _target(rule: FilterRule, version: int, chain_names: dict[str, str]) -> list[str]:
    act = rule.action
    iptables_style = all(s.startswith("-") for s in rule.opaque)
    if rule.opaque and not (act is FilterAction.CONTINUE and rule.log is None and iptables_style):
        raise _Unrenderable(f"statements {'; '.join(rule.opaque)} cannot be written for iptables")
    if act is FilterAction.CONTINUE:
        if rule.opaque:
            try:
                return [w for s in rule.opaque for w in shlex.split(s)]
            except ValueError:
                raise _Unrenderable(f"statements {'; '.join(rule.opaque)} cannot be written") from None
        if rule.log is not None:
            return ["-j", "LOG"]
        return []
    if act in (FilterAction.ACCEPT, FilterAction.DROP, FilterAction.RETURN, FilterAction.MASQUERADE):
        if act is FilterAction.MASQUERADE and rule.nat and (
            rule.nat.address or rule.nat.port is not None or rule.nat.unknown
        ):
            raise _Unrenderable(f"masquerade to {rule.nat} cannot be written for iptables")
        return ["-j", act.value.upper()]
    if act is FilterAction.QUEUE:
        return ["-j", "NFQUEUE"]  # queue 0, as nft's bare `queue`
    if act in (FilterAction.JUMP, FilterAction.GOTO):
        return ["-j" if act is FilterAction.JUMP else "-g", chain_names.get(rule.target, rule.target)]
    if act is FilterAction.REJECT:
        rej = rule.reject or Reject()
        name = reject_name(rej, version)
        if name is None:
            raise _Unrenderable(f"reject with {rej.answer(version)} has no iptables equivalent")
        return ["-j", "REJECT", "--reject-with", name]
    if act in (FilterAction.DNAT, FilterAction.SNAT, FilterAction.REDIRECT):
        nat = rule.nat or NatTarget()
        if nat.unknown:
            # The importer kept the verdict of a NAT to a map or range, not the whole rewrite:
            # writing the part it kept would send the packets somewhere else.
            raise _Unrenderable(f"{act.value} to a map or range cannot be written back")
        if act is FilterAction.REDIRECT:
            if nat.address:
                raise _Unrenderable(f"redirect to {nat} cannot be written for iptables")
            return ["-j", "REDIRECT"] + (["--to-ports", str(nat.port)] if nat.port is not None else [])
        if not nat.address:
            # The importer keeps the verdict of a NAT to a map or range but not the rewrite.
            raise _Unrenderable(f"{act.value} without a known target address (a map or range?)")
        flag = "--to-destination" if act is FilterAction.DNAT else "--to-source"
        return ["-j", act.value.upper(), flag, str(nat)]
    raise _Unrenderable(f"action {act} has no iptables equivalent")


def _chain_names(
    tables: list[Table], homes_of: list[dict[str, set[str]]], notes: list[str]
) -> list[dict[str, str]]:
    """Per table, the iptables name of each regular chain: at most 28 characters, never a
    target's name, and unique in each iptables table the chain goes to (`homes_of`): two nft
    tables' `common` chains must not merge into one, while iptables' own filter and nat
    `DOCKER` chains keep their names."""
    import hashlib

    out: list[dict[str, str]] = []
    taken: dict[str, set[str]] = {}
    for t, homes in zip(tables, homes_of, strict=True):
        names: dict[str, str] = {}
        for c in t.chains:
            name = c.name
            if c.hook is not None:
                continue
            where = homes.get(name, {"filter"})
            ok = (
                0 < len(name) <= CHAIN_NAME_MAX
                and name not in _TARGET_NAMES
                and name not in _HOOK_CHAIN.values()
                and not name.startswith("-")
                and all(ch in _SAFE_WORD and ch != "!" for ch in name)
                and not any(name in taken.get(h, ()) for h in where)
            )
            if not ok:
                digest = hashlib.sha256(f"{t} {name}".encode()).hexdigest()[:8]
                stem = "".join(ch if ch in _SAFE_WORD and ch != "!" else "_" for ch in name).lstrip("-")
                new = f"{stem[: CHAIN_NAME_MAX - 9]}-{digest}".lstrip("-")
                while any(new in taken.get(h, ()) for h in where):
                    new = new[:-1] + "x"
                notes.append(
                    f"{t} {name}: renamed {new} (iptables chain names: 1-28 letters, no target "
                    "names, one per name in each iptables table)"
                )
                name = new
            for h in where:
                taken.setdefault(h, set()).add(name)
            names[c.name] = name
        out.append(names)
    return out


def reject_name(rej: Reject, version: int) -> str | None:
    """iptables' name for how a reject answers on this IP version (`icmp6-adm-prohibited`)."""
    if rej.type is RejectType.TCP_RESET:
        return "tcp-reset"
    code = rej.answer(version).split("-", 1)[1]
    return _REJECT_OUT.get((RejectType.ICMP if version == IPV4 else RejectType.ICMPV6, code))


def _rejects(args: list[str]) -> bool:
    return any(a == "-j" and b == "REJECT" for a, b in itertools.pairwise(args))


def _drop_instead(args: list[str]) -> list[str]:
    at = next(i for i, (a, b) in enumerate(itertools.pairwise(args)) if a == "-j" and b == "REJECT")
    return [*args[:at], "-j", "DROP"]


def _homes(table: Table, base_tables: dict[str, str]) -> dict[str, set[str]]:
    """Per regular chain, the iptables tables whose base chains reach it. A chain no base chain
    reaches (kube-proxy leaves some behind) goes, with everything it calls, where its rules are
    legal: nat when it rewrites addresses, else the one table its own table's base chains go to
    (iptables' nat table read back is nat), else filter. The kernel refuses DNAT in filter."""
    calls = {c.name: {r.target for r in c.rules if r.target} for c in table.chains}
    out: dict[str, set[str]] = {}
    own = set(base_tables.values())
    if len(own) == 1:
        default = next(iter(own))
    else:
        default = table.name if not own and table.name in _BUILTIN else "filter"
    unreached = [c for c in table.chains if c.hook is None]
    roots = [(calls.get(base, set()), ipt_table) for base, ipt_table in base_tables.items()]

    def visit(targets: set[str], ipt_table: str) -> None:
        todo, seen = list(targets), set()
        while todo:
            name = todo.pop()
            if name in seen or name in base_tables:
                continue
            seen.add(name)
            out.setdefault(name, set()).add(ipt_table)
            todo.extend(calls.get(name, ()))

    for targets, ipt_table in roots:
        visit(targets, ipt_table)
    for c in unreached:
        if c.name not in out:
            rewrites = any(r.action in _NAT_ACTIONS for r in c.rules)
            visit({c.name}, "nat" if rewrites else default)
    return out


def render_iptables(ruleset: Ruleset, *, version: int = 4) -> Rendering:
    """`iptables-restore` (version=4) or `ip6tables-restore` (version=6) input.

    A rule iptables cannot express is left out whole, never without one of its matches; the
    Rendering says whether that only narrows (see `portkit.firewall._export`)."""
    policy = OmissionPolicy(ruleset)
    notes: list[str] = []
    omitted: list[Omission] = []
    by_table: dict[str, list[tuple[str, list[list[str]]]]] = {}
    chain_decl: dict[str, dict[str, str]] = {}
    tables = [
        t
        for t in ruleset.tables
        if t.family.covers(version) and t.family in (Family.IP, Family.IP6, Family.INET)
    ]
    for t in ruleset.tables:
        if t.family in (Family.ARP, Family.BRIDGE, Family.NETDEV):
            for c in t.chains:
                if c.hook is not None and (c.rules or c.policy is not FilterAction.ACCEPT):
                    omitted.append(omission_of_chain(t, c, f"iptables does not filter {t.family} traffic"))
    # Which iptables table each base chain goes to: NAT chains to nat, filter chains to one
    # filtering table each per hook, in priority order.
    slot: dict[tuple[int, str], str] = {}
    per_hook: dict[Hook, list[tuple[int, int, int, Table, Chain]]] = {}
    for ti, t in enumerate(tables):
        for ci, c in enumerate(t.chains):
            if c.hook is None:
                continue
            if c.type is ChainType.NAT:
                slot[(ti, c.name)] = "nat"
            elif c.hook in _FILTER_SLOTS:
                per_hook.setdefault(c.hook, []).append((c.priority, ti, ci, t, c))
    for hook, found in per_hook.items():
        found.sort(key=lambda x: x[:3])
        slots = _FILTER_SLOTS[hook]
        # Chains at a priority iptables itself uses (raw -300, mangle -150, ...) go to that table.
        exact = [
            next(
                (
                    name
                    for name in ("raw", "mangle", "filter", "security")
                    if prio
                    in (
                        _BUILTIN[name].get(_HOOK_CHAIN[hook], (hook, None))[1],
                        _IPTABLES_NFT_PRIORITY.get((name, hook)),
                    )
                ),
                "",
            )
            for prio, *_ in found
        ]
        if all(exact) and len(set(exact)) == len(exact):
            chosen: tuple[str, ...] = tuple(exact)
        elif len(found) == 1:
            chosen = ("filter",) if "filter" in slots else slots[:1]
        elif len(found) == 2 and len(slots) == 3:
            chosen = ("filter", "security")
        else:
            chosen = slots[: len(found)]
        for _, ti, _, tbl, c in found[len(chosen) :]:
            slot[(ti, c.name)] = ""
            omitted.append(
                omission_of_chain(tbl, c, f"iptables has no table left for another base chain on {hook}")
            )
        for (_, ti, _, _tbl, c), table_name in zip(found, chosen, strict=False):
            slot[(ti, c.name)] = table_name
    homes_of = [
        _homes(t, {c.name: slot[(ti, c.name)] for c in t.chains if slot.get((ti, c.name))})
        for ti, t in enumerate(tables)
    ]
    chain_names_of = _chain_names(tables, homes_of, notes)
    for ti, t in enumerate(tables):
        chain_names = chain_names_of[ti]
        homes = homes_of[ti]
        for c in t.chains:
            if c.hook is not None:
                ipt_table = slot.get((ti, c.name), "")
                name = _HOOK_CHAIN.get(c.hook, "")
                if not ipt_table or not name:
                    if (ti, c.name) not in slot and (c.rules or c.policy is not FilterAction.ACCEPT):
                        omitted.append(omission_of_chain(t, c, f"iptables has no {c.type} chain on {c.hook}"))
                    continue
                builtin = _BUILTIN.get(ipt_table, {})
                if name not in builtin:
                    omitted.append(omission_of_chain(t, c, f"iptables {ipt_table} has no {name} chain"))
                    continue
                expected = builtin[name][1]
                if c.priority not in (expected, _IPTABLES_NFT_PRIORITY.get((ipt_table, c.hook))):
                    notes.append(
                        f"{t} {c.name}: priority {c.priority} becomes iptables {ipt_table} {name} "
                        f"(priority {expected})"
                    )
                if c.type is ChainType.NAT and c.policy is not FilterAction.ACCEPT:
                    omitted.append(omission_of_chain(t, c, "a NAT chain's policy must be accept in iptables"))
                    continue
                chain_decl.setdefault(ipt_table, {})[name] = c.policy.value.upper()
            rules: list[list[str]] = []
            for i, r in enumerate(c.rules):
                where = f"{t} {c.name} #{i + 1}"
                try:
                    if c.type is ChainType.NAT and any(m.field is Field.REVERSE_PATH for m in r.matches):
                        raise _Unrenderable("iptables' rpfilter is not allowed in the nat table")
                    got = _rule_variants(r, version, {c.hook} if c.hook else set(), chain_names, notes, where)
                except _Unrenderable as exc:
                    omitted.append(policy.omit(t, c, i, r, str(exc)))
                    continue
                if got:
                    rules.extend(got)
            if c.hook is not None:
                by_table.setdefault(ipt_table, []).append((name, rules))
                continue
            # A regular chain lives in the table of each base chain that reaches it (a copy in
            # each when there are several); one nothing reaches goes to filter.
            name = chain_names.get(c.name, c.name)
            for home in sorted(homes.get(c.name, {"filter"})):
                chain_decl.setdefault(home, {}).setdefault(name, "-")
                by_table.setdefault(home, []).append((name, rules))
    out: list[str] = [f"# generated by portkit for ip{'6' if version == IPV6 else ''}tables-restore"]
    for table in ("raw", "mangle", "nat", "filter", "security"):
        if table not in chain_decl:
            continue
        out.append(f"*{table}")
        for name, chain_policy in chain_decl[table].items():
            out.append(f":{name} {chain_policy} [0:0]")
        for name, rules in by_table.get(table, []):
            if table != "filter" and any(_rejects(args) for args in rules):
                # The kernel takes REJECT in the filter table only; a drop is never wider.
                rules = [_drop_instead(args) if _rejects(args) else args for args in rules]
                notes.append(f"iptables {table} {name}: REJECT is only allowed in filter; dropped instead")
            for args in rules:
                out.append(" ".join(["-A", name, *(a if a == "!" else quote_arg(a) for a in args)]))
        out.append("COMMIT")
    return Rendering("\n".join(out) + "\n", tuple(dict.fromkeys(notes)), tuple(omitted))
