"""nftables in and out: `nft -j list ruleset` JSON -> model, and model -> an `nft -f` script.

The JSON is what the kernel holds, already parsed by nft itself, so it is the importer of
record; nft scripts are read by loading them into a throwaway network namespace and
listing them back as JSON (see `_live.py`). Verdict maps are expanded into one rule per
key, which is faithful because map keys never overlap.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field, replace
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._export import Omission, OmissionPolicy, Rendering, omission_of_chain
from portkit.firewall._model import (
    ICMP_TYPES,
    ICMPV6_TYPES,
    IPPROTO,
    RPF_FLAGS,
    SET_TYPE_FIELDS,
    TCP_FLAG_BITS,
    Chain,
    ChainType,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    NamedSet,
    NatTarget,
    Reject,
    RejectType,
    Ruleset,
    Table,
    address_interval,
)
from portkit.model.intervals import Interval, merge_intervals
from portkit.model.protocols import IPV4

# `th` has no protocol dependency: it reads any transport header (see `match_value`).
_PORT_PROTO: dict[str, tuple[int, ...]] = {
    "tcp": (6,),
    "udp": (17,),
    "sctp": (132,),
    "dccp": (33,),
    "udplite": (136,),
    "th": (),
}
_PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}


# Payload protocols whose header a match reads, and the dependency nft adds for it
# (IP version, transport protocols): such a match never holds on another packet.
_PAYLOAD_DEPS: dict[str, tuple[int, tuple[int, ...]]] = {
    "ip": (4, ()),
    "ip6": (6, ()),
    "icmp": (4, (1,)),
    "icmpv6": (6, (58,)),
    "tcp": (0, (6,)),
    "udp": (0, (17,)),
    "udplite": (0, (136,)),
    "sctp": (0, (132,)),
    "dccp": (0, (33,)),
    "ah": (0, (51,)),
    "esp": (0, (50,)),
    "comp": (0, (108,)),
    "igmp": (4, (2,)),
}
_EXPR_DEPS: dict[str, tuple[int, tuple[int, ...]]] = {
    "tcp option": (0, (6,)),
    "sctp chunk": (0, (132,)),
    "ip option": (4, ()),
    "exthdr": (6, ()),
}
ICMP_CODES = {
    "net-unreachable": 0,
    "host-unreachable": 1,
    "prot-unreachable": 2,
    "port-unreachable": 3,
    "frag-needed": 4,
    "net-prohibited": 9,
    "host-prohibited": 10,
    "admin-prohibited": 13,
}
ICMPV6_CODES = {
    "no-route": 0,
    "admin-prohibited": 1,
    "addr-unreachable": 3,
    "port-unreachable": 4,
    "policy-fail": 5,
    "reject-route": 6,
}


class _Opaque(Exception):
    """An expression portkit does not model; the caller keeps it as text."""


def _dependencies(expr: Any) -> tuple[int, tuple[int, ...]]:
    """The IP version (0: any) and transport protocols (empty: any) an expression's headers
    need, from every payload it reads: an unmodelled `icmpv6 type . icmpv6 code {...}`
    still never matches a TCP packet."""
    family = 0
    protos: set[int] | None = None
    todo = [expr]
    seen = 0
    while todo and seen < 10_000:
        seen += 1
        node = todo.pop()
        if isinstance(node, list):
            todo.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        for key, val in node.items():
            dep = None
            if key == "payload" and isinstance(val, dict):
                dep = _PAYLOAD_DEPS.get(str(val.get("protocol")))
            elif key == "ct" and isinstance(val, dict) and val.get("family") in ("ip", "ip6"):
                dep = (4 if val["family"] == "ip" else 6, ())  # `ct original ip saddr`
            elif key in _EXPR_DEPS:
                dep = _EXPR_DEPS[key]
            if dep is not None:
                family = family or dep[0]
                if dep[1]:
                    protos = set(dep[1]) if protos is None else protos & set(dep[1])
            todo.append(val)
    return family, tuple(sorted(protos)) if protos is not None else ()


_RATE_KEYS = frozenset({"limit", "quota", "ct count"})
_RATE_XT = frozenset({"limit", "hashlimit", "connlimit"})


def _is_rate(stmt: Any, depth: int = 0) -> bool:
    """Whether a statement that can stop a rule does so by rate or count alone: a limit, a
    quota, a connection count, or a set update (meter) whose only stateful part is one."""
    if not isinstance(stmt, dict) or depth > 8:
        return False
    for key, val in stmt.items():
        if key in _RATE_KEYS:
            return True
        if key == "xt" and isinstance(val, dict):
            return val.get("type") == "match" and val.get("name") in _RATE_XT
        if key in ("set", "map", "meter") and isinstance(val, dict):
            inner = val.get("stmt")
            inner = inner if isinstance(inner, list) else [inner]
            return bool(inner) and all(_is_rate(s, depth + 1) for s in inner)
    return False


def _holds_when_unknown(stmt: Any, depth: int = 0) -> tuple[bool, str]:
    """The first branch's assumption for an unmodelled statement that can stop a rule:
    a rate limit or quota is not exceeded, a connection count not over its limit, a
    reverse-path lookup (`fib saddr . iif oif missing`) finds its route."""
    if isinstance(stmt, dict):
        match = stmt.get("match")
        if isinstance(match, dict) and isinstance(match.get("left"), dict) and "fib" in match["left"]:
            fib = match["left"]["fib"]
            if isinstance(fib, dict) and fib.get("result") == "oif" and match.get("right") is False:
                holds = match.get("op", "==") == "!="
                return holds, f"assumed {'' if holds else 'not '}to match: the reverse path has a route"
        if isinstance(match, dict):
            ordinary = _ordinary_value(match)
            if ordinary is not None:
                return ordinary
        for key, val in stmt.items():
            if key in ("limit", "quota", "ct count") and isinstance(val, dict):
                over = bool(val.get("inv"))
                what = "the limit is not exceeded"
                return (not over), f"assumed {'not ' if over else ''}to match: {what}"
            if key in ("set", "map", "meter") and isinstance(val, dict) and val.get("stmt") and depth < 8:
                return _holds_when_unknown(val["stmt"], depth + 1)
    if isinstance(stmt, list) and stmt and depth < 8:
        holds = [_holds_when_unknown(s, depth + 1) for s in stmt[:64]]
        return all(h for h, _ in holds), holds[0][1]
    return True, "assumed to match"


# Values an ordinary packet has for keys the model does not track: no mark on the packet or
# its connection, not a fragment, addressed to this host alone, no conntrack helper.
_ORDINARY: dict[str, tuple[object, str]] = {
    "meta mark": (0, "the packet is not marked"),
    "ct mark": (0, "the connection is not marked"),
    "ip frag-off": (0, "the packet is not a fragment"),
    "meta pkttype": ("host", "the packet is unicast to this host"),
    "ct helper": ("", "the connection has no helper"),
}


def _ordinary_value(match: dict[str, Any]) -> tuple[bool, str] | None:
    """The first branch's value of a match on a key an ordinary packet has a known value
    for (`meta mark 0x1`: not marked, so false)."""
    left, op, right = match.get("left"), match.get("op", "=="), match.get("right")
    mask = None
    if isinstance(left, dict) and isinstance(left.get("&"), list) and len(left["&"]) == 2:
        left, mask = left["&"]
        if not isinstance(mask, int):
            return None
    if not isinstance(left, dict) or len(left) != 1:
        return None
    kind, body = next(iter(left.items()))
    if not isinstance(body, dict):
        return None
    name = (
        f"{kind} {body.get('key', '')}"
        if kind in ("meta", "ct")
        else f"{body.get('protocol')} {body.get('field')}"
    )
    if name not in _ORDINARY:
        return None
    value, why = _ORDINARY[name]
    if isinstance(value, int) and mask is not None:
        value &= mask
    items = right["set"] if isinstance(right, dict) and "set" in right else [right]
    hit = value in items
    if op in ("==", "in"):
        holds = hit
    elif op == "!=":
        holds = not hit
    else:
        return None
    return holds, f"assumed {'' if holds else 'not '}to match: {why}"


def _raw_ipv4_protocol(expr: Any) -> Match | None:
    """`@nh,72,8 N` (byte 9 of the network header: the protocol of an IPv4 header) as `ip
    protocol N`, or None. In an inet table the same bytes of an IPv6 header are part of its
    source address, so the caller uses this only for a rule that also requires IPv4."""
    left, right, op = expr.get("left"), expr.get("right"), expr.get("op", "==")
    payload = left.get("payload") if isinstance(left, dict) else None
    if not isinstance(payload, dict) or op not in ("==", "!="):
        return None
    if (payload.get("base"), payload.get("offset"), payload.get("len")) != ("nh", 72, 8):
        return None
    if not isinstance(right, int) or isinstance(right, bool) or not 0 <= right <= 255:
        return None
    return Match(Field.L4PROTO, ((right, right),), negate=op == "!=", family=IPV4)


def _opaque(stmt: Any, text: str | None = None) -> Match:
    """An unmodelled expression: unknown to the evaluator, false where its headers cannot apply."""
    family, protos = _dependencies(stmt)
    holds, _ = _holds_when_unknown(stmt)
    return Match(Field.OPAQUE, text=text or _expr_text(stmt), negate=not holds, family=family, protos=protos)


@dataclass
class _TableBuilder:
    family: Family
    name: str
    sets: dict[str, NamedSet] = field(default_factory=dict)
    maps: dict[str, Any] = field(default_factory=dict)  # verdict maps: name -> [[key, verdict], ...]
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[FilterRule]] = field(default_factory=dict)


def _expr_text(expr: Any) -> str:
    import json

    return json.dumps(expr, separators=(",", ":"), sort_keys=True)


def _port_value(value: Any) -> int:
    if isinstance(value, int):
        return value
    text = str(value)
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text)
    except OSError:
        raise _Opaque(f"unknown service {text!r}") from None


def _scalar_intervals(fld: Field, value: Any, family: int) -> tuple[list[Interval], list[str], int]:
    """Intervals (or names) of one right-hand value; returns the address family found too."""
    if isinstance(value, dict):
        if "prefix" in value:
            pre = value["prefix"]
            net = ipaddress.ip_network(f"{pre['addr']}/{pre['len']}", strict=False)
            return [(int(net.network_address), int(net.broadcast_address))], [], net.version
        if "range" in value:
            a, b = value["range"]
            la, _, fa = _scalar_intervals(fld, a, family)
            lb, _, _ = _scalar_intervals(fld, b, family)
            return [(la[0][0], lb[0][1])], [], fa
        if "elem" in value:
            return _scalar_intervals(fld, value["elem"]["val"], family)
        raise _Opaque(f"value {_expr_text(value)}")
    if fld in (Field.SADDR, Field.DADDR):
        ver, iv = address_interval(str(value))
        return [iv], [], ver
    if fld in (Field.IIF, Field.OIF, Field.CT_STATE, Field.CT_STATUS, Field.FIB_DADDR_TYPE):
        return [], [str(value)], family
    if fld in (Field.SPORT, Field.DPORT):
        port = _port_value(value)
        return [(port, port)], [], family
    if fld is Field.L4PROTO:
        num = value if isinstance(value, int) else IPPROTO.get(str(value))
        if num is None:
            raise _Opaque(f"protocol {value!r}")
        return [(num, num)], [], family
    if fld is Field.NFPROTO:
        nf = {"ipv4": 4, "ipv6": 6, "ip": 4, "ip6": 6}.get(str(value))
        if nf is None:
            raise _Opaque(f"nfproto {value!r}")
        return [(nf, nf)], [], family
    if fld is Field.ICMP_TYPE:
        table = ICMP_TYPES if family == IPV4 else ICMPV6_TYPES
        num = value if isinstance(value, int) else table.get(str(value))
        if num is None:
            raise _Opaque(f"icmp type {value!r}")
        return [(num, num)], [], family
    if fld is Field.ICMP_CODE:
        codes = ICMP_CODES if family == IPV4 else ICMPV6_CODES
        num = value if isinstance(value, int) else codes.get(str(value))
        if num is None:
            raise _Opaque(f"icmp code {value!r}")
        return [(num, num)], [], family
    raise _Opaque(f"value {value!r}")


def _values(
    fld: Field, right: Any, family: int, sets: dict[str, NamedSet]
) -> tuple[tuple[Interval, ...], tuple[str, ...], str, int]:
    ranges, names, set_name, fam, _ = _values_exact(fld, right, family, sets)
    return ranges, names, set_name, fam


def _values_exact(
    fld: Field, right: Any, family: int, sets: dict[str, NamedSet]
) -> tuple[tuple[Interval, ...], tuple[str, ...], str, int, bool]:
    exact = False
    if isinstance(right, str) and right.startswith("@"):
        named = sets.get(right[1:])
        if named is None:
            raise _Opaque(f"unknown set {right}")
        fam = 6 if "ipv6" in named.type else (4 if "ipv4" in named.type else family)
        return named.ranges, named.names, named.name, fam, False
    if isinstance(right, dict) and "|" in right:  # a bitmask of flags, e.g. ct state != a,b
        right = list(right["|"])
        exact = True
    items = (
        right["set"]
        if isinstance(right, dict) and "set" in right
        else (right if isinstance(right, list) else [right])
    )
    ranges: list[Interval] = []
    names: list[str] = []
    fam = family
    for item in items:
        r, n, fam = _scalar_intervals(fld, item, fam)
        ranges.extend(r)
        names.extend(n)
    return merge_intervals(ranges), tuple(names), "", fam, exact


def _left_field(left: Any, table_family: Family) -> tuple[Field, int, tuple[int, ...]]:
    """(field, family dependency, protocol dependency) of a match's left-hand side."""
    fam_default = 4 if table_family is Family.IP else 6 if table_family is Family.IP6 else 0
    if "payload" in left:
        pl = left["payload"]
        proto, fld = pl.get("protocol"), pl.get("field")
        if proto in ("ip", "ip6") and fld in ("saddr", "daddr"):
            return (Field.SADDR if fld == "saddr" else Field.DADDR), (4 if proto == "ip" else 6), ()
        if (proto, fld) in (("ip", "protocol"), ("ip6", "nexthdr")):
            return Field.L4PROTO, (4 if proto == "ip" else 6), ()
        if proto in _PORT_PROTO and fld in ("sport", "dport"):
            return (Field.SPORT if fld == "sport" else Field.DPORT), 0, _PORT_PROTO[proto]
        if proto in ("icmp", "icmpv6") and fld in ("type", "code"):
            fam = 4 if proto == "icmp" else 6
            return (Field.ICMP_TYPE if fld == "type" else Field.ICMP_CODE), fam, (1 if fam == IPV4 else 58,)
    if "meta" in left:
        key = left["meta"].get("key")
        if key in ("iif", "iifname"):
            return Field.IIF, 0, ()
        if key in ("oif", "oifname"):
            return Field.OIF, 0, ()
        if key == "l4proto":
            return Field.L4PROTO, fam_default, ()
        if key == "nfproto":
            return Field.NFPROTO, 0, ()
    if "ct" in left and left["ct"].get("key") == "state" and "dir" not in left["ct"]:
        return Field.CT_STATE, 0, ()
    if "ct" in left and left["ct"].get("key") == "status" and "dir" not in left["ct"]:
        return Field.CT_STATUS, 0, ()
    if (
        "fib" in left
        and left["fib"].get("result") == "type"
        and left["fib"].get("flags") in (["daddr"], "daddr")
    ):
        return Field.FIB_DADDR_TYPE, 0, ()
    raise _Opaque("left")


def _concat_parts(left: Any, table_family: Family) -> tuple[Match, ...]:
    """The components of a concatenated key (`ip saddr . tcp dport`), as value-less matches."""
    parts = []
    for item in left["concat"]:
        fld, fam, protos = _left_field(item, table_family)
        if fld in (Field.CT_STATUS, Field.CONCAT):
            raise _Opaque(f"{fld} in a concatenation")
        parts.append(Match(fld, family=fam, protos=protos))
    return tuple(parts)


def _concat_value(part: Match, value: Any) -> Interval | str:
    """One component of one element: an interval (a value, a prefix, a range) or a name."""
    ranges, names, _ = _scalar_intervals(part.field, value, part.family)
    if names and not ranges and len(names) == 1:
        return names[0]
    if len(ranges) == 1 and not names:
        return ranges[0]
    raise _Opaque(f"concatenation value {value!r}")


def _concat_element(parts: tuple[Match, ...], item: Any) -> tuple[Interval | str, ...]:
    if isinstance(item, dict) and "elem" in item:
        item = item["elem"]["val"]
    if not (isinstance(item, dict) and isinstance(item.get("concat"), list)):
        raise _Opaque(f"concatenation element {_expr_text(item)}")
    values = item["concat"]
    if len(values) != len(parts):
        raise _Opaque(f"concatenation element {_expr_text(item)} has {len(values)} components")
    return tuple(_concat_value(p, v) for p, v in zip(parts, values, strict=True))


def _concat_match(expr: dict[str, Any], table_family: Family, sets: dict[str, NamedSet]) -> Match:
    op = expr.get("op", "==")
    if op not in ("==", "!=", "in"):
        raise _Opaque(f"operator {op} on a concatenation")
    parts = _concat_parts(expr["left"], table_family)
    right = expr["right"]
    set_name = ""
    if isinstance(right, str) and right.startswith("@"):
        named = sets.get(right[1:])
        if named is None or len(named.types) != len(parts):
            raise _Opaque(f"unknown or unmodelled set {right}")
        elements = named.elements
        set_name = named.name
    else:
        items = right["set"] if isinstance(right, dict) and "set" in right else [right]
        elements = tuple(_concat_element(parts, item) for item in items)
    return Match(
        Field.CONCAT,
        negate=op == "!=",
        parts=parts,
        elements=elements,
        set_name=set_name,
        dynamic=bool(set_name) and sets[set_name].dynamic,
    )


def _flag_bits(value: Any, depth: int = 0) -> int:
    if isinstance(value, bool) or depth > 4:
        raise _Opaque(f"tcp flags {_expr_text(value)[:60]}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value in TCP_FLAG_BITS:
        return TCP_FLAG_BITS[value]
    if isinstance(value, list):
        bits = 0
        for v in value:
            bits |= _flag_bits(v, depth + 1)
        return bits
    if isinstance(value, dict) and isinstance(value.get("|"), list):
        return _flag_bits(value["|"], depth + 1)
    raise _Opaque(f"tcp flags {_expr_text(value)}")


_TCP_FLAGS_LEFT = {"payload": {"protocol": "tcp", "field": "flags"}}


def _tcp_flags_match(expr: dict[str, Any]) -> Match | None:
    """`tcp flags syn`, `tcp flags == syn`, `tcp flags & (fin | syn | rst | ack) == syn`."""
    left, op, right = expr["left"], expr.get("op", "=="), expr["right"]
    mask = 0xFF
    if isinstance(left, dict) and isinstance(left.get("&"), list) and len(left["&"]) == 2:
        if left["&"][0] != _TCP_FLAGS_LEFT:
            return None
        mask = _flag_bits(left["&"][1])
    elif left != _TCP_FLAGS_LEFT:
        return None
    if isinstance(right, dict) and "set" in right:
        raise _Opaque("a set of tcp flag combinations")
    value = _flag_bits(right)
    if op in ("in", "!"):  # any of the bits set; `!`: none of them
        return Match(Field.TCP_FLAGS, ((mask & value, 0),), negate=op == "!", protos=(6,))
    if op in ("==", "!="):
        return Match(Field.TCP_FLAGS, ((mask, value),), negate=op == "!=", protos=(6,), exact=True)
    raise _Opaque(f"operator {op} on tcp flags")


def _reverse_path_match(expr: dict[str, Any]) -> Match | None:
    """`fib saddr [. mark] [. iif] oif missing|exists` (also written `oif 0`, `oif != 0`): the
    reverse-path check, as iptables' rpfilter is (`. iif` absent: --loose; `. mark`:
    --validmark); None for any other fib expression."""
    left = expr.get("left")
    fib = left.get("fib") if isinstance(left, dict) else None
    if not isinstance(fib, dict) or fib.get("result") != "oif":
        return None
    flags = fib.get("flags")
    flags = [flags] if isinstance(flags, str) else flags
    if not isinstance(flags, list) or "saddr" not in flags or not set(flags) <= {"saddr", "mark", "iif"}:
        return None
    op, right = expr.get("op", "=="), expr.get("right")
    if op not in ("==", "!="):
        return None
    if right is True:
        missing = False
    elif right is False or (not isinstance(right, bool) and right in (0, "0")):
        missing = True
    else:
        return None  # compared with a named interface: not a pure reverse-path check
    on = {"loose": "iif" not in flags, "validmark": "mark" in flags}
    names = tuple(f for f in RPF_FLAGS if on.get(f))
    return Match(Field.REVERSE_PATH, names=names, negate=missing != (op == "!="))


def _match(expr: dict[str, Any], table_family: Family, sets: dict[str, NamedSet]) -> Match:
    op = expr.get("op", "==")
    if isinstance(expr.get("left"), dict) and "concat" in expr["left"]:
        return _concat_match(expr, table_family, sets)
    reverse_path = _reverse_path_match(expr)
    if reverse_path is not None:
        return reverse_path
    flags = _tcp_flags_match(expr)
    if flags is not None:
        return flags
    fld, fam, protos = _left_field(expr["left"], table_family)
    right = expr["right"]
    if op in ("<", ">", "<=", ">=") and isinstance(right, int):
        top = 255 if fld in (Field.L4PROTO, Field.ICMP_TYPE, Field.ICMP_CODE) else 65535
        lo, hi = {"<": (0, right - 1), "<=": (0, right), ">": (right + 1, top), ">=": (right, top)}[op]
        return Match(fld, ((lo, hi),), family=fam, protos=protos)
    if fld is Field.CT_STATUS and op in ("in", "!") and not isinstance(right, dict):
        # A bit test: `ct status dnat` (any of the bits set), `!` none of them set.
        _, names, _, _, _ = _values_exact(fld, right, 0, sets)
        return Match(fld, names=names, negate=op == "!")
    if op not in ("==", "!=", "in"):
        raise _Opaque(f"operator {op}")
    if fld is Field.CT_STATUS:
        # `==`, `!=` and `{ }` sets compare the whole status word, whose other bits
        # (confirmed, seen-reply, the NAT done bits...) the model does not know.
        raise _Opaque("ct status compared as a whole word")
    ranges, names, set_name, vfam, exact = _values_exact(
        fld, right, fam or (4 if table_family is Family.IP else 6 if table_family is Family.IP6 else 0), sets
    )
    if fld in (Field.SADDR, Field.DADDR):
        fam = vfam
    return Match(
        fld,
        ranges,
        names,
        negate=op == "!=",
        family=fam,
        protos=protos,
        set_name=set_name,
        exact=exact and op != "in" and len(names) > 1,
        dynamic=bool(set_name) and set_name in sets and sets[set_name].dynamic,
    )


def _reject(value: Any, family: Family) -> Reject:
    if not value:
        kind = {Family.IP: RejectType.ICMP, Family.IP6: RejectType.ICMPV6}.get(family, RejectType.ICMPX)
        return Reject(kind, "port-unreachable")
    kind = RejectType(value.get("type", "icmpx"))
    if kind is RejectType.TCP_RESET:
        return Reject(kind, "")
    return Reject(kind, str(value.get("expr", "port-unreachable")))


_VERDICTS = {
    "accept": FilterAction.ACCEPT,
    "drop": FilterAction.DROP,
    "return": FilterAction.RETURN,
    "continue": FilterAction.CONTINUE,
    "queue": FilterAction.QUEUE,
}


def _verdict_fields(stmt: dict[str, Any], family: Family) -> dict[str, Any] | None:
    """Rule fields for a verdict-like statement, or None if it is not one."""
    key = next(iter(stmt))
    val = stmt[key]
    if key in _VERDICTS:
        return {"action": _VERDICTS[key]}
    if key in ("jump", "goto"):
        return {"action": FilterAction.JUMP if key == "jump" else FilterAction.GOTO, "target": val["target"]}
    if key == "reject":
        return {"action": FilterAction.REJECT, "reject": _reject(val, family)}
    if key in ("dnat", "redirect", "snat", "masquerade"):
        val = val or {}
        addr = val.get("addr")
        port = val.get("port")
        # A range or a map of addresses or ports: the verdict is kept, the rewrite unknown.
        unknown = isinstance(addr, (dict, list)) or isinstance(port, (dict, list))
        if isinstance(addr, (dict, list)):
            addr = None
        if isinstance(port, (dict, list)):
            port = None
        action = {
            "dnat": FilterAction.DNAT,
            "redirect": FilterAction.REDIRECT,
            "snat": FilterAction.SNAT,
            "masquerade": FilterAction.MASQUERADE,
        }[key]
        return {
            "action": action,
            "nat": NatTarget(
                str(addr) if addr else None, int(port) if port is not None else None, unknown=unknown
            ),
        }
    return None


def _dependency_matches(stmt: Any, table_family: Family) -> list[Match]:
    family, protos = _dependencies(stmt)
    out = []
    if family and table_family not in (Family.IP, Family.IP6):
        out.append(Match(Field.NFPROTO, ((family, family),)))
    if protos:
        out.append(Match(Field.L4PROTO, merge_intervals([(p, p) for p in protos])))
    return out


def _map_data(val: dict[str, Any], tb: _TableBuilder) -> list[Any]:
    """A verdict map's [key, verdict] pairs: anonymous, or a named map of the table."""
    data = val["data"]
    if isinstance(data, str) and data.startswith("@"):
        if data[1:] not in tb.maps:
            raise _Opaque(f"unknown map {data}")
        return list(tb.maps[data[1:]])
    return list(data["set"])


def _map_verdicts(val: Any, tb: _TableBuilder) -> list[Any]:
    try:
        return [pair[1] for pair in _map_data(val, tb) if isinstance(pair, list) and len(pair) == 2]
    except (_Opaque, KeyError, TypeError, AttributeError):
        return []


def _keyed(val: dict[str, Any], tb: _TableBuilder) -> list[tuple[Match | tuple[Match, ...], Any]]:
    """A map's (matches for its key, data) pairs. A concatenated key becomes one match per
    component (`ip protocol . th dport` -> `ip protocol tcp` and `th dport 22`)."""
    out: list[tuple[Match | tuple[Match, ...], Any]] = []
    pairs = _map_data(val, tb)
    if isinstance(val["key"], dict) and "concat" in val["key"]:
        parts = _concat_parts(val["key"], tb.family)
        for k, datum in pairs:
            element = _concat_element(parts, k)
            comps = tuple(
                replace(p, names=(v,)) if isinstance(v, str) else replace(p, ranges=(v,))
                for p, v in zip(parts, element, strict=True)
            )
            out.append((comps, datum))
        return out
    fld, fam, protos = _left_field(val["key"], tb.family)
    for k, datum in pairs:
        ranges, names, _, vfam = _values(fld, k, fam, tb.sets)
        family = vfam if fld in (Field.SADDR, Field.DADDR) else fam
        out.append((Match(fld, ranges, names, family=family, protos=protos), datum))
    return out


def _vmap_entries(
    val: dict[str, Any], tb: _TableBuilder
) -> list[tuple[Match | tuple[Match, ...], dict[str, Any]]]:
    """One (matches, verdict) per key. The keys of a map never overlap, so one rule per key,
    in any order, is what the kernel's lookup does."""
    out: list[tuple[Match | tuple[Match, ...], dict[str, Any]]] = []
    for key, verdict in _keyed(val, tb):
        vf = _verdict_fields(verdict, tb.family)
        if vf is None:
            raise _Opaque("verdict")
        out.append((key, vf))
    return out


_NAT_ACTIONS = {"dnat": FilterAction.DNAT, "snat": FilterAction.SNAT, "redirect": FilterAction.REDIRECT}


def _nat_map_entries(
    key: str, val: Any, tb: _TableBuilder
) -> list[tuple[Match | tuple[Match, ...], dict[str, Any]]]:
    """A NAT to a map of known elements (`dnat to tcp dport map { 8080 : 10.0.0.2 }`, `dnat ip
    to ip saddr map @m` with `addr . port` data): one (matches, NAT) per key, like a verdict
    map. A packet whose key is in no element is not rewritten and the rule does not apply
    (the lookup breaks the rule), so one rule per element is the kernel's lookup. [] when the
    statement is not such a map (a range, two maps, data that is not one address or port)."""
    if key not in _NAT_ACTIONS or not isinstance(val, dict):
        return []
    addr, port = val.get("addr"), val.get("port")
    amap = addr.get("map") if isinstance(addr, dict) else None
    pmap = port.get("map") if isinstance(port, dict) else None
    if (amap is None) == (pmap is None):
        return []
    if (amap is not None and port is not None and not isinstance(port, int)) or (
        pmap is not None and addr is not None and not isinstance(addr, str)
    ):
        return []
    out: list[tuple[Match | tuple[Match, ...], dict[str, Any]]] = []
    lookup: dict[str, Any] = amap if amap is not None else pmap  # type: ignore[assignment]
    for matches, datum in _keyed(lookup, tb):
        if amap is not None:
            pair = datum.get("concat") if isinstance(datum, dict) else None
            if isinstance(pair, list) and len(pair) == 2:
                target, target_port = pair
            else:
                target, target_port = datum, port
        else:
            target, target_port = addr, datum
        if not isinstance(target, (str, type(None))) or not isinstance(target_port, (int, type(None))):
            raise _Opaque(f"NAT map data {datum!r}")
        if target is not None:
            target = str(ipaddress.ip_address(target))  # a range or prefix is not one address
        if target_port is not None and not 0 < target_port <= 65535:
            raise _Opaque(f"NAT map port {target_port}")
        out.append((matches, {"action": _NAT_ACTIONS[key], "nat": NatTarget(target, target_port)}))
    return out


def _nat_family_matches(val: Any, table_family: Family) -> list[Match]:
    """`dnat ip to ...` in an inet table rewrites IPv4 packets only (`ip6`: IPv6 only)."""
    nat_family = val.get("family") if isinstance(val, dict) else None
    if nat_family not in ("ip", "ip6") or table_family in (Family.IP, Family.IP6):
        return []
    v = 4 if nat_family == "ip" else 6
    return [Match(Field.NFPROTO, ((v, v),))]


def _try_nat_map(
    key: str, val: Any, tb: _TableBuilder
) -> list[tuple[Match | tuple[Match, ...], dict[str, Any]]]:
    """`_nat_map_entries`, or [] (the NAT stays an unknown rewrite) when an element cannot be read."""
    try:
        return _nat_map_entries(key, val, tb)
    except (_Opaque, ValueError, KeyError, TypeError, AttributeError):
        return []


def _rules_of(obj: dict[str, Any], tb: _TableBuilder, notes: list[str]) -> list[FilterRule]:
    matches: list[Match] = []
    opaque: list[str] = []
    counter = False
    log: str | None = None
    fields: dict[str, Any] = {}
    vmap: list[tuple[Match | tuple[Match, ...], dict[str, Any]]] = []
    where = f"{tb.family} {tb.name} {obj.get('chain')} handle {obj.get('handle')}"
    # Raw reads of the IPv4 protocol byte (`@nh,72,8 6`, as miniupnpd writes its rules), by
    # position in `matches`: the IPv4 protocol once the rule is known to see IPv4 only.
    raw_protocol: dict[int, tuple[Match, str]] = {}
    for stmt in obj.get("expr", []):
        key = next(iter(stmt))
        val = stmt[key]
        if key == "match":
            try:
                matches.append(_match(val, tb.family, tb.sets))
            except (_Opaque, ValueError, KeyError, TypeError) as exc:
                matches.append(_opaque(stmt))
                first = _holds_when_unknown(stmt)[1]
                note = (
                    f"{where}: cannot model match {_expr_text(stmt)} ({exc}); "
                    f"{first} in the first branch, undecided: both outcomes are followed"
                )
                notes.append(note)
                protocol = _raw_ipv4_protocol(val)
                if protocol is not None:
                    raw_protocol[len(matches) - 1] = (protocol, note)
        elif key == "counter":
            counter = True
        elif key == "log":
            log = (val or {}).get("prefix", "")
        elif key == "vmap":
            try:
                vmap.extend(_vmap_entries(val, tb))
            except (_Opaque, ValueError, KeyError, TypeError, AttributeError) as exc:
                # Still a verdict map: one rule per verdict it can give, each undecided.
                unknown = _opaque(stmt)
                vmap = []
                for verdict in _map_verdicts(val, tb):
                    vf = _verdict_fields(verdict, tb.family)
                    if vf is not None and (unknown, vf) not in vmap:
                        vmap.append((unknown, vf))
                if not vmap:
                    matches.append(unknown)
                notes.append(f"{where}: cannot model verdict map ({exc}); each of its verdicts is undecided")
        elif (key in ("limit", "quota", "xt") and (key != "xt" or val.get("type") == "match")) or (
            key in ("set", "map", "meter") and isinstance(val, dict) and val.get("stmt")
        ):
            # Statements that can stop a packet from matching (a limit, a quota, a set update
            # with a limit in it): undecided, the first branch takes the limit as not reached.
            matches.append(replace(_opaque(stmt), rate=_is_rate(stmt)))
            _, why = _holds_when_unknown(stmt)
            notes.append(f"{where}: {key} {_expr_text(val)} is not modelled; undecided ({why})")
        elif key == "xt":
            opaque.append(_expr_text(stmt))
            notes.append(
                f"{where}: opaque iptables target {val.get('name')}: read this table "
                "from iptables-save to model it"
            )
        elif key in _NAT_ACTIONS and (nat_map := _try_nat_map(key, val, tb)):
            vmap.extend(nat_map)
            matches.extend(_nat_family_matches(val, tb.family))
            matches.extend(_dependency_matches(stmt, tb.family))
        else:
            vf = _verdict_fields(stmt, tb.family)
            if vf is not None:
                fields.update(vf)
                matches.extend(_nat_family_matches(val, tb.family))
                matches.extend(_dependency_matches(stmt, tb.family))  # `... to tcp dport map {...}`
            else:
                opaque.append(_expr_text(stmt))
            # A statement that reads a header (`add @seen { ip saddr }`, `dnat to ip daddr map
            # ...`) carries nft's dependency for it: the rule stops on other packets.
            matches.extend(_dependency_matches(stmt, tb.family))
    if raw_protocol and (
        tb.family is Family.IP
        or any(m.field is Field.NFPROTO and not m.negate and m.ranges == ((4, 4),) for m in matches)
    ):
        for index, (protocol, note) in raw_protocol.items():
            matches[index] = protocol
            notes.remove(note)
    base = {
        "counter": counter,
        "log": log,
        "comment": obj.get("comment", ""),
        "handle": obj.get("handle"),
        "opaque": tuple(opaque),
    }
    if vmap:
        return [
            FilterRule(matches=(*matches, *(m if isinstance(m, tuple) else (m,))), **base, **vf)
            for m, vf in vmap
        ]
    return [FilterRule(matches=tuple(matches), **base, **fields)]


def _priority(value: Any) -> int:
    """A chain priority: a number, a standard name (`filter`, `dstnat`...), or an offset."""
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value in _PRIORITY_NAMES:
        return _PRIORITY_NAMES[value]
    if isinstance(value, dict):  # {"+": ["filter", 10]} or {"-": [...]}
        for op, sign in (("+", 1), ("-", -1)):
            if op in value and isinstance(value[op], list) and len(value[op]) == 2:
                base, offset = value[op]
                return _priority(base) + sign * _priority(offset)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _concat_set_of(obj: dict[str, Any], types: list[Any], notes: list[str]) -> NamedSet | None:
    parts = []
    for t in types:
        if not isinstance(t, str) or t not in SET_TYPE_FIELDS:
            notes.append(f"set {obj.get('name')}: type {t} in a concatenation is not modelled")
            return None
        fld, fam = SET_TYPE_FIELDS[t]
        parts.append(Match(fld, family=fam))
    elems = obj.get("elem", [])
    if not isinstance(elems, list):
        elems = [elems]
    try:
        elements = tuple(_concat_element(tuple(parts), e) for e in elems)
    except (_Opaque, ValueError, KeyError, TypeError) as exc:
        notes.append(f"set {obj.get('name')}: an element is not modelled ({exc})")
        return None
    flags = obj.get("flags", [])
    return NamedSet(
        obj["name"],
        " . ".join(types),
        flags=tuple(flags) if isinstance(flags, list) else (str(flags),),
        elements=elements,
    )


def _set_of(obj: dict[str, Any], notes: list[str]) -> NamedSet | None:
    stype = obj.get("type")
    if isinstance(stype, list):
        return _concat_set_of(obj, stype, notes)
    if not isinstance(stype, str):
        notes.append(f"set {obj.get('name')}: type {stype} is not modelled")
        return None
    fld = {
        "ipv4_addr": Field.SADDR,
        "ipv6_addr": Field.SADDR,
        "inet_service": Field.DPORT,
        "inet_proto": Field.L4PROTO,
        "ifname": Field.IIF,
        "ct_state": Field.CT_STATE,
    }.get(stype)
    if fld is None:
        notes.append(f"set {obj.get('name')}: type {stype} is not modelled")
        return None
    elems = obj.get("elem", [])
    if not isinstance(elems, list):
        elems = [elems]
    ranges: list[Interval] = []
    names: list[str] = []
    fam = 6 if stype == "ipv6_addr" else 4
    for e in elems:
        r, n, _ = _scalar_intervals(fld, e, fam)
        ranges.extend(r)
        names.extend(n)
    flags = obj.get("flags", [])
    return NamedSet(
        obj["name"],
        stype,
        merge_intervals(ranges),
        tuple(names),
        tuple(flags) if isinstance(flags, list) else (str(flags),),
    )


def _updated_sets(items: list[Any]) -> set[tuple[str, str, str]]:
    """(family, table, set) of every set a rule adds to, updates or deletes from."""
    out: set[tuple[str, str, str]] = set()
    for item in items:
        rule = item.get("rule") if isinstance(item, dict) else None
        if not isinstance(rule, dict):
            continue
        todo = list(rule.get("expr", []) or [])
        seen = 0
        while todo and seen < 10_000:
            seen += 1
            node = todo.pop()
            if isinstance(node, list):
                todo.extend(node)
            elif isinstance(node, dict):
                for key, val in node.items():
                    if (
                        key in ("set", "map")
                        and isinstance(val, dict)
                        and isinstance(val.get("set"), str)
                        and val.get("op") in ("add", "update", "delete")
                    ):
                        out.add((str(rule.get("family")), str(rule.get("table")), val["set"].lstrip("@")))
                    todo.append(val)
    return out


def import_nft_json(document: dict[str, Any] | str, *, source: str = "nft -j list ruleset") -> Ruleset:
    """Build the model from `nft -j list ruleset` output (a dict or its JSON text)."""
    import json

    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as exc:
            raise UsageError(f"invalid nft JSON in {source}: {exc.msg} at line {exc.lineno}") from None
    assert isinstance(document, dict)
    items = document.get("nftables")
    if not isinstance(items, list):
        raise UsageError(f"invalid nft JSON in {source}: expected an object with an 'nftables' list")
    tables: dict[tuple[str, str], _TableBuilder] = {}
    notes: list[str] = []
    updated = _updated_sets(items)
    for item in items:
        kind = next(iter(item))
        obj = item[kind]
        if kind == "metainfo":
            continue
        key = (obj.get("family", ""), obj.get("table", obj.get("name", "")))
        if kind == "table":
            try:
                fam = Family(obj["family"])
            except ValueError:
                notes.append(f"table {obj['family']} {obj['name']}: family not modelled")
                continue
            tables[(obj["family"], obj["name"])] = _TableBuilder(fam, obj["name"])
            continue
        tb = tables.get(key)
        if tb is None:
            continue
        if kind == "set":
            named = _set_of(obj, notes)
            if named is not None:
                if (
                    (*key, named.name) in updated
                    or "timeout" in obj
                    or {"dynamic", "timeout"} & set(named.flags)
                ):
                    named = replace(named, dynamic=True)
                tb.sets[named.name] = named
        elif kind == "map":
            raw_flags = obj.get("flags", [])
            flags = set(raw_flags) if isinstance(raw_flags, list) else {str(raw_flags)}
            changing = {"dynamic", "timeout"} & flags or "timeout" in obj or (*key, obj["name"]) in updated
            if obj.get("map") != "verdict" and changing:
                # Its elements change at run time: a NAT through it stays an unknown rewrite.
                name = obj.get("name")
                notes.append(f"{tb.family} {tb.name}: map {name} changes at run time (not modelled)")
            else:
                elems = obj.get("elem", [])
                tb.maps[obj["name"]] = elems if isinstance(elems, list) else [elems]
        elif kind == "chain":
            hook = None
            if "hook" in obj:
                try:
                    hook = Hook(obj["hook"])
                except ValueError:
                    notes.append(f"{tb.family} {tb.name} {obj['name']}: hook {obj['hook']} not modelled")
            tb.chains[obj["name"]] = Chain(
                obj["name"],
                (),
                hook,
                ChainType(obj.get("type", "filter"))
                if obj.get("type") in ("filter", "nat", "route")
                else ChainType.FILTER,
                _priority(obj.get("prio", 0)),
                FilterAction.DROP if obj.get("policy") == "drop" else FilterAction.ACCEPT,
                obj.get("handle"),
            )
            tb.rules.setdefault(obj["name"], [])
        elif kind == "rule":
            tb.rules.setdefault(obj["chain"], []).extend(_rules_of(obj, tb, notes))
    out: list[Table] = []
    for tb in tables.values():
        chains = tuple(
            Chain(c.name, tuple(tb.rules.get(c.name, [])), c.hook, c.type, c.priority, c.policy, c.handle)
            for c in tb.chains.values()
        )
        out.append(Table(tb.family, tb.name, chains, tuple(tb.sets.values())))
    return Ruleset(tuple(out), source, tuple(notes))


# --- export ---------------------------------------------------------------------------------

# Statements nft's JSON holds that change nothing a later rule or the kernel decides on.
_NFT_STRING_MAX = 127  # NFT_USERDATA_MAXLEN leaves 128 bytes for a comment, with the NUL


class _Unrenderable(Exception):
    """This rule cannot be written as nft text faithfully; the message says why."""


def nft_string(text: str) -> str:
    """A quoted nft string. nft's scanner has no escape for `"` inside a string, so a
    string holding one (or a newline) cannot be written."""
    if '"' in text or "\n" in text or "\\" in text:
        raise _Unrenderable(f"the string {text[:40]!r} holds a quote, backslash or newline")
    return f'"{text}"'


# Words nft 1.0.6's parser takes as keywords where a chain name is expected (`chain log`,
# `jump counter` are syntax errors): every word of nft(8) tried with `nft -c` as a chain name.
# nft scripts cannot quote a chain name either, so such a chain is renamed.
_NFT_RESERVED = frozenset(
    [
        "accept",
        "add",
        "ah",
        "all",
        "and",
        "arp",
        "bridge",
        "cgroup",
        "chain",
        "comment",
        "comp",
        "constant",
        "continue",
        "counter",
        "cpu",
        "create",
        "ct",
        "day",
        "dccp",
        "define",
        "delete",
        "describe",
        "device",
        "devices",
        "dnat",
        "drop",
        "dst",
        "dup",
        "dynamic",
        "ecn",
        "element",
        "elements",
        "esp",
        "ether",
        "exists",
        "expires",
        "exthdr",
        "fib",
        "flags",
        "flow",
        "flowtable",
        "flush",
        "frag",
        "fwd",
        "get",
        "goto",
        "handle",
        "hbh",
        "hook",
        "hour",
        "ibrname",
        "icmp",
        "icmpv6",
        "igmp",
        "iif",
        "iifgroup",
        "iifname",
        "iiftype",
        "include",
        "index",
        "inet",
        "insert",
        "interval",
        "ip",
        "ip6",
        "ipsec",
        "jhash",
        "jump",
        "limit",
        "list",
        "log",
        "lt",
        "map",
        "mark",
        "masquerade",
        "meta",
        "mh",
        "missing",
        "monitor",
        "ne",
        "netdev",
        "nftrace",
        "not",
        "notrack",
        "numgen",
        "obrname",
        "offload",
        "oif",
        "oifgroup",
        "oifname",
        "oiftype",
        "or",
        "osf",
        "pkttype",
        "policy",
        "position",
        "priority",
        "queue",
        "quota",
        "random",
        "redefine",
        "redirect",
        "reject",
        "rename",
        "replace",
        "reset",
        "return",
        "rt",
        "rtclassid",
        "rule",
        "ruleset",
        "sctp",
        "secmark",
        "set",
        "size",
        "skgid",
        "skuid",
        "snat",
        "socket",
        "srh",
        "symhash",
        "synproxy",
        "table",
        "tcp",
        "th",
        "time",
        "timeout",
        "tproxy",
        "type",
        "typeof",
        "udp",
        "udplite",
        "undefine",
        "update",
        "vlan",
        "vmap",
        "xt",
    ]
)


def nft_name(name: str) -> str | None:
    """The name as nft's scanner reads it (one bare identifier), or None when it cannot be one."""
    import re

    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", name) and name not in _NFT_RESERVED:
        return name
    return None


def _chain_names(table: Table, notes: list[str]) -> dict[str, str]:
    """The nft name of each chain: itself, or a renamed one when nft cannot read it bare."""
    import hashlib
    import re

    taken = {c.name for c in table.chains}
    out: dict[str, str] = {}
    for c in table.chains:
        bare = nft_name(c.name)
        if bare is not None:
            out[c.name] = bare
            continue
        stem = re.sub(r"[^A-Za-z0-9_]", "_", c.name)
        new = f"c_{stem[:40]}_{hashlib.sha256(c.name.encode()).hexdigest()[:6]}"
        while new in taken:
            new += "x"
        taken.add(new)
        out[c.name] = new
        notes.append(f"{table} {c.name!r}: renamed {new} (nft cannot read that chain name)")
    return out


def _free_text(text: str, what: str, notes: list[str]) -> str:
    """A comment or log prefix nft can hold: no double quote, backslash or newline, at most
    127 bytes. Neither changes a verdict, so editing one keeps the rule faithful."""
    clean = " ".join(text.replace('"', "'").replace("\\", "/").split())
    if len(clean.encode()) > _NFT_STRING_MAX:
        clean = clean.encode()[:_NFT_STRING_MAX].decode(errors="ignore")
    if clean != text:
        notes.append(f"{what} {text[:40]!r} written as {clean[:40]!r} (nft strings: no quotes, 127 bytes)")
    return f'"{clean}"'


_LIMIT_UNITS = {"s": "second", "m": "minute", "h": "hour", "d": "day"}
_ADDRTYPES = {
    "UNSPEC", "UNICAST", "LOCAL", "BROADCAST", "ANYCAST", "MULTICAST", "BLACKHOLE",
    "UNREACHABLE", "PROHIBIT", "THROW", "NAT", "XRESOLVE",
}  # fmt: skip


def iptables_match_as_nft(text: str) -> str | None:
    """nft text for an iptables match portkit keeps as written (`-m addrtype --dst-type LOCAL`
    is `fib daddr type local`), for the few modules with an exact nft equivalent; else None."""
    import shlex

    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if len(words) < 2 or words[0] != "-m":
        return None
    module, args = words[1], words[2:]
    neg = "!= " if args[:1] == ["!"] else ""
    if neg:
        args = args[1:]
    if module == "addrtype" and len(args) == 2 and args[0] in ("--dst-type", "--src-type"):
        types = args[1].split(",")
        if not all(t in _ADDRTYPES for t in types) or (neg and len(types) > 1):
            return None
        value = types[0].lower() if len(types) == 1 else "{ " + ", ".join(t.lower() for t in types) + " }"
        return f"fib {'daddr' if args[0] == '--dst-type' else 'saddr'} type {neg}{value}"
    if module in ("mark", "connmark") and len(args) == 2 and args[0] == "--mark":
        key = "meta mark" if module == "mark" else "ct mark"
        value, _, mask = args[1].partition("/")
        try:
            number, bits = int(value, 0), int(mask, 0) if mask else None
        except ValueError:
            return None
        if bits is None or bits == 0xFFFFFFFF:
            return f"{key} {neg}{number:#x}"
        return f"{key} & {bits:#x} {'!=' if neg else '=='} {number:#x}"
    if module == "limit" and not neg:
        rate, burst = "3/hour", 5  # iptables' defaults
        while args:
            if args[0] == "--limit" and len(args) > 1:
                rate, args = args[1], args[2:]
            elif args[0] == "--limit-burst" and len(args) > 1 and args[1].isdigit():
                burst, args = int(args[1]), args[2:]
            else:
                return None
        count, _, unit = rate.partition("/")
        if not count.isdigit() or not unit or unit[0] not in _LIMIT_UNITS:
            return None
        return f"limit rate {count}/{_LIMIT_UNITS[unit[0]]} burst {burst} packets"
    return None


_MARK_OPS = {"--set-xmark", "--or-mark", "--and-mark", "--xor-mark"}


def iptables_target_as_nft(opaque: tuple[str, ...]) -> str | None:
    """nft text for an iptables target portkit keeps as written and that only changes the packet
    or its connection, for the ones with an exact nft statement: MARK and CONNMARK arithmetic
    (`--set-xmark V/M` sets mark = (mark & ~M) ^ V), CT --notrack and NOTRACK; else None."""
    if not opaque or not opaque[0].startswith("-j "):
        return None
    target = opaque[0][3:].strip()
    words = [w for o in opaque[1:] for w in o.split()]
    if (target, words) in (("NOTRACK", []), ("CT", ["--notrack"])):
        return "notrack"
    if target not in ("MARK", "CONNMARK") or len(words) != 2 or words[0] not in _MARK_OPS:
        return None
    key = "meta mark" if target == "MARK" else "ct mark"
    value_text, _, mask_text = words[1].partition("/")
    try:
        value = int(value_text, 0)
        mask = int(mask_text, 0) if mask_text else 0xFFFFFFFF
    except ValueError:
        return None
    if not (0 <= value <= 0xFFFFFFFF and 0 <= mask <= 0xFFFFFFFF):
        return None
    if words[0] == "--set-xmark":
        if mask == 0xFFFFFFFF:
            return f"{key} set {value:#x}"
        return f"{key} set {key} and {~mask & 0xFFFFFFFF:#x} xor {value:#x}"
    if mask_text:
        return None  # --or-mark and friends take a value only
    op = {"--or-mark": "or", "--and-mark": "and", "--xor-mark": "xor"}[words[0]]
    return f"{key} set {key} {op} {value:#x}"


def opaque_match_as_nft(text: str) -> str | None:
    """nft text for a match portkit does not model: nft's own JSON written back in nft syntax
    (which `nft -c` loads as the same JSON, see _nftexpr), or an iptables match with an exact
    nft equivalent; None when there is no faithful text."""
    if text.lstrip().startswith("{"):
        from portkit.firewall._nftexpr import render_json_text

        if '"xt"' in text:
            return None  # iptables-nft's compatibility matches have no nft syntax

        rendered = render_json_text(text)
        return None if not rendered or '{"' in rendered or rendered == text else rendered
    return iptables_match_as_nft(text)


def _rule_text(rule: FilterRule, family: Family, notes: list[str], chain_names: dict[str, str]) -> str:
    # Opaque matches keep their place among the matches; statements with side effects
    # (rule.opaque) lose their place relative to the matches in the model, so they are refused.
    opaque = [
        m.text for m in rule.matches if m.field is Field.OPAQUE and opaque_match_as_nft(m.text) is None
    ]
    if opaque:
        raise _Unrenderable(f"match {'; '.join(opaque)} is not modelled")
    # An iptables target is the rule's last word: its nft statement goes after the matches.
    statement = iptables_target_as_nft(rule.opaque) if rule.action is FilterAction.CONTINUE else None
    if rule.opaque and statement is None:
        raise _Unrenderable(f"statements {'; '.join(rule.opaque)} are not modelled")
    for m in rule.matches:
        valueless = m.field in (Field.OPAQUE, Field.REVERSE_PATH)
        if not m.set_name and not m.names and not m.ranges and not m.elements and not valueless:
            raise _Unrenderable(f"an empty set in {m.field}")
        if m.field in (Field.IIF, Field.OIF):
            for n in m.names:
                nft_string(n)
        if m.field is Field.REVERSE_PATH and "accept-local" in m.names:
            raise _Unrenderable(f"nft's fib has no accept-local flag ({m})")
    parts = [
        (opaque_match_as_nft(m.text) or "") if m.field is Field.OPAQUE else str(m) for m in rule.matches
    ]
    if "<opaque>" in parts:
        raise _Unrenderable("a match portkit has no nft text for")
    if rule.counter:
        parts.append("counter")
    if rule.log is not None:
        parts.append(f"log prefix {_free_text(rule.log, 'log prefix', notes)}" if rule.log else "log")
    if statement:
        parts.append(statement)
    act = rule.action
    if act is FilterAction.REJECT:
        rej = rule.reject or Reject()
        if rej.type is RejectType.ICMPX and family in (Family.IP, Family.IP6):
            rej = Reject(
                RejectType.ICMP if family is Family.IP else RejectType.ICMPV6,
                rej.answer(4 if family is Family.IP else 6).split("-", 1)[1],
            )
        parts.append(str(rej))
    elif act in (FilterAction.DNAT, FilterAction.SNAT, FilterAction.REDIRECT, FilterAction.MASQUERADE) and (
        rule.nat is not None and rule.nat.unknown
    ):
        # The importer kept the verdict of a NAT to a map or range, not the whole rewrite:
        # writing the part it kept would send the packets somewhere else.
        raise _Unrenderable(f"{act.value} to a map or range cannot be written back")
    elif act in (FilterAction.DNAT, FilterAction.SNAT):
        nat = rule.nat or NatTarget()
        if not nat.address:
            # The importer keeps the verdict of a NAT to a map or range but not the rewrite.
            raise _Unrenderable(f"{act.value} without a known target address (a map or range?)")
        fam = ""
        if family is Family.INET:
            fam = "ip6 " if ":" in nat.address else "ip "
        parts.append(f"{act.value} {fam}to {nat}")
    elif act is FilterAction.REDIRECT:
        if rule.nat and rule.nat.address:
            raise _Unrenderable(f"redirect to {rule.nat} names an address")
        parts.append(f"redirect to :{rule.nat.port}" if rule.nat and rule.nat.port else "redirect")
    elif act is FilterAction.MASQUERADE:
        if rule.nat and (rule.nat.address or rule.nat.port is not None):
            raise _Unrenderable(f"masquerade to {rule.nat} cannot be written")
        parts.append("masquerade")
    elif act in (FilterAction.JUMP, FilterAction.GOTO):
        parts.append(f"{act.value} {chain_names.get(rule.target, rule.target)}")
    elif act is not FilterAction.CONTINUE:
        parts.append(rule.verdict_text())
    if rule.comment:
        parts.append(f"comment {_free_text(rule.comment, 'comment', notes)}")
    return " ".join(parts)


def render_nft(ruleset: Ruleset, *, flush: bool = True) -> Rendering:
    """An `nft -f` script for the model.

    A rule that cannot be written faithfully is left out whole, never without one of its
    matches; the Rendering says whether that only narrows (see `portkit.firewall._export`)."""
    policy = OmissionPolicy(ruleset)
    omitted: list[Omission] = []
    notes: list[str] = []
    lines: list[str] = []
    if flush:
        lines.append("flush ruleset")
    for t in ruleset.tables:
        table_name = nft_name(t.name)
        if table_name is None:
            omitted.append(Omission(str(t), "", "nft cannot read that table name", False))
            continue
        chain_names = _chain_names(t, notes)
        lines.append(f"table {t.family} {table_name} {{")
        for s in t.sets:
            set_name = nft_name(s.name)
            if set_name is None:
                omitted.append(Omission(f"{t} set {s.name}", "", "nft cannot read that set name", False))
                continue
            lines.append(f"\tset {set_name} {{")
            lines.append(f"\t\ttype {s.type}")
            flags = list(s.flags)
            spans = any(lo != hi for lo, hi in s.ranges) or any(
                isinstance(part, tuple) and part[0] != part[1] for e in s.elements for part in e
            )
            if spans and "interval" not in flags:
                flags.append("interval")  # nft refuses range elements in a set without it
            if flags:
                lines.append(f"\t\tflags {', '.join(flags)}")
            elems = s.to_json()["elements"]
            if s.type == "ifname":
                elems = [nft_string(e) for e in elems]
            if elems:
                lines.append(f"\t\telements = {{ {', '.join(elems)} }}")
            lines.append("\t}")
        for c in t.chains:
            if c.hook is Hook.INGRESS:
                # The model does not keep an ingress chain's device, without which nft refuses it.
                omitted.append(omission_of_chain(t, c, "the ingress chain's device is not known"))
                continue
            lines.append(f"\tchain {chain_names[c.name]} {{")
            if c.hook is not None:
                lines.append(f"\t\ttype {c.type} hook {c.hook} priority {c.priority}; policy {c.policy};")
            for i, r in enumerate(c.rules):
                try:
                    said: list[str] = []
                    lines.append("\t\t" + _rule_text(r, t.family, said, chain_names))
                    notes.extend(f"{t} {c.name} #{i + 1}: {n}" for n in said)
                except _Unrenderable as exc:
                    omitted.append(policy.omit(t, c, i, r, str(exc)))
            lines.append("\t}")
        lines.append("}")
    return Rendering("\n".join(lines) + "\n", tuple(notes), tuple(omitted))
