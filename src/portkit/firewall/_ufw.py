"""ufw in and out: its rule files -> model, and model -> `ufw` commands.

ufw is a front end: `ufw-init` loads before.rules, after.rules and user.rules into a fixed
chain layout (INPUT jumps to ufw-before-input, which ends by jumping to ufw-user-input, then
ufw-after-input, ufw-reject-input, ufw-track-input) and sets the default policies from
/etc/default/ufw. The importer rebuilds exactly that layout (as in /usr/lib/ufw/ufw-init-functions),
so a verdict on a ufw host comes with the same trace the kernel would follow.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from portkit._textfile import read_text_file
from portkit.errors import UsageError, quote
from portkit.firewall._iptables import import_iptables_save
from portkit.firewall._model import (
    IPPROTO_NAMES,
    Action,
    Field,
    Hook,
    RejectType,
    Rule,
    Ruleset,
    render_address_interval,
)

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


def _defaults(path: Path) -> dict[str, str]:
    values = {"input": "DROP", "output": "ACCEPT", "forward": "DROP"}
    if not path.is_file() or not os.access(path, os.R_OK):
        return values
    text = read_text_file(path, what="ufw defaults file")
    for key in _DIRS:
        m = re.search(rf'^DEFAULT_{key.upper()}_POLICY="?(\w+)"?', text, re.M)
        if m:
            values[key] = m.group(1).upper()
    return values


def import_ufw(
    directory: str | Path = "/etc/ufw", *, version: int = 4, defaults_file: str | Path = "/etc/default/ufw"
) -> Ruleset:
    """The filter table ufw would load from `directory` (before/user/after rules)."""
    d = Path(directory)
    six = "6" if version == 6 else ""
    p = f"ufw{six}"
    files = {name: d / f"{name}{six}.rules" for name in ("before", "user", "after")}
    missing = [str(f) for f in files.values() if not f.is_file()]
    if missing:
        raise UsageError(f"not a ufw rules directory {str(d)!r}: missing {', '.join(missing)}")
    pol = _defaults(Path(defaults_file))
    lines = ["*filter"]
    for key in _DIRS:
        builtin = key.upper()
        lines.append(f":{builtin} {'ACCEPT' if pol[key] == 'ACCEPT' else 'DROP'} [0:0]")
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
        if pol[key] == "REJECT":
            lines.append(f"-A {p}-reject-{key} -j REJECT")
        if pol[key] == "ACCEPT":
            lines.append(f"-A {p}-track-{key} -p tcp -m conntrack --ctstate NEW -j ACCEPT")
            lines.append(f"-A {p}-track-{key} -p udp -m conntrack --ctstate NEW -j ACCEPT")
        lines.append(f"-A {p}-skip-to-policy-{key} -j {pol[key]}")
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
    ruleset = import_iptables_save(text, version=version, source=f"ufw rules in {d} (IPv{version})")
    return ruleset


# --- export -------------------------------------------------------------------------------------


def _ufw_rule(rule: Rule, verb: str, where: str, problems: list[str]) -> list[str] | None:
    proto = ""
    ports: list[str] = []
    src = "any"
    dst = "any"
    iface = ""
    for m in rule.matches:
        if m.negate:
            problems.append(f"{where}: ufw cannot express a negated match ({m})")
            return None
        if m.field is Field.L4PROTO and len(m.ranges) == 1 and m.ranges[0][0] == m.ranges[0][1]:
            proto = IPPROTO_NAMES.get(m.ranges[0][0], str(m.ranges[0][0]))
        elif m.field is Field.DPORT:
            if len(m.protos) == 1:
                proto = IPPROTO_NAMES[m.protos[0]]
            ports = [str(lo) if lo == hi else f"{lo}:{hi}" for lo, hi in m.ranges]
        elif m.field in (Field.SADDR, Field.DADDR) and len(m.ranges) == 1:
            text = render_address_interval(m.family, m.ranges[0])
            if "-" in text:
                problems.append(f"{where}: ufw cannot express the address range {text}")
                return None
            if m.field is Field.SADDR:
                src = text
            else:
                dst = text
        elif m.field is Field.IIF and len(m.names) == 1:
            iface = m.names[0]
        else:
            problems.append(f"{where}: ufw cannot express {m}")
            return None
    if ports and proto not in ("tcp", "udp"):
        problems.append(f"{where}: ufw ports need tcp or udp")
        return None
    out = ["ufw", verb, *(["in", "on", iface] if iface else [])]
    if proto:
        out += ["proto", proto]
    out += ["from", src, "to", dst]
    if ports:
        out += ["port", ",".join(ports)]
    return out


def render_ufw(ruleset: Ruleset) -> tuple[str, list[str]]:
    """`ufw` commands for the input rules of a simple rule set, and what does not fit ufw."""
    problems: list[str] = []
    out = ["ufw --force reset"]
    verbs = {Action.ACCEPT: "allow", Action.DROP: "deny", Action.REJECT: "reject"}
    hooks = {Hook.INPUT: "incoming", Hook.OUTPUT: "outgoing", Hook.FORWARD: "routed"}
    for t in ruleset.tables:
        for c in t.chains:
            if c.hook not in hooks:
                if c.rules:
                    problems.append(
                        f"{t} {c.name}: ufw has no place for {'regular' if c.hook is None else str(c.hook)}"
                        f" chain rules ({len(c.rules)} rules not rendered)"
                    )
                continue
            out.append(f"ufw default {'allow' if c.policy is Action.ACCEPT else 'deny'} {hooks[c.hook]}")
            for i, r in enumerate(c.rules):
                where = f"{t} {c.name} #{i + 1} ({r})"
                states = [m for m in r.matches if m.field is Field.CT_STATE]
                if states:
                    if r.action is Action.ACCEPT and set(states[0].names) >= {"established"}:
                        problems.append(
                            f"{where}: ufw accepts established/related traffic itself "
                            "(before.rules); not rendered"
                        )
                    else:
                        problems.append(f"{where}: ufw cannot express conntrack state matches")
                    continue
                if r.action not in verbs:
                    problems.append(f"{where}: ufw cannot express '{r.verdict_text() or 'no verdict'}'")
                    continue
                if (
                    r.action is Action.REJECT
                    and r.reject
                    and r.reject.type is not RejectType.TCP_RESET
                    and r.reject.code != "port-unreachable"
                ):
                    problems.append(
                        f"{where}: ufw rejects with port-unreachable/tcp-reset only; "
                        f"{r.reject.code} becomes the ufw default"
                    )
                cmd = _ufw_rule(r, verbs[r.action], where, problems)
                if cmd is None:
                    continue
                if c.hook is Hook.OUTPUT:
                    cmd.insert(2, "out")
                elif c.hook is Hook.FORWARD:
                    cmd[1:2] = ["route", cmd[1]]
                out.append(" ".join(cmd))
    out.append("ufw --force enable")
    return "\n".join(out) + "\n", problems
