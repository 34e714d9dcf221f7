"""Never confidently wrong, with the kernel as the oracle: rules portkit cannot fully model are
loaded into the server namespace of a two-namespace lab, real TCP connects and UDP datagrams
come from the client namespace, and what happened must be one of the outcomes portkit
reports, and the only one whenever portkit says it is certain. Also: concatenated verdict
maps and sets, and the routing decision of the live mode (ip_forward, routes, DNAT to a
local address)."""

from __future__ import annotations

import ipaddress
import os
import subprocess
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fixtures_firewall as lab_mod
from conftest import needs_root
from portkit.firewall import CtState, Decision, Direction, Ruleset, evaluate
from portkit.firewall._eval import ANSWER_ERRNO, Outcome

pytestmark = needs_root


def _load(lab: lab_mod.FirewallLab, script: str) -> Ruleset:
    subprocess.run(
        ["ip", "netns", "exec", lab.server, "nft", "-f", "-"],
        input="flush ruleset\n" + script,
        text=True,
        check=True,
        capture_output=True,
    )
    return lab.kernel_ruleset()


def _sysctl(lab: lab_mod.FirewallLab, key: str, value: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", lab.server, "sysctl", "-qw", f"{key}={value}"],
        check=True,
        capture_output=True,
    )


def _seen(o: Outcome, proto: str) -> str:
    """What the prober observes for one outcome of the first packet (TCP: before the ACK)."""
    if o.outcome == "drop":
        return "timeout" if proto == "tcp" else "silence"
    if o.outcome.startswith("reject:"):
        return ANSWER_ERRNO[o.reject_with or ""]
    return "delivered" if proto == "udp" else "connected"


def possible_observations(
    rs: Ruleset, probe: lab_mod.Probe, base: int, iface: str, **kw: Any
) -> tuple[set[str], bool]:
    """Every observation portkit allows for the probe, and whether it is sure of it."""
    first: Decision = evaluate(rs, probe.packet(base, iface), direction=Direction.INPUT, **kw)
    seen = {_seen(o, probe.proto) for o in first.outcomes}
    certain = first.certain
    if "connected" in seen:
        ack = evaluate(rs, probe.packet(base, iface, CtState.ESTABLISHED), direction=Direction.INPUT, **kw)
        certain = certain and ack.certain
        later = {o.outcome == "accept" for o in ack.outcomes}
        seen.discard("connected")
        seen |= {"connected+accepted" if accepted else "connected" for accepted in later}
    return seen, certain


def _agree(lab: lab_mod.FirewallLab, rs: Ruleset, probes: list[lab_mod.Probe], base: int) -> list[bool]:
    observed = lab.run(probes, base)
    certain = []
    server = [ipaddress.ip_address(a) for a in (*lab_mod.SERVER4, *lab_mod.SERVER6)]
    for p, got in zip(probes, observed, strict=True):
        allowed, sure = possible_observations(rs, p, base, lab.server_if, local_addresses=server)
        where = f"{p} observed {got}, portkit allows {sorted(allowed)} (certain={sure})"
        assert got in allowed, where
        if sure:
            assert allowed == {got}, where
        certain.append(sure)
    return certain


def test_icmpv6_concat_never_matches_tcp(lab: lab_mod.FirewallLab) -> None:
    rs = _load(
        lab,
        "table inet t { chain input { type filter hook input priority 0; policy drop;\n"
        " icmpv6 type . icmpv6 code { destination-unreachable . no-route, packet-too-big . 0 } accept\n"
        " ct state established,related accept\n tcp dport 2000 accept\n}\n}\n",
    )
    base = lab.sport_block()
    probes = [
        lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2000),
        lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2001),
        lab_mod.Probe("tcp", "fd66::1", 2, "fd66::2", 2001),
        lab_mod.Probe("udp", "fd66::1", 3, "fd66::2", 2002),
    ]
    assert all(_agree(lab, rs, probes, base))  # every answer certain, and right


def test_ct_status_dnat_is_false_for_a_new_connection_and_true_after_redirect(
    lab: lab_mod.FirewallLab,
) -> None:
    rs = _load(
        lab,
        "table inet t {\n"
        " chain pre { type nat hook prerouting priority dstnat; tcp dport 2003 redirect to :2004; }\n"
        " chain input { type filter hook input priority 0; policy drop;\n"
        "  ct status dnat accept\n }\n}\n",
    )
    base = lab.sport_block()
    probes = [
        lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2002),
        lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2003),
    ]
    certain = _agree(lab, rs, probes, base)
    assert certain[0]  # a first packet nothing DNATed: ct status dnat is false, certainly
    d = evaluate(rs, probes[1].packet(base, lab.server_if), direction=Direction.INPUT)
    assert (d.outcome, d.certain) == ("accept", True)


def test_rate_limited_set_update_is_uncertain_and_the_kernel_is_one_of_its_outcomes(
    lab: lab_mod.FirewallLab,
) -> None:
    rs = _load(
        lab,
        "table inet t {\n set flood { type ipv4_addr; flags dynamic; size 64; }\n"
        " chain input { type filter hook input priority 0; policy accept;\n"
        "  ct state new add @flood { ip saddr limit rate over 1/minute burst 1 packets } drop\n }\n}\n",
    )
    assert any("limit" in n for n in rs.notes)
    base = lab.sport_block()
    probes = [lab_mod.Probe("tcp", "10.66.0.1", k, "10.66.0.2", 2000 + k) for k in range(4)]
    observed = lab.run(probes, base)
    assert "connected+accepted" in observed and "timeout" in observed  # the kernel did both
    for p, got in zip(probes, observed, strict=True):
        allowed, sure = possible_observations(rs, p, base, lab.server_if)
        assert not sure and got in allowed


def test_concatenated_verdict_map_and_sets(lab: lab_mod.FirewallLab) -> None:
    rs = _load(
        lab,
        "table inet t {\n"
        " set pairs { type ipv4_addr . inet_service; flags interval;\n"
        "  elements = { 10.66.0.0/30 . 2003-2004, 10.66.0.3 . 2005 }\n}\n"
        " chain input { type filter hook input priority 0; policy drop;\n"
        "  ct state established,related accept\n"
        "  ip protocol . th dport vmap { tcp . 2000 : accept, udp . 2001 : accept, tcp . 2002 : drop }\n"
        "  ip saddr . tcp dport { 10.66.0.1 . 2006 } accept\n"
        "  ip saddr . tcp dport @pairs accept\n"
        "  meta nfproto ipv6 meta l4proto . th dport { tcp . 2000 } reject with tcp reset\n }\n}\n",
    )
    assert not rs.notes, rs.notes
    base = lab.sport_block()
    probes = [
        lab_mod.Probe(proto, src, k, dst, port)
        for k, (proto, src, dst, port) in enumerate(
            [
                ("tcp", "10.66.0.1", "10.66.0.2", 2000),
                ("udp", "10.66.0.1", "10.66.0.2", 2000),
                ("udp", "10.66.0.1", "10.66.0.2", 2001),
                ("tcp", "10.66.0.1", "10.66.0.2", 2001),
                ("tcp", "10.66.0.1", "10.66.0.2", 2002),
                ("tcp", "10.66.0.1", "10.66.0.2", 2003),
                ("tcp", "10.66.0.1", "10.66.0.2", 2005),
                ("tcp", "10.66.0.3", "10.66.0.2", 2005),
                ("tcp", "10.66.0.1", "10.66.0.2", 2006),
                ("tcp", "10.66.0.3", "10.66.0.2", 2006),
                ("tcp", "fd66::1", "fd66::2", 2000),
                ("tcp", "fd66::1", "fd66::2", 2001),
            ]
        )
    ]
    assert all(_agree(lab, rs, probes, base))


# --- the live mode's routing decision -----------------------------------------------------

DNAT_AWAY = """\
table ip nat {
  chain pre {
    type nat hook prerouting priority dstnat;
    tcp dport 2007 dnat to 192.0.2.50:2000
    tcp dport 2008 dnat to 10.66.0.4
  }
}
table inet f {
  chain input {
    type filter hook input priority 0; policy accept;
  }
}
"""


def test_dnat_needs_forwarding_and_a_route(lab: lab_mod.FirewallLab, cli: Any) -> None:
    _load(lab, DNAT_AWAY)
    results = {}
    try:
        for forward in ("0", "1"):
            _sysctl(lab, "net.ipv4.ip_forward", forward)
            base = lab.sport_block()
            probes = [
                lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2007),
                lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2008),
            ]
            observed = lab.run(probes, base)
            for p, got in zip(probes, observed, strict=True):
                flow = f"tcp {p.src}:{base + p.sport} -> {p.dst}:{p.dport} in {lab.server_if}"
                res = cli("fw", "check", "--netns", lab.server, flow, "--json")
                doc = res.json()
                results[(forward, p.dport)] = (got, doc["verdict"], doc["reject_with"], doc["direction"])
                assert doc["certain"] is True, flow
                want = {"accept": "connected+accepted", "drop": "timeout"}.get(doc["verdict"])
                if doc["verdict"] == "reject":
                    want = ANSWER_ERRNO[doc["reject_with"]]
                assert got == want, (forward, flow, doc["reason"])
    finally:
        _sysctl(lab, "net.ipv4.ip_forward", "0")
    # ip_forward=0: the DNAT away is dropped silently, and the trace says why.
    assert results[("0", 2007)] == ("timeout", "drop", None, "forward")
    # ip_forward=1, no route to 192.0.2.50: the kernel answers network unreachable.
    assert results[("1", 2007)] == ("ENETUNREACH", "reject", "icmp-net-unreachable", "forward")
    # A DNAT to one of the host's own addresses is input, forwarding or not.
    assert results[("0", 2008)][1:] == ("accept", None, "input")
    text = cli(
        "fw", "check", "--netns", lab.server, f"tcp 10.66.0.1:40000 -> 10.66.0.2:2007 in {lab.server_if}"
    )
    assert f"net.ipv4.conf.{lab.server_if}.forwarding = 0" in text.stdout and text.status == 1


def test_a_rules_file_cannot_know_forwarding_so_a_dnat_away_is_uncertain(tmp_path: Any, cli: Any) -> None:
    path = tmp_path / "dnat.nft"
    path.write_text(DNAT_AWAY)
    res = cli("fw", "check", "--rules", str(path), "tcp 198.51.100.1:4000 -> 10.66.0.2:2007", "--json")
    doc = res.json()
    assert res.status == 3 and doc["certain"] is False
    assert {o["verdict"] for o in doc["outcomes"]} == {"accept", "drop"}
    assert any("ip_forward" in a["rule"] for o in doc["outcomes"] for a in o["assumed"])


# --- property: random rule sets with undecidable matches against the kernel --------------

_UNDECIDABLE = [
    "ct status dnat",
    "ct status != dnat",
    "tcp flags syn",
    "tcp flags & (syn | ack) == syn | ack",
    "limit rate over 2/second burst 2 packets",
    "limit rate 1000/second",
    "meta mark 0x1",
    "meta mark 0",
    "icmpv6 type . icmpv6 code { destination-unreachable . no-route }",
    "ip protocol . th dport { tcp . 2001, udp . 2002 }",
    "th dport 2003",
    "fib daddr type local",
    "fib daddr type != local",
    "fib saddr . iif oif missing",
    "add @seen { ip saddr }",
    "ip saddr @seen",
]


@st.composite
def _undecidable_rules(draw: Any, n_min: int, n_max: int) -> list[str]:
    lines = []
    for _ in range(draw(st.integers(n_min, n_max))):
        parts = []
        proto = draw(st.sampled_from(["", "tcp", "udp"]))
        if proto:
            parts.append(f"{proto} dport {draw(st.integers(2000, 2005))}")
        if draw(st.integers(0, 3)):
            # nft refuses a rule whose matches need two different protocols.
            fits = [u for u in _UNDECIDABLE if not proto or not any(c in u for c in ("icmpv6", "tcp flags"))]
            parts.append(draw(st.sampled_from(fits if proto != "tcp" else [*fits, "tcp flags syn"])))
        verdicts = ["accept", "drop", "reject with icmpx type admin-prohibited"]
        if proto == "tcp":
            verdicts.append("reject with tcp reset")
        parts.append(draw(st.sampled_from(verdicts)))
        lines.append(" ".join(parts))
    return lines


@st.composite
def _undecidable_script(draw: Any) -> str:
    """An input chain of rules with undecidable matches; sometimes a prerouting filter chain
    of such rules before it, and a prerouting NAT chain that redirects a port (to itself:
    the listener logs the port it was reached on), which sets ct status dnat."""
    lines = ["ct state established,related accept"] if draw(st.booleans()) else []
    lines += draw(_undecidable_rules(1, 6))
    policy = draw(st.sampled_from(["accept", "drop"]))
    chains = [
        f"chain input {{ type filter hook input priority 0; policy {policy};\n  " + "\n  ".join(lines) + "\n}"
    ]
    if draw(st.booleans()):
        proto = draw(st.sampled_from(["tcp", "udp"]))
        port = draw(st.integers(2000, 2005))
        chains.append(
            f"chain nat {{ type nat hook prerouting priority dstnat;\n  {proto} dport {port} redirect\n}}"
        )
    if draw(st.integers(0, 2)) == 0:
        early = draw(_undecidable_rules(1, 2))
        chains.append(
            "chain early { type filter hook prerouting priority -150; policy accept;\n  "
            + "\n  ".join(line for line in early if "reject" not in line)
            + "\n}"
        )
    sets = "set seen { type ipv4_addr; flags dynamic; }"
    return "table inet t {\n" + sets + "\n" + "\n".join(chains) + "\n}\n"


@settings(
    max_examples=int(os.environ.get("PORTKIT_FW_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
@given(script=_undecidable_script(), probes=lab_mod.probe_lists(size=12))
def test_never_confidently_different_from_the_kernel(
    lab: lab_mod.FirewallLab, script: str, probes: list[Any]
) -> None:
    rs = _load(lab, script)
    _agree(lab, rs, probes, lab.sport_block())


def test_forwarding_can_be_stated_for_a_rules_file(tmp_path: Any, cli: Any) -> None:
    path = tmp_path / "dnat.nft"
    path.write_text(DNAT_AWAY)
    flow = "tcp 198.51.100.1:4000 -> 10.66.0.2:2007"
    on = cli("fw", "check", "--rules", str(path), flow, "--forwarding", "on", "--json")
    off = cli("fw", "check", "--rules", str(path), flow, "--forwarding", "off", "--json")
    assert (on.status, on.json()["verdict"], on.json()["certain"]) == (0, "accept", True)
    # Forwarding off: dropped, unless 192.0.2.50 is one of the host's own addresses, which a
    # rules file does not say (then it is input, and accepted).
    doc = off.json()
    assert (off.status, doc["certain"]) == (3, False)
    by_verdict = {o["verdict"]: o for o in doc["outcomes"]}
    assert set(by_verdict) == {"accept", "drop"} and by_verdict["accept"]["direction"] == "input"
    assert "ip_forward = 0" in by_verdict["drop"]["reason"]  # no input interface given


IPT_LIVE = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
-A INPUT -m conntrack --ctstate DNAT -j ACCEPT
-A INPUT -m conntrack --ctstatus SEEN_REPLY -j ACCEPT
-A INPUT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 2000 -j ACCEPT
-A INPUT -p tcp -m tcp --syn --dport 2001 -j ACCEPT
-A INPUT -p udp -m conntrack --ctstate NEW --ctorigdstport 2002 -j ACCEPT
COMMIT
"""


def test_iptables_rules_read_live_agree_with_the_kernel(lab: lab_mod.FirewallLab, cli: Any) -> None:
    subprocess.run(["ip", "netns", "exec", lab.server, "nft", "flush", "ruleset"], check=True)
    subprocess.run(
        ["ip", "netns", "exec", lab.server, "iptables-restore"], input=IPT_LIVE, text=True, check=True
    )
    base = lab.sport_block()
    probes = [
        lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2000),
        lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2001),
        lab_mod.Probe("tcp", "10.66.0.1", 2, "10.66.0.2", 2003),
        lab_mod.Probe("udp", "10.66.0.1", 3, "10.66.0.2", 2002),
    ]
    observed = lab.run(probes, base)
    docs = []
    for p, got in zip(probes, observed, strict=True):
        flow = f"{p.proto} {p.src}:{base + p.sport} -> {p.dst}:{p.dport} in {lab.server_if}"
        doc = cli("fw", "check", "--netns", lab.server, flow, "--json").json()
        want = {"accept": "connected+accepted" if p.proto == "tcp" else "delivered", "drop": "timeout"}
        seen = {
            want[o["verdict"]] if p.proto == "tcp" or o["verdict"] == "accept" else "silence"
            for o in doc["outcomes"]
        }
        assert got in seen, (flow, got, doc["outcomes"])
        if doc["certain"]:
            assert seen == {got}, flow
        docs.append(doc)
    # The addrtype, --syn and --tcp-flags matches are decided (live: the host's addresses are known).
    assert [d["certain"] for d in docs[:3]] == [True, True, True]
    assert docs[3]["certain"] is False  # --ctorigdstport is not modelled: undecided, never ignored


ROUND_TRIP = """\
table inet t {
  set p { type ipv4_addr . inet_service; flags interval; elements = { 10.66.0.0/30 . 2000-2002 } }
  chain c {
    type filter hook input priority 0; policy accept;
    ct status & (dnat | snat) == 0 tcp dport 2003 drop
    ct status dnat,snat accept
    tcp flags & (syn | ack) == 0 drop
    tcp flags syn,ack tcp dport 2004 reject with tcp reset
    tcp flags & (fin | syn | rst | ack) != syn ct state new drop
    fib daddr type { local, multicast } tcp dport 2005 drop
    ip saddr . tcp dport @p accept
    ip saddr . tcp dport != { 10.66.0.1 . 2006 } tcp dport 2006 drop
    iifname . ip saddr { "pk6*" . 10.66.0.0/24 } udp dport 2007 drop
  }
}
"""


def test_new_matches_round_trip_through_the_kernel_and_agree_with_it(lab: lab_mod.FirewallLab) -> None:
    from portkit.firewall import canonical, render_nft

    rs = _load(lab, ROUND_TRIP)
    assert not rs.notes, rs.notes
    script, problems = render_nft(rs)
    assert not problems, problems
    again = _load(lab, script.replace("flush ruleset\n", ""))
    assert canonical(again) == canonical(rs), script
    base = lab.sport_block()
    probes = [
        lab_mod.Probe(proto, "10.66.0.1", k, "10.66.0.2", port)
        for k, (proto, port) in enumerate(
            [
                ("tcp", 2001),
                ("tcp", 2003),
                ("tcp", 2004),
                ("tcp", 2005),
                ("tcp", 2006),
                ("udp", 2007),
                ("udp", 2006),
            ]
        )
    ]
    _agree(lab, rs, probes, base)
    # The first packets are decided (their flags and NAT status are known, and so are the
    # host's addresses); the handshake's ACK may not be (its flags and status are not).
    server = [ipaddress.ip_address(a) for a in (*lab_mod.SERVER4, *lab_mod.SERVER6)]
    for p in probes:
        d = evaluate(rs, p.packet(base, lab.server_if), direction=Direction.INPUT, local_addresses=server)
        assert d.certain, str(p)


def test_ipv4_forwarding_is_the_input_interfaces_setting(lab: lab_mod.FirewallLab, cli: Any) -> None:
    _load(lab, DNAT_AWAY)
    try:
        _sysctl(lab, "net.ipv4.ip_forward", "1")
        _sysctl(lab, f"net.ipv4.conf.{lab.server_if}.forwarding", "0")
        base = lab.sport_block()
        probe = lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2007)
        observed = lab.run([probe], base)[0]
        flow = f"tcp 10.66.0.1:{base} -> 10.66.0.2:2007 in {lab.server_if}"
        doc = cli("fw", "check", "--netns", lab.server, flow, "--json").json()
        assert (observed, doc["verdict"], doc["certain"]) == ("timeout", "drop", True)
        assert f"net.ipv4.conf.{lab.server_if}.forwarding = 0" in doc["reason"]
    finally:
        _sysctl(lab, "net.ipv4.ip_forward", "0")


KNOCK = """\
table inet t {
  set knocked { type ipv4_addr; flags dynamic, timeout; timeout 1m; }
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    tcp dport 2000 add @knocked { ip saddr } drop
    ip saddr @knocked tcp dport 2001 accept
  }
}
"""


def test_a_set_the_rules_fill_is_undecided_not_empty(lab: lab_mod.FirewallLab) -> None:
    rs = _load(lab, KNOCK)
    door = lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2001)
    knock = lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2000)
    base = lab.sport_block()
    before = lab.run([door], base)[0]
    lab.run([knock], base)
    after = lab.run([lab_mod.Probe("tcp", "10.66.0.1", 2, "10.66.0.2", 2001)], base)[0]
    assert (before, after) == ("timeout", "connected+accepted")  # the kernel's set changed
    allowed, sure = possible_observations(rs, door, base, lab.server_if)
    assert not sure and {before, after} <= allowed
    # Read again, the set holds the knocker: the first branch now says accepted, still uncertain.
    now = lab.kernel_ruleset()
    d = evaluate(now, door.packet(base, lab.server_if), direction=Direction.INPUT)
    assert (d.outcome, d.certain) == ("accept", False)


def test_a_redirect_that_changes_nothing_sets_no_dnat_status(lab: lab_mod.FirewallLab) -> None:
    # nf_nat_setup_info sets the DNAT status bit only when the tuple changes: a redirect to
    # the port the packet already has, on an interface whose first address it already goes
    # to, leaves `ct status dnat` false (OpenWrt's "Accept port redirections" then misses).
    rs = _load(
        lab,
        "table inet t {\n"
        " chain pre { type nat hook prerouting priority dstnat; tcp dport 2005 redirect to :2005; }\n"
        " chain input { type filter hook input priority 0; policy drop;\n"
        "  ct status dnat accept\n }\n}\n",
    )
    base = lab.sport_block()
    probe = lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2005)
    _agree(lab, rs, [probe], base)
    d = evaluate(rs, probe.packet(base, lab.server_if), direction=Direction.INPUT)
    # The first branch (the destination is the interface's first address) is the kernel's.
    assert d.outcome == "drop" and "accept" in {o.outcome for o in d.outcomes}


def test_notrack_before_conntrack_leaves_the_packet_untracked(lab: lab_mod.FirewallLab) -> None:
    rs = _load(
        lab,
        "table inet t {\n"
        " chain raw { type filter hook prerouting priority raw; tcp dport { 2006, 2007 } notrack; }\n"
        " chain late { type filter hook prerouting priority 0; tcp dport 2008 notrack; }\n"
        " chain input { type filter hook input priority 0; policy drop;\n"
        "  ct state new tcp dport { 2006, 2008 } accept\n"
        "  ct state untracked tcp dport 2007 accept\n }\n}\n",
    )
    base = lab.sport_block()
    probes = [
        lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2006),  # untracked: `ct state new` misses
        lab_mod.Probe("tcp", "10.66.0.1", 1, "10.66.0.2", 2007),  # untracked: accepted
        lab_mod.Probe("tcp", "10.66.0.1", 2, "10.66.0.2", 2008),  # notrack after conntrack: no effect
    ]
    assert all(_agree(lab, rs, probes, base))  # every answer certain, and the kernel's
    from portkit.firewall import FastEvaluator
    from portkit.firewall._fast import inexact

    assert any(inexact(r) for t in rs.tables for c in t.chains for r in c.rules)
    assert FastEvaluator  # the compiled evaluator hands flows that meet a notrack rule to evaluate()
