"""Export dispatch, and the firewalld renderer (rich rules with priorities keep the order).

Every renderer returns (text, problems): problems name each rule or feature the target
cannot express faithfully, so nothing is ever dropped silently.
"""

from __future__ import annotations

from portkit.errors import UsageError
from portkit.firewall._model import (
    IPPROTO_NAMES,
    Action,
    Field,
    Hook,
    Reject,
    RejectType,
    Ruleset,
    render_address_interval,
)

_FIREWALLD_REJECT = {
    "port-unreachable": "port-unreachable",
    "admin-prohibited": "admin-prohibited",
    "host-unreachable": "host-unreachable",
    "net-unreachable": "net-unreachable",
    "host-prohibited": "host-prohibited",
    "net-prohibited": "net-prohibited",
    "prot-unreachable": "prot-unreachable",
    "no-route": "no-route",
    "addr-unreachable": "addr-unreachable",
}


def render_firewalld(ruleset: Ruleset, *, zone: str = "public") -> tuple[str, list[str]]:
    """`firewall-cmd` commands: the zone's target from the input policy, one rich rule per rule."""
    problems: list[str] = []
    out = [
        f"firewall-cmd --permanent --zone={zone} --set-target="
        + (
            "DROP"
            if any(c.hook is Hook.INPUT and c.policy is Action.DROP for t in ruleset.tables for c in t.chains)
            else "ACCEPT"
        )
    ]
    priority = -32000
    for t in ruleset.tables:
        for c in t.chains:
            if c.hook is not Hook.INPUT:
                if c.rules:
                    problems.append(
                        f"{t} {c.name}: firewalld zones filter incoming traffic only; "
                        f"{len(c.rules)} {c.hook or 'regular chain'} rules not rendered"
                    )
                continue
            for i, r in enumerate(c.rules):
                where = f"{t} {c.name} #{i + 1} ({r})"
                if r.action not in (Action.ACCEPT, Action.DROP, Action.REJECT):
                    problems.append(
                        f"{where}: firewalld rich rules cannot '{r.verdict_text() or 'continue'}'"
                    )
                    continue
                parts: list[str] = []
                family = ""
                ok = True
                ports: list[str] = []
                proto = ""
                for m in r.matches:
                    if m.field is Field.CT_STATE:
                        if r.action is Action.ACCEPT and "established" in m.names and not m.negate:
                            problems.append(
                                f"{where}: firewalld accepts established/related traffic itself; not rendered"
                            )
                        else:
                            problems.append(f"{where}: firewalld cannot match conntrack state")
                        ok = False
                        break
                    if m.field in (Field.SADDR, Field.DADDR) and len(m.ranges) == 1:
                        family = "ipv4" if m.family == 4 else "ipv6"
                        text = render_address_interval(m.family, m.ranges[0])
                        if "-" in text:
                            problems.append(f"{where}: firewalld cannot express the range {text}")
                            ok = False
                            break
                        kind = "source" if m.field is Field.SADDR else "destination"
                        parts.append(f'{kind} {"NOT " if m.negate else ""}address="{text}"')
                    elif (
                        m.field is Field.L4PROTO
                        and not m.negate
                        and len(m.ranges) == 1
                        and m.ranges[0][0] == m.ranges[0][1]
                    ):
                        proto = IPPROTO_NAMES.get(m.ranges[0][0], str(m.ranges[0][0]))
                    elif m.field is Field.DPORT and not m.negate:
                        proto = IPPROTO_NAMES.get(m.protos[0], "") if len(m.protos) == 1 else proto
                        ports = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in m.ranges]
                    elif m.field is Field.IIF:
                        problems.append(
                            f"{where}: firewalld binds interfaces to zones, not rules "
                            f"(use --zone=... --add-interface={m.names[0]})"
                        )
                        ok = False
                        break
                    else:
                        problems.append(f"{where}: firewalld rich rules cannot express {m}")
                        ok = False
                        break
                if not ok:
                    continue
                if ports and proto not in ("tcp", "udp", "sctp", "dccp"):
                    problems.append(f"{where}: ports without tcp/udp")
                    continue
                verdict = {Action.ACCEPT: "accept", Action.DROP: "drop"}.get(r.action, "")
                if r.action is Action.REJECT:
                    rej = r.reject or Reject()
                    if rej.type is RejectType.TCP_RESET:
                        verdict = 'reject type="tcp-reset"'
                    else:
                        code = rej.answer(4 if family != "ipv6" else 6)
                        name = code.replace("icmpv6-", "icmp6-")
                        if not family:
                            verdict = "reject"
                            if rej.code != "port-unreachable":
                                problems.append(
                                    f"{where}: reject type {rej.code} needs an address family; "
                                    "plain reject used"
                                )
                        else:
                            verdict = f'reject type="{name}"'
                bodies = (
                    [[*parts, f'port port="{p}" protocol="{proto}"'] for p in ports]
                    if ports
                    else [[*parts, f'protocol value="{proto}"'] if proto else parts]
                )
                for body in bodies:
                    fam = f' family="{family}"' if family else ""
                    rule = f'rule priority="{priority}"{fam} {" ".join(body)} {verdict}'.replace("  ", " ")
                    out.append(f"firewall-cmd --permanent --zone={zone} --add-rich-rule='{rule}'")
                priority += 1
    out.append("firewall-cmd --reload")
    return "\n".join(out) + "\n", problems


def export_ruleset(ruleset: Ruleset, target: str) -> tuple[str, list[str]]:
    """Render for `nft`, `iptables`, `ip6tables`, `ufw` or `firewalld`."""
    from portkit.firewall._iptables import render_iptables
    from portkit.firewall._nft import render_nft
    from portkit.firewall._ufw import render_ufw

    if target == "nft":
        return render_nft(ruleset)
    if target == "iptables":
        return render_iptables(ruleset, version=4)
    if target == "ip6tables":
        return render_iptables(ruleset, version=6)
    if target == "ufw":
        return render_ufw(ruleset)
    if target == "firewalld":
        return render_firewalld(ruleset)
    raise UsageError(f"invalid export target {target!r}: expected nft, iptables, ip6tables, ufw or firewalld")
