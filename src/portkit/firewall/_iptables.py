"""iptables in and out: `iptables-save` text (v4 and v6) -> model, and model -> `iptables-restore`.

iptables-save is also how portkit reads rules that iptables-nft put in the kernel: nft
shows their `conntrack`, `multiport`, `DNAT`... as opaque `xt` expressions, but
iptables-save decodes them. Built-in chains become base chains with the priority
iptables-nft gives them, so iptables rules and native nft tables order correctly.
"""

from __future__ import annotations

import itertools
import shlex
from dataclasses import replace
from typing import Any

from portkit.errors import UsageError
from portkit.firewall._export import Omission, OmissionPolicy, Rendering, omission_of_chain
from portkit.firewall._model import (
    ICMP_TYPES,
    ICMPV6_TYPES,
    IPPROTO,
    IPPROTO_NAMES,
    Action,
    Chain,
    ChainType,
    Family,
    Field,
    Hook,
    Interval,
    Match,
    NatTarget,
    Reject,
    RejectType,
    Rule,
    Ruleset,
    Table,
    address_interval,
    normalize,
    render_address_interval,
)

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
_STATES = {
    "NEW": "new",
    "ESTABLISHED": "established",
    "RELATED": "related",
    "INVALID": "invalid",
    "UNTRACKED": "untracked",
}


def _ports(text: str) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for part in text.split(","):
        lo, sep, hi = part.partition(":")
        a = int(lo) if lo else 0
        b = (int(hi) if hi else 65535) if sep else a
        out.append((a, b))
    return normalize(out)


def _addresses(text: str, version: int) -> tuple[Interval, ...]:
    out: list[Interval] = []
    for part in text.split(","):
        ver, iv = address_interval(part)
        if ver != version:
            raise UsageError(f"invalid address {part!r} in an IPv{version} ruleset")
        out.append(iv)
    return normalize(out)


class _RuleParser:
    """Parse the arguments of one `-A CHAIN ...` line."""

    def __init__(self, args: list[str], version: int, where: str, notes: list[str], chains: set[str]) -> None:
        self.args = args
        self.chains = chains
        self.i = 0
        self.version = version
        self.where = where
        self.notes = notes
        self.matches: list[Match] = []
        self.proto: tuple[int, ...] = ()
        self.fields: dict[str, Any] = {"action": Action.CONTINUE}
        self.module = ""
        self.opaque_module: list[str] = []

    def take(self) -> str:
        if self.i >= len(self.args):
            raise UsageError(f"invalid iptables rule at {self.where}: an option lacks its value")
        v = self.args[self.i]
        self.i += 1
        return v

    def parse(self) -> Rule:
        negate = False
        while self.i < len(self.args):
            a = self.take()
            if a == "!":
                negate = True
                continue
            self.option(a, negate)
            negate = False
        self.flush_opaque()
        return Rule(matches=tuple(self.matches), **self.fields)

    def flush_opaque(self) -> None:
        if self.opaque_module:
            text = " ".join(self.opaque_module)
            holds, why = assume_opaque(text)
            # negate=True on an opaque match means "assumed not to match".
            self.matches.append(Match(Field.OPAQUE, text=text, negate=not holds))
            self.notes.append(
                f"{self.where}: match '{text}' is not modelled; assumed to "
                f"{'match' if holds else 'not match'} ({why})"
            )
            self.opaque_module = []

    def option(self, a: str, negate: bool) -> None:
        v6 = self.version == 6
        if a in ("-p", "--protocol"):
            name = self.take().lower()
            num = int(name) if name.isdigit() else IPPROTO.get(name)
            if name == "all":
                return
            if num is None:
                raise UsageError(f"invalid protocol {name!r} at {self.where}")
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
        elif a == "-m" or a == "--match":
            self.flush_opaque()
            self.module = self.take()
            if self.module not in (
                "tcp",
                "udp",
                "sctp",
                "multiport",
                "conntrack",
                "state",
                "comment",
                "icmp",
                "icmp6",
                "iprange",
            ):
                self.opaque_module = ["-m", self.module]
        elif a in ("-j", "--jump", "-g", "--goto"):
            self.flush_opaque()
            self.target(self.take(), goto=a in ("-g", "--goto"))
        elif self.opaque_module and a.startswith("--"):
            self.opaque_module.append(("! " if negate else "") + a)
            while (
                self.i < len(self.args) and not self.args[self.i].startswith("-") and self.args[self.i] != "!"
            ):
                self.opaque_module.append(self.take())
        elif a in (
            "--dport",
            "--destination-port",
            "--sport",
            "--source-port",
            "--dports",
            "--sports",
            "--destination-ports",
            "--source-ports",
        ):
            fld = Field.SPORT if "sport" in a or "source" in a else Field.DPORT
            self.matches.append(Match(fld, _ports(self.take()), negate=negate, protos=self.proto))
        elif a in ("--ctstate", "--state"):
            states = tuple(_STATES[s] for s in self.take().split(",") if s in _STATES)
            self.matches.append(Match(Field.CT_STATE, names=states, negate=negate))
        elif a in ("--icmp-type", "--icmpv6-type"):
            raw = self.take()
            typ, _, code = raw.partition("/")
            table = ICMPV6_TYPES if v6 else ICMP_TYPES
            alias = {
                "echo-request": "echo-request",
                "ping": "echo-request",
                "pong": "echo-reply",
                "neighbour-solicitation": "nd-neighbor-solicit",
                "neighbor-solicitation": "nd-neighbor-solicit",
                "neighbor-advertisement": "nd-neighbor-advert",
                "neighbour-advertisement": "nd-neighbor-advert",
                "router-solicitation": "nd-router-solicit" if v6 else "router-solicitation",
                "router-advertisement": "nd-router-advert" if v6 else "router-advertisement",
            }
            typ = alias.get(typ, typ)
            if typ == "any":
                return
            num = int(typ) if typ.isdigit() else table.get(typ)
            fam = 6 if v6 else 4
            proto = (58,) if v6 else (1,)
            if num is None:
                self.matches.append(Match(Field.OPAQUE, text=f"--icmp-type {raw}"))
                self.notes.append(f"{self.where}: ICMP type {raw!r} is not modelled; assumed to match")
                return
            self.matches.append(
                Match(Field.ICMP_TYPE, ((num, num),), negate=negate, family=fam, protos=proto)
            )
            if code:
                c = int(code)
                self.matches.append(
                    Match(Field.ICMP_CODE, ((c, c),), negate=negate, family=fam, protos=proto)
                )
        elif a in ("--src-range", "--dst-range"):
            fld = Field.SADDR if a == "--src-range" else Field.DADDR
            self.matches.append(
                Match(fld, _addresses(self.take(), self.version), negate=negate, family=self.version)
            )
        elif a == "--comment":
            self.fields["comment"] = self.take()
        elif a == "--reject-with":
            kind = self.take()
            rt, code = _REJECT_IN.get(kind, (RejectType.ICMPV6 if v6 else RejectType.ICMP, kind))
            self.fields["reject"] = Reject(rt, code)
        elif a in ("--to-destination", "--to-ports", "--to-source", "--to"):
            self.fields["nat"] = _nat_target(self.take(), a == "--to-ports")
        elif a == "--log-prefix":
            self.fields["log"] = self.take().strip()
        elif a in (
            "--log-level",
            "--log-tcp-options",
            "--log-ip-options",
            "--log-uid",
            "--random",
            "--persistent",
            "--fully-random",
            "--log-tcp-sequence",
        ):
            if self.i < len(self.args) and not self.args[self.i].startswith("-"):
                self.take()
        elif a in ("-c", "--set-counters"):
            self.take()
            self.take()
        else:
            # An option of a target or match portkit does not model (e.g. --set-mark): keep it.
            value = self.take() if self.i < len(self.args) and not self.args[self.i].startswith("-") else ""
            self.fields["opaque"] = (*self.fields.get("opaque", ()), f"{a} {value}".strip())

    def target(self, name: str, *, goto: bool) -> None:
        simple = {
            "ACCEPT": Action.ACCEPT,
            "DROP": Action.DROP,
            "RETURN": Action.RETURN,
            "REJECT": Action.REJECT,
            "DNAT": Action.DNAT,
            "SNAT": Action.SNAT,
            "MASQUERADE": Action.MASQUERADE,
            "REDIRECT": Action.REDIRECT,
            "QUEUE": Action.QUEUE,
            "NFQUEUE": Action.QUEUE,
        }
        if name in simple:
            self.fields["action"] = simple[name]
            if name == "REJECT":
                self.fields.setdefault(
                    "reject",
                    Reject(RejectType.ICMPV6 if self.version == 6 else RejectType.ICMP, "port-unreachable"),
                )
        elif name == "LOG":
            self.fields["log"] = self.fields.get("log", "")
        elif name.isupper() and name not in self.chains:
            # Targets like MARK, CT, TCPMSS, NOTRACK change the packet, not the verdict.
            self.fields["opaque"] = (*self.fields.get("opaque", ()), f"-j {name}")
        else:
            self.fields["action"] = Action.GOTO if goto else Action.JUMP
            self.fields["target"] = name


# What an ordinary packet does with a match portkit cannot evaluate: (matches?, why).
_ASSUMPTIONS: tuple[tuple[str, bool, str], ...] = (
    ("-m addrtype --dst-type LOCAL", True, "traffic for this host is addressed to a local address"),
    ("-m addrtype ! --dst-type LOCAL", False, "traffic for this host is addressed to a local address"),
    ("-m addrtype", False, "an ordinary unicast packet is not broadcast, multicast or otherwise special"),
    ("-m limit", True, "below the rate limit"),
    ("-m hashlimit", True, "below the rate limit"),
    ("-m rt", False, "ordinary packets carry no routing header"),
    ("-m hl", False, "ordinary packets do not have that hop limit"),
    ("-m ttl", False, "ordinary packets do not have that TTL"),
    ("-m recent --set", True, "--set only records the source"),
    ("-m recent", False, "the source is not in the recent list"),
    ("-m mark", False, "packets are not marked"),
    ("-m connmark", False, "connections are not marked"),
    ("-m set", False, "the address is not in the ipset"),
)


def assume_opaque(text: str) -> tuple[bool, str]:
    """Whether an ordinary packet would satisfy a match portkit cannot evaluate, and why."""
    for prefix, holds, why in _ASSUMPTIONS:
        if text.startswith(prefix):
            return holds, why
    return True, "unknown match; the verdict may differ"


def _nat_target(text: str, ports_only: bool) -> NatTarget:
    if ports_only:
        return NatTarget(None, int(text.split("-")[0].split(":")[0]))
    if text.startswith("["):
        addr, _, port = text[1:].partition("]:")
        return NatTarget(addr, int(port.split("-")[0]) if port else None)
    if text.count(":") == 1:
        addr, _, port = text.partition(":")
        return NatTarget(addr.split("-")[0] or None, int(port.split("-")[0]))
    return NatTarget(text.split("-")[0], None)


def import_iptables_save(text: str, *, version: int = 4, source: str = "iptables-save") -> Ruleset:
    """Build the model from `iptables-save` (version=4) or `ip6tables-save` (version=6) text."""
    family = Family.IP if version == 4 else Family.IP6
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
            name = parts[0]
            builtin = _BUILTIN.get(table_name, {}).get(name)
            hook, prio = builtin if builtin else (None, 0)
            ctype = ChainType.NAT if table_name == "nat" else ChainType.FILTER
            policy = Action.DROP if len(parts) > 1 and parts[1] == "DROP" else Action.ACCEPT
            chains[name] = {"rules": [], "hook": hook, "type": ctype, "prio": prio, "policy": policy}
            order.append(name)
        elif line.startswith("-A ") or line.startswith("-I "):
            if not table_name:
                raise UsageError(f"invalid iptables-save text at {where}: a rule outside a *table section")
            try:
                args = shlex.split(line)
            except ValueError as exc:
                raise UsageError(f"invalid iptables rule at {where}: {exc}") from None
            chain = args[1]
            if chain not in chains:
                chains[chain] = {
                    "rules": [],
                    "hook": None,
                    "type": ChainType.FILTER,
                    "prio": 0,
                    "policy": Action.ACCEPT,
                }
                order.append(chain)
            try:
                rule = _RuleParser(args[2:], version, where, notes, user_chains).parse()
            except (ValueError, KeyError) as exc:
                if isinstance(exc, UsageError):
                    raise
                raise UsageError(f"invalid iptables rule at {where}: {exc}") from None
            chains[chain]["rules"].append(replace(rule, line=lineno))
        else:
            raise UsageError(
                f"invalid iptables-save text at {where}: {line[:60]!r} "
                "(expected *table, :CHAIN POLICY, -A CHAIN ... or COMMIT)"
            )
    finish()
    return Ruleset(tuple(tables), source, tuple(notes))


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


def _rule_variants(
    rule: Rule, version: int, hooks: set[Hook], chain_names: dict[str, str], notes: list[str], where: str
) -> list[list[str]] | None:
    """iptables argument lists for one rule (several when a set must be split), or None when
    the rule never applies to this IP version. Raises _Unrenderable rather than drop a match."""
    rej = rule.reject if rule.action is Action.REJECT else None
    if rej and rej.type in (RejectType.ICMP, RejectType.ICMPV6) and not rej.applies_to(version, 0):
        return None  # nft's `reject with icmp` only hits IPv4 packets, `icmpv6` only IPv6 ones
    nat_to = rule.nat.address if rule.nat and rule.action in (Action.DNAT, Action.SNAT) else None
    if nat_to and (":" in nat_to) != (version == 6):
        return None  # nft's `dnat ip to ...` only hits IPv4 packets, `dnat ip6 to` only IPv6 ones
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
            if not proto_num or proto_num not in (6, 17, 132, 33, 136):
                raise _Unrenderable(f"a port match without a single port protocol ({m})")
            texts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in m.ranges]
            if not texts:
                raise _Unrenderable(f"an empty port set ({m}) cannot be written for iptables")
            side = "--sport" if m.field is Field.SPORT else "--dport"
            name = IPPROTO_NAMES[proto_num]
            if len(texts) == 1:
                opts = [["-m", name, *neg, side, texts[0]]]
            elif (
                proto_num in (6, 17, 132, 33, 136)
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
        elif m.field is Field.ICMP_TYPE:
            flag = "--icmp-type" if version == 4 else "--icmpv6-type"
            proto = "icmp" if version == 4 else "ipv6-icmp"
            if proto_num and proto_num not in (1, 58):
                return None
            prefix = [] if proto_num in (1, 58) else ["-p", proto]
            proto_num = 1 if version == 4 else 58
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
            opts = [
                [*prefix, "-m", "icmp" if version == 4 else "icmp6", *neg, flag, f"{t}{code}"] for t in types
            ]
        elif m.field is Field.ICMP_CODE:
            if not any(x.field is Field.ICMP_TYPE for x in rule.matches):
                raise _Unrenderable(f"iptables matches an ICMP code only with its type ({m})")
            continue
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
    if rule.action is Action.REJECT and rule.reject and rule.reject.type is RejectType.TCP_RESET:
        if proto_num and proto_num != 6:
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
    if rule.log is not None and rule.action is not Action.CONTINUE:
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


def _target(rule: Rule, version: int, chain_names: dict[str, str]) -> list[str]:
    act = rule.action
    iptables_style = all(s.startswith("-") for s in rule.opaque)
    if rule.opaque and not (act is Action.CONTINUE and rule.log is None and iptables_style):
        raise _Unrenderable(f"statements {'; '.join(rule.opaque)} cannot be written for iptables")
    if act is Action.CONTINUE:
        if rule.opaque:
            try:
                return [w for s in rule.opaque for w in shlex.split(s)]
            except ValueError:
                raise _Unrenderable(f"statements {'; '.join(rule.opaque)} cannot be written") from None
        if rule.log is not None:
            return ["-j", "LOG"]
        return []
    if act in (Action.ACCEPT, Action.DROP, Action.RETURN, Action.MASQUERADE):
        if act is Action.MASQUERADE and rule.nat and (rule.nat.address or rule.nat.port is not None):
            raise _Unrenderable(f"masquerade to {rule.nat} cannot be written for iptables")
        return ["-j", act.value.upper()]
    if act is Action.QUEUE:
        return ["-j", "NFQUEUE"]  # queue 0, as nft's bare `queue`
    if act in (Action.JUMP, Action.GOTO):
        return ["-j" if act is Action.JUMP else "-g", chain_names.get(rule.target, rule.target)]
    if act is Action.REJECT:
        rej = rule.reject or Reject()
        name = reject_name(rej, version)
        if name is None:
            raise _Unrenderable(f"reject with {rej.answer(version)} has no iptables equivalent")
        return ["-j", "REJECT", "--reject-with", name]
    if act in (Action.DNAT, Action.SNAT, Action.REDIRECT):
        nat = rule.nat or NatTarget()
        if act is Action.REDIRECT:
            if nat.address:
                raise _Unrenderable(f"redirect to {nat} cannot be written for iptables")
            return ["-j", "REDIRECT"] + (["--to-ports", str(nat.port)] if nat.port is not None else [])
        if not nat.address:
            # The importer keeps the verdict of a NAT to a map or range but not the rewrite.
            raise _Unrenderable(f"{act.value} without a known target address (a map or range?)")
        flag = "--to-destination" if act is Action.DNAT else "--to-source"
        return ["-j", act.value.upper(), flag, str(nat)]
    raise _Unrenderable(f"action {act} has no iptables equivalent")


def _chain_names(tables: list[Table], notes: list[str]) -> list[dict[str, str]]:
    """Per table, the iptables name of each regular chain: at most 28 characters, never a
    target's name, and unique across tables (iptables has one namespace per table, nft one
    per nft table: two nft tables' `common` chains must not merge into one)."""
    import hashlib

    out: list[dict[str, str]] = []
    taken: set[str] = set()
    for t in tables:
        names: dict[str, str] = {}
        for c in t.chains:
            name = c.name
            if c.hook is not None:
                continue
            ok = (
                0 < len(name) <= CHAIN_NAME_MAX
                and name not in _TARGET_NAMES
                and name not in _HOOK_CHAIN.values()
                and not name.startswith("-")
                and all(ch in _SAFE_WORD and ch != "!" for ch in name)
                and name not in taken
            )
            if ok:
                names[name] = name
                taken.add(name)
                continue
            digest = hashlib.sha256(f"{t} {name}".encode()).hexdigest()[:8]
            stem = "".join(ch if ch in _SAFE_WORD and ch != "!" else "_" for ch in name).lstrip("-")
            new = f"{stem[: CHAIN_NAME_MAX - 9]}-{digest}".lstrip("-")
            while new in taken:
                new = new[:-1] + "x"
            taken.add(new)
            names[name] = new
            notes.append(
                f"{t} {name}: renamed {new} (iptables chain names: 1-28 letters, no target names, "
                "one per name across tables)"
            )
        out.append(names)
    return out


def reject_name(rej: Reject, version: int) -> str | None:
    """iptables' name for how a reject answers on this IP version (`icmp6-adm-prohibited`)."""
    if rej.type is RejectType.TCP_RESET:
        return "tcp-reset"
    code = rej.answer(version).split("-", 1)[1]
    return _REJECT_OUT.get((RejectType.ICMP if version == 4 else RejectType.ICMPV6, code))


def _rejects(args: list[str]) -> bool:
    return any(a == "-j" and b == "REJECT" for a, b in itertools.pairwise(args))


def _drop_instead(args: list[str]) -> list[str]:
    at = next(i for i, (a, b) in enumerate(itertools.pairwise(args)) if a == "-j" and b == "REJECT")
    return [*args[:at], "-j", "DROP"]


def _homes(table: Table, base_tables: dict[str, str]) -> dict[str, set[str]]:
    """Per regular chain, the iptables tables whose base chains reach it; a chain no base chain
    reaches goes to filter, and so does everything it calls."""
    calls = {c.name: {r.target for r in c.rules if r.target} for c in table.chains}
    out: dict[str, set[str]] = {}
    unreached = [c.name for c in table.chains if c.hook is None]
    roots = [(calls.get(base, set()), ipt_table) for base, ipt_table in base_tables.items()]
    for targets, ipt_table in [*roots, (set(), "")]:
        if not ipt_table:
            # Second pass: what no base chain reaches, with its callees, lives in filter.
            targets, ipt_table = {n for n in unreached if n not in out}, "filter"
        todo = list(targets)
        seen: set[str] = set()
        while todo:
            name = todo.pop()
            if name in seen or name in base_tables:
                continue
            seen.add(name)
            out.setdefault(name, set()).add(ipt_table)
            todo.extend(calls.get(name, ()))
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
                if c.hook is not None and (c.rules or c.policy is not Action.ACCEPT):
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
                    if _BUILTIN[name].get(_HOOK_CHAIN[hook], (hook, None))[1] == prio
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
    chain_names_of = _chain_names(tables, notes)
    for ti, t in enumerate(tables):
        chain_names = chain_names_of[ti]
        homes = _homes(t, {c.name: slot[(ti, c.name)] for c in t.chains if slot.get((ti, c.name))})
        for c in t.chains:
            if c.hook is not None:
                ipt_table = slot.get((ti, c.name), "")
                name = _HOOK_CHAIN.get(c.hook, "")
                if not ipt_table or not name:
                    if (ti, c.name) not in slot and (c.rules or c.policy is not Action.ACCEPT):
                        omitted.append(omission_of_chain(t, c, f"iptables has no {c.type} chain on {c.hook}"))
                    continue
                builtin = _BUILTIN.get(ipt_table, {})
                if name not in builtin:
                    omitted.append(omission_of_chain(t, c, f"iptables {ipt_table} has no {name} chain"))
                    continue
                expected = builtin[name][1]
                if c.priority != expected:
                    notes.append(
                        f"{t} {c.name}: priority {c.priority} becomes iptables {ipt_table} {name} "
                        f"(priority {expected})"
                    )
                if c.type is ChainType.NAT and c.policy is not Action.ACCEPT:
                    omitted.append(omission_of_chain(t, c, "a NAT chain's policy must be accept in iptables"))
                    continue
                chain_decl.setdefault(ipt_table, {})[name] = c.policy.value.upper()
            rules: list[list[str]] = []
            for i, r in enumerate(c.rules):
                where = f"{t} {c.name} #{i + 1}"
                try:
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
    out: list[str] = [f"# generated by portkit for ip{'6' if version == 6 else ''}tables-restore"]
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
