"""ufw in and out: its rule files -> model, and model -> `ufw` commands.

ufw is a front end: `ufw-init` loads before.rules, after.rules and user.rules into a fixed
chain layout (INPUT jumps to ufw-before-input, which ends by jumping to ufw-user-input, then
ufw-after-input, ufw-reject-input, ufw-track-input) and sets the default policies from
/etc/default/ufw. The importer rebuilds exactly that layout (as in /usr/lib/ufw/ufw-init-functions),
so a verdict on a ufw host comes with the same trace the kernel would follow.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from portkit._textfile import read_text_file
from portkit.errors import UsageError, quote
from portkit.firewall._export import (
    Omission,
    OmissionPolicy,
    Rendering,
    implied_accepts,
    omission_of_chain,
    one_chain_per_version,
)
from portkit.firewall._iptables import AddressTypes, import_iptables_save
from portkit.firewall._model import (
    IPPROTO_NAMES,
    ChainType,
    Family,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    RejectType,
    Ruleset,
    render_address_interval,
)
from portkit.model.protocols import IPV4, IPV6

_DIRS = ("input", "output", "forward")


def _filter_body(text: str) -> list[str]:
    """The lines of a rules file's *filter section, without *filter/COMMIT."""
    out: list[str] = []
    inside = False
    for line in text.splitlines():
        s = line.strip()
        if s == "*filter":
            inside = True
        elif s == "COMMIT":
            inside = False
        elif inside and s and not s.startswith("#"):
            out.append(s)
    return out


# What ufw ships in /etc/default/ufw: the first branch's assumption when the file is unknown.
_SHIPPED = {"input": "DROP", "output": "ACCEPT", "forward": "DROP"}
_POLICIES = ("ACCEPT", "DROP", "REJECT")
# The stand-in match for "this direction's default policy is P", replaced after import.
_UNKNOWN_DEFAULT = "-m ufw-default-unknown --{key} {policy}"


def _read_defaults(path: Path) -> dict[str, str]:
    """The default policies a /etc/default/ufw file sets (ufw's own default where unset)."""
    text = read_text_file(path, what="ufw defaults file")
    values = dict(_SHIPPED)
    for key in _DIRS:
        m = re.search(rf'^DEFAULT_{key.upper()}_POLICY="?(\w+)"?', text, re.M)
        if m:
            value = m.group(1).upper()
            if value not in _POLICIES:
                raise UsageError(
                    f"invalid DEFAULT_{key.upper()}_POLICY {m.group(1)[:20]!r} in {str(path)[:60]}: "
                    "expected ACCEPT, DROP or REJECT"
                )
            values[key] = value
    return values


def find_defaults(directory: Path) -> Path | None:
    """The `default/ufw` file that goes with a ufw rules directory: beside it (/etc/ufw and
    /etc/default/ufw) or inside it."""
    for candidate in (directory.parent / "default" / "ufw", directory / "default" / "ufw"):
        if candidate.is_file():
            return candidate
    return None


def import_ufw(
    directory: str | Path = "/etc/ufw",
    *,
    version: int = 4,
    defaults_file: str | Path | None = None,
    addrtypes: AddressTypes | None = None,
) -> Ruleset:
    """The filter table ufw would load from `directory` (before/user/after rules).

    The default policies come from `defaults_file`, else from the `default/ufw` that goes
    with the directory (`find_defaults`). When there is none they are unknown: every policy
    (accept, drop, reject) is followed, the first branch assuming what ufw ships."""
    d = Path(directory)
    six = "6" if version == IPV6 else ""
    p = f"ufw{six}"
    files = {name: d / f"{name}{six}.rules" for name in ("before", "user", "after")}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise UsageError(f"not a ufw rules directory {str(d)!r}: missing {', '.join(missing)}")
    found = Path(defaults_file) if defaults_file is not None else find_defaults(d)
    known: dict[str, str] | None = _read_defaults(found) if found is not None else None
    lines = ["*filter"]
    for key in _DIRS:
        builtin = key.upper()
        pol = known[key] if known else "DROP"
        lines.append(f":{builtin} {'ACCEPT' if pol == 'ACCEPT' else 'DROP'} [0:0]")
    for key in _DIRS:
        for part in (
            "before-logging",
            "before",
            "after",
            "after-logging",
            "reject",
            "track",
            "skip-to-policy",
            "user",
            "user-logging",
        ):
            lines.append(f":{p}-{part}-{key} - [0:0]")
    for extra in ("logging-deny", "logging-allow", "not-local", "user-limit", "user-limit-accept"):
        lines.append(f":{p}-{extra} - [0:0]")
    for key in _DIRS:
        for part in ("before-logging", "before", "after", "after-logging", "reject", "track"):
            lines.append(f"-A {key.upper()} -j {p}-{part}-{key}")
        if known is None:
            # As ufw-init builds each policy, with the policy itself undecided.
            def unknown(policy: str, key: str = key) -> str:
                return _UNKNOWN_DEFAULT.format(key=key, policy=policy)

            lines.append(f"-A {key.upper()} {unknown('ACCEPT')} -j ACCEPT")
            lines.append(f"-A {p}-reject-{key} {unknown('REJECT')} -j REJECT")
            for proto in ("tcp", "udp"):
                lines.append(
                    f"-A {p}-track-{key} -p {proto} -m conntrack --ctstate NEW {unknown('ACCEPT')} -j ACCEPT"
                )
            for policy in ("ACCEPT", "REJECT"):
                lines.append(f"-A {p}-skip-to-policy-{key} {unknown(policy)} -j {policy}")
            lines.append(f"-A {p}-skip-to-policy-{key} -j DROP")
            continue
        assert known is not None
        if known[key] == "REJECT":
            lines.append(f"-A {p}-reject-{key} -j REJECT")
        if known[key] == "ACCEPT":
            lines.append(f"-A {p}-track-{key} -p tcp -m conntrack --ctstate NEW -j ACCEPT")
            lines.append(f"-A {p}-track-{key} -p udp -m conntrack --ctstate NEW -j ACCEPT")
        lines.append(f"-A {p}-skip-to-policy-{key} -j {known[key]}")
    declared = {ln[1:].split()[0] for ln in lines if ln.startswith(":")}
    for name in ("before", "after", "user"):
        for ln in _filter_body(read_text_file(files[name], what="ufw rules file")):
            if ln.startswith(":"):
                chain = ln[1:].split()
                if not chain:
                    where = quote(str(files[name]))
                    raise UsageError(f"invalid ufw rules file {where}: ':' needs a chain name")
                if chain[0] in declared:
                    continue
                declared.add(chain[0])
            lines.append(ln)
        if name == "user":
            for key in _DIRS:
                lines.append(f"-A {p}-before-{key} -j {p}-user-{key}")
    # Declarations must precede rules for the importer to know every chain.
    decls = [ln for ln in lines if ln.startswith(":")]
    rules = [ln for ln in lines if ln.startswith("-A")]
    text = "\n".join(["*filter", *decls, *rules, "COMMIT"]) + "\n"
    ruleset = import_iptables_save(
        text, version=version, source=f"ufw rules in {d} (IPv{version})", addrtypes=addrtypes
    )
    if known is not None:
        note = f"ufw default policies from {found}: " + ", ".join(f"{k} {known[k].lower()}" for k in _DIRS)
        return replace(ruleset, notes=(*ruleset.notes, note))
    return _unknown_defaults(ruleset, d)


def _unknown_defaults(ruleset: Ruleset, directory: Path) -> Ruleset:
    """Replace the stand-in matches with undecided ones that say what is unknown."""
    marker = "-m ufw-default-unknown --"

    def fix(m: Match) -> Match:
        if m.field is not Field.OPAQUE or not m.text.startswith(marker):
            return m
        key, _, policy = m.text[len(marker) :].partition(" ")
        text = f"ufw default {key} policy is {policy.lower()} (unknown: no default/ufw found)"
        return Match(Field.OPAQUE, text=text, negate=_SHIPPED[key] != policy)

    tables = tuple(
        replace(
            t,
            chains=tuple(
                replace(c, rules=tuple(replace(r, matches=tuple(fix(m) for m in r.matches)) for r in c.rules))
                for c in t.chains
            ),
        )
        for t in ruleset.tables
    )
    notes = [n for n in ruleset.notes if "ufw-default-unknown" not in n]
    notes.append(
        f"ufw default policies unknown: no default/ufw beside or inside {directory} (pass the file "
        "explicitly); every policy is followed, the first branch assuming ufw's shipped "
        "defaults (incoming drop, outgoing accept, routed drop)"
    )
    return replace(ruleset, tables=tables, notes=tuple(notes))


# --- export -------------------------------------------------------------------------------------

# What ufw's stock before.rules (and before6.rules) accept on input before any user rule.
_UFW_IMPLIED = (
    "tcp 127.0.0.1:40000 -> 127.0.0.1:5000 in lo",
    "tcp 192.0.2.7:5000 -> 198.51.100.1:40000 state established",
    "tcp [2001:db8::7]:5000 -> [2001:db8::1]:40000 state established",
    "icmp 192.0.2.7 -> 198.51.100.1 type echo-request",
    "icmp 192.0.2.7 -> 198.51.100.1 type destination-unreachable",
    "icmpv6 2001:db8::7 -> 2001:db8::1 type echo-request",
    "icmpv6 fe80::7 -> fe80::1 type nd-neighbor-solicit",
    "udp 192.0.2.7:67 -> 198.51.100.1:68",
    "udp 192.0.2.7:5353 -> 224.0.0.251:5353",
    "udp 192.0.2.7:40000 -> 239.255.255.250:1900",
)
_UFW_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,15}")


class _NotUfw(Exception):
    """The rule cannot be a ufw command; the message says why."""


def _ufw_rule(rule: FilterRule, verb: str, hook: Hook, notes: list[str], family: int = 0) -> list[str] | None:
    """The words of one ufw command, or None when the rule never matches in ufw's terms.

    `family` is the table's IP version (0 for inet): a rule of an `ip` table never sees IPv6,
    and a ufw rule without addresses applies to both."""
    proto = ""
    ports: list[str] = []
    src = "any"
    dst = "any"
    iface = ""
    if rule.opaque:
        raise _NotUfw(f"ufw cannot write {'; '.join(rule.opaque)}")
    for m in rule.matches:
        if m.negate:
            raise _NotUfw(f"ufw cannot express a negated match ({m})")
        if m.set_name:
            raise _NotUfw(f"ufw cannot express a named set ({m})")
        if m.field is Field.L4PROTO and len(m.ranges) == 1 and m.ranges[0][0] == m.ranges[0][1]:
            name = IPPROTO_NAMES.get(m.ranges[0][0], str(m.ranges[0][0]))
            if proto and proto != name:
                return None
            proto = name
        elif m.field is Field.DPORT and len(m.protos) == 1 and m.ranges:
            name = IPPROTO_NAMES.get(m.protos[0], "")
            if proto and proto != name:
                return None
            proto = name
            ports = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in m.ranges]
        elif m.field in (Field.SADDR, Field.DADDR) and len(m.ranges) == 1:
            if family and family != m.family:
                return None
            family = m.family
            text = render_address_interval(m.family, m.ranges[0])
            if "-" in text:
                raise _NotUfw(f"ufw cannot express the address range {text}")
            if m.field is Field.SADDR:
                src = text
            else:
                dst = text
        elif m.field is Field.NFPROTO and len(m.ranges) == 1 and m.ranges[0][0] == m.ranges[0][1]:
            if family and family != m.ranges[0][0]:
                return None
            family = m.ranges[0][0]
        elif m.field in (Field.IIF, Field.OIF) and len(m.names) == 1:
            wanted = Field.OIF if hook is Hook.OUTPUT else Field.IIF
            if m.field is not wanted or iface or not _UFW_NAME.fullmatch(m.names[0]):
                raise _NotUfw(f"ufw cannot express {m} here")
            iface = m.names[0]
        else:
            raise _NotUfw(f"ufw cannot express {m}")
    if family and src == "any" and dst == "any":
        src = "0.0.0.0/0" if family == IPV4 else "::/0"  # ufw's way to say one IP version
    if ports and proto not in ("tcp", "udp"):
        raise _NotUfw("ufw ports need tcp or udp")
    if len(ports) > 15:
        raise _NotUfw("ufw takes at most 15 ports in one rule")
    if proto and proto not in ("tcp", "udp", "ah", "esp", "gre", "ipv6", "igmp"):
        raise _NotUfw(f"ufw cannot match protocol {proto}")
    if rule.action is FilterAction.REJECT and rule.reject:
        rej = rule.reject
        answer = "tcp-reset" if proto == "tcp" else "icmp port-unreachable"
        got = "tcp-reset" if rej.type is RejectType.TCP_RESET else f"{rej.type.value} {rej.code}"
        if got != answer:
            # A different answer, never a wider verdict: ufw's reject still refuses.
            notes.append(f"ufw answers with {answer}, the source with {got}")
    direction = {Hook.INPUT: "in", Hook.OUTPUT: "out", Hook.FORWARD: "in"}[hook]
    out = ["ufw", *(["route"] if hook is Hook.FORWARD else []), verb]
    if iface:
        out += [direction, "on", iface]
    elif hook is Hook.OUTPUT:
        out += ["out"]
    if proto:
        out += ["proto", proto]
    out += ["from", src, "to", dst]
    if ports:
        out += ["port", ",".join(ports)]
    return out


def render_ufw(ruleset: Ruleset) -> Rendering:
    """`ufw` commands for the input, output and forward rules of a simple rule set.

    A rule ufw cannot express is left out whole; ufw's own accepts (before.rules) that the
    source does not make count as unsafe, since they would widen it."""
    policy = OmissionPolicy(ruleset)
    omitted: list[Omission] = []
    notes: list[str] = []
    out = ["ufw --force reset"]
    verbs = {FilterAction.ACCEPT: "allow", FilterAction.DROP: "deny", FilterAction.REJECT: "reject"}
    hooks = {Hook.INPUT: "incoming", Hook.OUTPUT: "outgoing", Hook.FORWARD: "routed"}
    usable = [
        (t, c)
        for t in ruleset.tables
        for c in t.chains
        if c.hook in hooks and c.type is ChainType.FILTER and t.family in (Family.IP, Family.IP6, Family.INET)
    ]
    used = [
        pair for hook in hooks for pair in one_chain_per_version([x for x in usable if x[1].hook is hook])
    ]
    seen: set[Hook] = set()
    for t in ruleset.tables:
        for c in t.chains:
            if not any(t is ut and c is uc for ut, uc in used):
                # A regular chain is reached only through a jump, which is itself left out.
                if c.hook is not None and (c.rules or c.policy is not FilterAction.ACCEPT):
                    omitted.append(
                        omission_of_chain(
                            t, c, "ufw has one chain per direction and no regular chains; not rendered"
                        )
                    )
                continue
            if c.hook is None:
                continue
            if c.hook not in seen:  # else the other IP version's chain, with the same policy
                seen.add(c.hook)
                word = "allow" if c.policy is FilterAction.ACCEPT else "deny"
                out.append(f"ufw default {word} {hooks[c.hook]}")
            for i, r in enumerate(c.rules):
                states = [m for m in r.matches if m.field is Field.CT_STATE]
                try:
                    if states:
                        raise _NotUfw(
                            "ufw accepts established/related traffic itself and matches no other state"
                        )
                    if r.action not in verbs:
                        raise _NotUfw(f"ufw cannot express '{r.verdict_text() or 'no verdict'}'")
                    said: list[str] = []
                    version = {Family.IP: 4, Family.IP6: 6}.get(t.family, 0)
                    cmd = _ufw_rule(r, verbs[r.action], c.hook, said, version)
                    notes.extend(f"{t} {c.name} #{i + 1}: {n}" for n in said)
                except _NotUfw as exc:
                    omitted.append(policy.omit(t, c, i, r, str(exc)))
                    continue
                if cmd is not None:
                    out.append(" ".join(cmd))
    out.append("ufw --force enable")
    omitted.extend(implied_accepts(ruleset, "ufw", _UFW_IMPLIED))
    return Rendering("\n".join(out) + "\n", tuple(notes), tuple(omitted))
