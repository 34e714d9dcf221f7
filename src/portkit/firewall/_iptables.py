"""iptables in and out: `iptables-save` text (v4 and v6) -> model, and model -> `iptables-restore`.

iptables-save is also how portkit reads rules that iptables-nft put in the kernel: nft
shows their `conntrack`, `multiport`, `DNAT`... as opaque `xt` expressions, but
iptables-save decodes them. Built-in chains become base chains with the priority
iptables-nft gives them, so iptables rules and native nft tables order correctly.
"""

from __future__ import annotations

import shlex
from dataclasses import replace
from typing import Any

from portkit.errors import UsageError
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
            if not parts:
                raise UsageError(f"invalid iptables-save text at {where}: ':' needs a chain name")
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


def _iface(name: str) -> str:
    return name[:-1] + "+" if name.endswith("*") else name


def _rule_variants(rule: Rule, version: int, where: str, problems: list[str]) -> list[list[str]] | None:
    """iptables argument lists for one rule (several when a set must be split), or None
    when the rule does not apply to this IP version."""
    variants: list[list[str]] = [[]]
    proto_num = 0
    for m in rule.matches:
        if m.family and m.family != version:
            return None
        if m.field is Field.NFPROTO:
            versions = {v for lo, hi in m.ranges for v in range(lo, hi + 1)}
            if (version in versions) == m.negate:
                return None
            continue
        neg = ["!"] if m.negate else []
        opts: list[list[str]] = []
        if m.field is Field.L4PROTO:
            if len(m.ranges) == 1 and m.ranges[0][0] == m.ranges[0][1]:
                proto_num = m.ranges[0][0]
                opts = [[*neg, "-p", IPPROTO_NAMES.get(proto_num, str(proto_num))]]
            elif not m.negate:
                opts = [
                    ["-p", IPPROTO_NAMES.get(p, str(p))] for lo, hi in m.ranges for p in range(lo, hi + 1)
                ]
            else:
                problems.append(f"{where}: negated protocol set cannot be written for iptables")
                return []
        elif m.field in (Field.SADDR, Field.DADDR):
            flag = "-s" if m.field is Field.SADDR else "-d"
            texts = [render_address_interval(version, r) for r in m.ranges]
            if m.negate and len(texts) > 1:
                problems.append(f"{where}: negated address set {m} cannot be written for iptables")
                return []
            opts = []
            for t in texts:
                if "-" in t:
                    opts.append(["-m", "iprange", *neg, "--src-range" if flag == "-s" else "--dst-range", t])
                else:
                    opts.append([*neg, flag, t])
        elif m.field in (Field.SPORT, Field.DPORT):
            if not proto_num and len(m.protos) == 1:
                proto_num = m.protos[0]
                variants = [[*v, "-p", IPPROTO_NAMES[proto_num]] for v in variants]
            if not proto_num:
                problems.append(
                    f"{where}: port match without a single protocol ({m}) cannot be written for iptables"
                )
                return []
            texts = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in m.ranges]
            side = "--sport" if m.field is Field.SPORT else "--dport"
            name = IPPROTO_NAMES[proto_num]
            if len(texts) == 1:
                opts = [["-m", name, *neg, side, texts[0]]]
            elif len(texts) <= 15:
                opts = [["-m", "multiport", *neg, side + "s", ",".join(texts)]]
            elif not m.negate:
                opts = [["-m", name, side, t] for t in texts]
            else:
                problems.append(f"{where}: negated port set of {len(texts)} entries exceeds multiport")
                return []
        elif m.field in (Field.IIF, Field.OIF):
            flag = "-i" if m.field is Field.IIF else "-o"
            if m.negate and len(m.names) > 1:
                problems.append(f"{where}: negated interface set cannot be written for iptables")
                return []
            opts = [[*neg, flag, _iface(n)] for n in m.names]
        elif m.field is Field.CT_STATE:
            opts = [["-m", "conntrack", *neg, "--ctstate", ",".join(s.upper() for s in m.names)]]
        elif m.field is Field.ICMP_TYPE:
            flag = "--icmp-type" if version == 4 else "--icmpv6-type"
            proto = "icmp" if version == 4 else "ipv6-icmp"
            prefix = [] if proto_num in (1, 58) else ["-p", proto]
            proto_num = 1 if version == 4 else 58
            if m.negate and len(m.ranges) > 1:
                problems.append(f"{where}: negated ICMP type set cannot be written for iptables")
                return []
            opts = [
                [*prefix, "-m", "icmp" if version == 4 else "icmp6", *neg, flag, str(t)]
                for lo, hi in m.ranges
                for t in range(lo, hi + 1)
            ]
        elif m.field is Field.ICMP_CODE:
            problems.append(f"{where}: ICMP code match is merged into the type match only in nft; dropped")
            continue
        else:
            problems.append(f"{where}: opaque match {m.text} cannot be written for iptables")
            return []
        variants = [[*v, *o] for v in variants for o in opts]
    target = _target(rule, version, where, problems)
    if target is None:
        return []
    if rule.comment:
        target = ["-m", "comment", "--comment", rule.comment, *target]
    out = [[*v, *target] for v in variants]
    if rule.log is not None and rule.action is not Action.CONTINUE:
        log = ["-j", "LOG"] + (["--log-prefix", rule.log] if rule.log else [])
        out = [x for v in variants for x in ([*v, *log], [*v, *target])]
    return out


def _target(rule: Rule, version: int, where: str, problems: list[str]) -> list[str] | None:
    act = rule.action
    if act is Action.CONTINUE:
        if rule.log is not None:
            return ["-j", "LOG"] + (["--log-prefix", rule.log] if rule.log else [])
        return []
    if act in (Action.ACCEPT, Action.DROP, Action.RETURN, Action.MASQUERADE):
        return ["-j", act.value.upper()]
    if act is Action.QUEUE:
        return ["-j", "NFQUEUE"]
    if act in (Action.JUMP, Action.GOTO):
        return ["-j" if act is Action.JUMP else "-g", rule.target]
    if act is Action.REJECT:
        rej = rule.reject or Reject()
        answer = rej.answer(version)
        if rej.type is RejectType.TCP_RESET:
            return ["-j", "REJECT", "--reject-with", "tcp-reset"]
        code = answer.split("-", 1)[1]
        rt = RejectType.ICMP if version == 4 else RejectType.ICMPV6
        name = _REJECT_OUT.get((rt, code))
        if name is None:
            problems.append(f"{where}: reject with {answer} has no iptables equivalent")
            return None
        return ["-j", "REJECT", "--reject-with", name]
    if act in (Action.DNAT, Action.SNAT, Action.REDIRECT):
        nat = rule.nat or NatTarget()
        if act is Action.REDIRECT:
            return ["-j", "REDIRECT"] + (["--to-ports", str(nat.port)] if nat.port else [])
        flag = "--to-destination" if act is Action.DNAT else "--to-source"
        return ["-j", act.value.upper(), flag, str(nat)]
    problems.append(f"{where}: action {act} has no iptables equivalent")
    return None


def render_iptables(ruleset: Ruleset, *, version: int = 4) -> tuple[str, list[str]]:
    """`iptables-restore` (version=4) or `ip6tables-restore` (version=6) input, and problems."""
    problems: list[str] = []
    by_table: dict[str, list[tuple[str, str, list[list[str]]]]] = {}
    chain_decl: dict[str, dict[str, str]] = {}
    seen_hooks: dict[tuple[str, Hook], str] = {}
    for t in ruleset.tables:
        if not t.family.covers(version) or t.family not in (Family.IP, Family.IP6, Family.INET):
            continue
        for c in t.chains:
            if c.hook is not None:
                ipt_table = "nat" if c.type is ChainType.NAT else "filter"
                builtin = _BUILTIN.get(ipt_table, {})
                name = _HOOK_CHAIN.get(c.hook, "")
                if name not in builtin:
                    ipt_table, name = "mangle", _HOOK_CHAIN.get(c.hook, "")
                    builtin = _BUILTIN["mangle"]
                expected = builtin.get(name, (c.hook, 0))[1]
                if c.priority != expected:
                    problems.append(
                        f"{t} {c.name}: priority {c.priority} becomes iptables {ipt_table} "
                        f"{name} (priority {expected})"
                    )
                key = (ipt_table, c.hook)
                if key in seen_hooks:
                    problems.append(
                        f"{t} {c.name}: a second base chain on {c.hook} is appended to "
                        f"{ipt_table} {name}; an accept in {seen_hooks[key]} now ends both"
                    )
                seen_hooks[key] = f"{t} {c.name}"
                chain_decl.setdefault(ipt_table, {})[name] = c.policy.value.upper()
            else:
                ipt_table = "filter"
                # A regular chain lives in whichever table its callers are in; filter by default.
                for c2 in t.chains:
                    if c2.type is ChainType.NAT and any(r.target == c.name for r in c2.rules):
                        ipt_table = "nat"
                name = c.name
                chain_decl.setdefault(ipt_table, {}).setdefault(name, "-")
            rules: list[list[str]] = []
            for i, r in enumerate(c.rules):
                got = _rule_variants(r, version, f"{t} {c.name} #{i + 1}", problems)
                if got:
                    rules.extend(got)
            by_table.setdefault(ipt_table, []).append((name, c.name, rules))
    out: list[str] = [f"# generated by portkit for ip{'6' if version == 6 else ''}tables-restore"]
    for table in ("raw", "mangle", "nat", "filter"):
        if table not in chain_decl:
            continue
        out.append(f"*{table}")
        for name, policy in chain_decl[table].items():
            out.append(f":{name} {policy} [0:0]")
        for name, _orig, rules in by_table.get(table, []):
            for args in rules:
                out.append(" ".join(["-A", name, *(a if a == "!" else shlex.quote(a) for a in args)]))
        out.append("COMMIT")
    return "\n".join(out) + "\n", problems
