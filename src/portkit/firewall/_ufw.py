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

from portkit.errors import UsageError
from portkit.firewall._iptables import AddressTypes, import_iptables_save
from portkit.firewall._model import (
    IPPROTO_NAMES,
    Action,
    Field,
    Hook,
    Match,
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


# What ufw ships in /etc/default/ufw: the first branch's assumption when the file is unknown.
_SHIPPED = {"input": "DROP", "output": "ACCEPT", "forward": "DROP"}
_POLICIES = ("ACCEPT", "DROP", "REJECT")
# The stand-in match for "this direction's default policy is P", replaced after import.
_UNKNOWN_DEFAULT = "-m ufw-default-unknown --{key} {policy}"


def _read_defaults(path: Path) -> dict[str, str]:
    """The default policies a /etc/default/ufw file sets (ufw's own default where unset)."""
    try:
        raw = path.read_bytes()[:1_000_000]
    except OSError as exc:
        raise UsageError(f"cannot read ufw defaults file {str(path)[:60]!r}: {exc.strerror}") from None
    text = raw.decode("utf-8", "replace")
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
    six = "6" if version == 6 else ""
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
        for ln in _filter_body(files[name].read_text()):
            if ln.startswith(":"):
                if ln[1:].split()[0] in declared:
                    continue
                declared.add(ln[1:].split()[0])
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
