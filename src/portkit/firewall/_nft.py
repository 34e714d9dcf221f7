"""nftables in and out: `nft -j list ruleset` JSON -> model, and model -> an `nft -f` script.

The JSON is what the kernel holds, already parsed by nft itself, so it is the importer of
record; nft scripts are read by loading them into a throwaway network namespace and
listing them back as JSON (see `_live.py`). Verdict maps are expanded into one rule per
key, which is faithful because map keys never overlap.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._export import Omission, OmissionPolicy, Rendering, omission_of_chain
from portkit.firewall._model import (
    ICMP_TYPES,
    ICMPV6_TYPES,
    IPPROTO,
    PORT_PROTOS,
    Action,
    Chain,
    ChainType,
    Family,
    Field,
    Hook,
    Interval,
    Match,
    NamedSet,
    NatTarget,
    Reject,
    RejectType,
    Rule,
    Ruleset,
    Table,
    address_interval,
    normalize,
)

_PORT_PROTO = {"tcp": (6,), "udp": (17,), "sctp": (132,), "dccp": (33,), "udplite": (136,), "th": PORT_PROTOS}
_PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50, "srcnat": 100}


class _Opaque(Exception):
    """An expression portkit does not model; the caller keeps it as text."""


@dataclass
class _TableBuilder:
    family: Family
    name: str
    sets: dict[str, NamedSet] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)
    rules: dict[str, list[Rule]] = field(default_factory=dict)


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
    if fld in (Field.IIF, Field.OIF, Field.CT_STATE):
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
        table = ICMP_TYPES if family == 4 else ICMPV6_TYPES
        num = value if isinstance(value, int) else table.get(str(value))
        if num is None:
            raise _Opaque(f"icmp type {value!r}")
        return [(num, num)], [], family
    if fld is Field.ICMP_CODE:
        if isinstance(value, int):
            return [(value, value)], [], family
        raise _Opaque(f"icmp code {value!r}")
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
    return normalize(ranges), tuple(names), "", fam, exact


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
            return (Field.ICMP_TYPE if fld == "type" else Field.ICMP_CODE), fam, (1 if fam == 4 else 58,)
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
    raise _Opaque("left")


def _match(expr: dict[str, Any], table_family: Family, sets: dict[str, NamedSet]) -> Match:
    op = expr.get("op", "==")
    fld, fam, protos = _left_field(expr["left"], table_family)
    right = expr["right"]
    if op in ("<", ">", "<=", ">=") and isinstance(right, int):
        top = 255 if fld in (Field.L4PROTO, Field.ICMP_TYPE, Field.ICMP_CODE) else 65535
        lo, hi = {"<": (0, right - 1), "<=": (0, right), ">": (right + 1, top), ">=": (right, top)}[op]
        return Match(fld, ((lo, hi),), family=fam, protos=protos)
    if op not in ("==", "!=", "in"):
        raise _Opaque(f"operator {op}")
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
    "accept": Action.ACCEPT,
    "drop": Action.DROP,
    "return": Action.RETURN,
    "continue": Action.CONTINUE,
    "queue": Action.QUEUE,
}


def _verdict_fields(stmt: dict[str, Any], family: Family) -> dict[str, Any] | None:
    """Rule fields for a verdict-like statement, or None if it is not one."""
    key = next(iter(stmt))
    val = stmt[key]
    if key in _VERDICTS:
        return {"action": _VERDICTS[key]}
    if key in ("jump", "goto"):
        return {"action": Action.JUMP if key == "jump" else Action.GOTO, "target": val["target"]}
    if key == "reject":
        return {"action": Action.REJECT, "reject": _reject(val, family)}
    if key in ("dnat", "redirect", "snat", "masquerade"):
        val = val or {}
        addr = val.get("addr")
        if isinstance(addr, dict):
            addr = None  # a range or map of addresses: keep the verdict, lose the rewrite
        port = val.get("port")
        if isinstance(port, dict):
            port = None
        action = {
            "dnat": Action.DNAT,
            "redirect": Action.REDIRECT,
            "snat": Action.SNAT,
            "masquerade": Action.MASQUERADE,
        }[key]
        return {
            "action": action,
            "nat": NatTarget(str(addr) if addr else None, int(port) if port is not None else None),
        }
    return None


def _rules_of(obj: dict[str, Any], tb: _TableBuilder, notes: list[str]) -> list[Rule]:
    matches: list[Match] = []
    opaque: list[str] = []
    counter = False
    log: str | None = None
    fields: dict[str, Any] = {}
    vmap: list[tuple[Match, dict[str, Any]]] = []
    where = f"{tb.family} {tb.name} {obj.get('chain')} handle {obj.get('handle')}"
    for stmt in obj.get("expr", []):
        key = next(iter(stmt))
        val = stmt[key]
        if key == "match":
            try:
                matches.append(_match(val, tb.family, tb.sets))
            except (_Opaque, ValueError, KeyError, TypeError) as exc:
                matches.append(Match(Field.OPAQUE, text=_expr_text(stmt)))
                notes.append(f"{where}: cannot model match {_expr_text(stmt)} ({exc}); assumed to match")
        elif key == "counter":
            counter = True
        elif key == "log":
            log = (val or {}).get("prefix", "")
        elif key == "vmap":
            try:
                fld, fam, protos = _left_field(val["key"], tb.family)
                for k, verdict in val["data"]["set"]:
                    ranges, names, _, vfam = _values(fld, k, fam, tb.sets)
                    vf = _verdict_fields(verdict, tb.family)
                    if vf is None:
                        raise _Opaque("verdict")
                    vmap.append(
                        (
                            Match(
                                fld,
                                ranges,
                                names,
                                family=vfam if fld in (Field.SADDR, Field.DADDR) else fam,
                                protos=protos,
                            ),
                            vf,
                        )
                    )
            except (_Opaque, ValueError, KeyError, TypeError) as exc:
                matches.append(Match(Field.OPAQUE, text=_expr_text(stmt)))
                notes.append(f"{where}: cannot model verdict map ({exc})")
        elif key in ("limit", "quota", "xt") and (key != "xt" or val.get("type") == "match"):
            # Statements that can stop a packet from matching: kept, assumed to match.
            matches.append(Match(Field.OPAQUE, text=_expr_text(stmt)))
            notes.append(f"{where}: {key} {_expr_text(val)} is not modelled; assumed to match")
        elif key == "xt":
            opaque.append(_expr_text(stmt))
            notes.append(
                f"{where}: opaque iptables target {val.get('name')}: read this table "
                "from iptables-save to model it"
            )
        else:
            vf = _verdict_fields(stmt, tb.family)
            if vf is not None:
                fields.update(vf)
            else:
                opaque.append(_expr_text(stmt))
    base = {
        "counter": counter,
        "log": log,
        "comment": obj.get("comment", ""),
        "handle": obj.get("handle"),
        "opaque": tuple(opaque),
    }
    if vmap:
        return [Rule(matches=(*matches, m), **base, **vf) for m, vf in vmap]
    return [Rule(matches=tuple(matches), **base, **fields)]


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


def _set_of(obj: dict[str, Any], notes: list[str]) -> NamedSet | None:
    stype = obj.get("type")
    if not isinstance(stype, str):
        notes.append(f"set {obj.get('name')}: concatenated type {stype} is not modelled")
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
        normalize(ranges),
        tuple(names),
        tuple(flags) if isinstance(flags, list) else (str(flags),),
    )


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
                tb.sets[named.name] = named
        elif kind == "map":
            notes.append(f"{tb.family} {tb.name}: map {obj.get('name')} is not modelled")
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
                Action.DROP if obj.get("policy") == "drop" else Action.ACCEPT,
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


def _rule_text(rule: Rule, family: Family, notes: list[str], chain_names: dict[str, str]) -> str:
    opaque = [
        m.text for m in rule.matches if m.field is Field.OPAQUE and iptables_match_as_nft(m.text) is None
    ]
    if opaque:
        raise _Unrenderable(f"match {'; '.join(opaque)} is not modelled")
    if rule.opaque:
        raise _Unrenderable(f"statements {'; '.join(rule.opaque)} are not modelled")
    for m in rule.matches:
        if not m.set_name and not m.names and not m.ranges and m.field is not Field.OPAQUE:
            raise _Unrenderable(f"an empty set in {m.field}")
        if m.field in (Field.IIF, Field.OIF):
            for n in m.names:
                nft_string(n)
    parts = [
        (iptables_match_as_nft(m.text) or "") if m.field is Field.OPAQUE else str(m) for m in rule.matches
    ]
    if "<opaque>" in parts:
        raise _Unrenderable("a match portkit has no nft text for")
    if rule.counter:
        parts.append("counter")
    if rule.log is not None:
        parts.append(f"log prefix {_free_text(rule.log, 'log prefix', notes)}" if rule.log else "log")
    act = rule.action
    if act is Action.REJECT:
        rej = rule.reject or Reject()
        if rej.type is RejectType.ICMPX and family in (Family.IP, Family.IP6):
            rej = Reject(
                RejectType.ICMP if family is Family.IP else RejectType.ICMPV6,
                rej.answer(4 if family is Family.IP else 6).split("-", 1)[1],
            )
        parts.append(str(rej))
    elif act in (Action.DNAT, Action.SNAT):
        nat = rule.nat or NatTarget()
        if not nat.address:
            # The importer keeps the verdict of a NAT to a map or range but not the rewrite.
            raise _Unrenderable(f"{act.value} without a known target address (a map or range?)")
        fam = ""
        if family is Family.INET:
            fam = "ip6 " if ":" in nat.address else "ip "
        parts.append(f"{act.value} {fam}to {nat}")
    elif act is Action.REDIRECT:
        if rule.nat and rule.nat.address:
            raise _Unrenderable(f"redirect to {rule.nat} names an address")
        parts.append(f"redirect to :{rule.nat.port}" if rule.nat and rule.nat.port else "redirect")
    elif act is Action.MASQUERADE:
        if rule.nat and (rule.nat.address or rule.nat.port is not None):
            raise _Unrenderable(f"masquerade to {rule.nat} cannot be written")
        parts.append("masquerade")
    elif act in (Action.JUMP, Action.GOTO):
        parts.append(f"{act.value} {chain_names.get(rule.target, rule.target)}")
    elif act is not Action.CONTINUE:
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
            if s.flags:
                lines.append(f"\t\tflags {', '.join(s.flags)}")
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
