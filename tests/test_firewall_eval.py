"""The evaluator's netfilter semantics, pinned down one behaviour at a time (no root needed)."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fixtures_firewall as lab_mod
from portkit.errors import UsageError
from portkit.firewall import (
    CtState,
    Direction,
    FastEvaluator,
    Packet,
    Verdict,
    evaluate,
    import_iptables_save,
    parse_policy,
)
from portkit.firewall._fast import FlowArrays


def test_accept_ends_only_its_own_base_chain() -> None:
    rs = parse_policy("allow tcp 22\n")  # inet portkit input, priority 0
    other = parse_policy("default incoming deny\n")
    from dataclasses import replace

    second = replace(
        other.tables[0], name="late", chains=tuple(replace(c, priority=10) for c in other.tables[0].chains)
    )
    both = replace(rs, tables=(rs.tables[0], second))
    d = evaluate(both, Packet.parse("tcp 192.0.2.1:5000 -> 192.0.2.2:22"))
    assert d.verdict is Verdict.DROP
    assert [s.table for s in d.trace] == ["inet portkit", "inet late"]
    assert d.reason.startswith("policy drop of inet late input")


IPT = """\
*filter
:INPUT DROP [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:web - [0:0]
:admin - [0:0]
-A INPUT -i lo -j ACCEPT
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m multiport --dports 80,443 -j web
-A INPUT -p tcp --dport 22 -g admin
-A INPUT -p tcp --dport 23 -j REJECT --reject-with tcp-reset
-A INPUT -p udp --dport 53 -j REJECT --reject-with icmp-admin-prohibited
-A INPUT -p tcp --dport 80 -j ACCEPT
-A web -s 203.0.113.0/24 -j RETURN
-A web -p tcp --dport 443 -j ACCEPT
-A admin -s 10.0.0.0/8 -j ACCEPT
COMMIT
"""


@pytest.mark.parametrize(
    ("flow", "outcome", "decider"),
    [
        ("tcp 198.51.100.1:4000 -> 192.0.2.2:443", "accept", "web"),
        ("tcp 203.0.113.9:4000 -> 192.0.2.2:443", "drop", "INPUT"),  # return, then the policy
        ("tcp 203.0.113.9:4000 -> 192.0.2.2:80", "accept", "INPUT"),  # return, then rule 7
        ("tcp 10.1.2.3:4000 -> 192.0.2.2:22", "accept", "admin"),
        ("tcp 198.51.100.1:4000 -> 192.0.2.2:22", "drop", "INPUT"),  # goto: admin's end is the policy
        ("tcp 198.51.100.1:4000 -> 192.0.2.2:23", "reject:tcp-reset", "INPUT"),
        ("udp 198.51.100.1:4000 -> 192.0.2.2:53", "reject:icmp-admin-prohibited", "INPUT"),
        ("tcp 198.51.100.1:4000 -> 192.0.2.2:8080 state established", "accept", "INPUT"),
        ("tcp 198.51.100.1:4000 -> 192.0.2.2:8080 in lo", "accept", "INPUT"),
    ],
)
def test_jump_goto_return_and_policies(flow: str, outcome: str, decider: str) -> None:
    rs = import_iptables_save(IPT)
    d = evaluate(rs, Packet.parse(flow))
    assert d.outcome == outcome
    assert d.decided_by is not None and d.decided_by.chain == decider


def test_goto_trace_names_rules_and_lines() -> None:
    d = evaluate(import_iptables_save(IPT), Packet.parse("tcp 198.51.100.1:4000 -> 192.0.2.2:22"))
    steps = [(s.chain, s.position, s.where, s.matched) for s in d.trace]
    assert ("INPUT", 4, "line 10", True) in steps
    assert ("admin", 1, "line 16", False) in steps
    assert steps[-1] == ("INPUT", 0, "", True)  # the policy, after goto fell off admin


DOCKER_UFW = """\
*nat
:PREROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -j DOCKER
-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
COMMIT
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:ufw-user-input - [0:0]
:DOCKER-USER - [0:0]
-A INPUT -j ufw-user-input
-A ufw-user-input -p tcp --dport 8080 -j DROP
-A ufw-user-input -p tcp --dport 22 -j ACCEPT
-A FORWARD -j DOCKER-USER
-A FORWARD -d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT
COMMIT
"""


def test_ufw_deny_does_not_stop_a_published_docker_port() -> None:
    rs = import_iptables_save(DOCKER_UFW)
    d = evaluate(
        rs,
        Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.10:8080 in eth0"),
        route=lambda a: "docker0" if a in ipaddress.ip_network("172.17.0.0/16") else "eth0",
    )
    assert d.verdict is Verdict.ACCEPT
    assert d.direction is Direction.FORWARD
    assert (
        d.final_packet is not None and str(d.final_packet.dst) == "172.17.0.2" and d.final_packet.dport == 80
    )
    hooks = {s.hook.value for s in d.trace}
    assert "input" not in hooks and {"prerouting", "forward"} <= hooks
    # The same port without the DNAT is stopped by the ufw rule on input.
    d2 = evaluate(rs, Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.10:8080 in docker0"))
    assert d2.verdict is Verdict.DROP and d2.direction is Direction.INPUT


@pytest.mark.parametrize(
    ("policy", "flow", "answer", "state", "errno"),
    [
        (
            "reject tcp 1-100 with tcp-reset",
            "tcp 192.0.2.1:9 -> 192.0.2.2:80",
            "tcp-reset",
            "closed",
            "ECONNREFUSED",
        ),
        ("reject tcp 80", "tcp 192.0.2.1:9 -> 192.0.2.2:80", "tcp-reset", "closed", "ECONNREFUSED"),
        (
            "reject udp 53",
            "udp 192.0.2.1:9 -> 192.0.2.2:53",
            "icmp-port-unreachable",
            "closed",
            "ECONNREFUSED",
        ),
        (
            "reject udp 53",
            "udp [2001:db8::1]:9 -> [2001:db8::2]:53",
            "icmpv6-port-unreachable",
            "closed",
            "ECONNREFUSED",
        ),
        (
            "reject tcp 80 with admin-prohibited",
            "tcp 192.0.2.1:9 -> 192.0.2.2:80",
            "icmp-admin-prohibited",
            "filtered",
            "EHOSTUNREACH",
        ),
        (
            "reject tcp 80 with admin-prohibited",
            "tcp [2001:db8::1]:9 -> [2001:db8::2]:80",
            "icmpv6-admin-prohibited",
            "filtered",
            "EACCES",
        ),
        (
            "reject tcp 80 with no-route",
            "tcp 192.0.2.1:9 -> 192.0.2.2:80",
            "icmp-net-unreachable",
            "filtered",
            "ENETUNREACH",
        ),
    ],
)
def test_reject_kinds_and_what_a_scanner_sees(
    policy: str, flow: str, answer: str, state: str, errno: str
) -> None:
    d = evaluate(parse_policy(policy + "\n"), Packet.parse(flow))
    assert d.verdict is Verdict.REJECT and d.reject_with == answer
    assert d.scanner is not None and d.scanner.state == state and d.scanner.errno == errno
    assert d.to_json()["reject_with"] == answer


def test_drop_is_filtered_and_accept_unfiltered() -> None:
    rs = parse_policy("default incoming deny\nallow tcp 22\n")
    drop = evaluate(rs, Packet.parse("tcp 192.0.2.1:9 -> 192.0.2.2:23"))
    assert (
        drop.scanner is not None and drop.scanner.state == "filtered" and "times out" in drop.scanner.connect
    )
    ok = evaluate(rs, Packet.parse("tcp 192.0.2.1:9 -> 192.0.2.2:22"), listening=True)
    assert ok.scanner is not None and ok.scanner.state == "open"


def test_nat_uses_the_connection_binding_for_established_packets() -> None:
    rs = import_iptables_save(DOCKER_UFW)
    d = evaluate(
        rs, Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.10:8080 in eth0 out docker0 state established")
    )
    assert d.final_packet is not None and str(d.final_packet.dst) == "172.17.0.2"


@pytest.mark.parametrize(
    "bad",
    [
        "tcp 1.2.3.4 -> ",
        "bogus 1.2.3.4:1 -> 5.6.7.8:2",
        "tcp 1.2.3.4:1 -> ::1:2",
        "tcp 1.2.3.4:1 -> 5.6.7.8:2 state sleepy",
        "tcp 1.2.3.4:99999 -> 5.6.7.8:2",
    ],
)
def test_bad_flows_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        Packet.parse(bad)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_compiled_evaluator_agrees_with_the_reference(data: st.DataObject) -> None:
    rs = data.draw(lab_mod.rulesets("pk6bX"), label="ruleset")
    probes = data.draw(lab_mod.probe_lists(30), label="probes")
    rnd = random.Random(data.draw(st.integers(0, 2**32)))
    packets = [
        p.packet(0, rnd.choice(["pk6bX", "lo", "eth0", ""]), rnd.choice(list(CtState))) for p in probes
    ]
    result = FastEvaluator(rs).run(FlowArrays.from_packets(packets))
    for i, p in enumerate(packets):
        assert result.outcome(i) == evaluate(rs, p, direction=Direction.INPUT).outcome, str(p)


def test_compiled_evaluator_handles_dnat_and_icmp() -> None:
    rs = import_iptables_save(DOCKER_UFW)
    pol = parse_policy("default incoming deny\nallow icmp type echo-request\nallow icmpv6\n")
    packets = [
        Packet.parse("icmp 192.0.2.1 -> 192.0.2.2"),
        Packet.parse("icmp 192.0.2.1 -> 192.0.2.2 type 13"),
        Packet.parse("icmpv6 2001:db8::1 -> 2001:db8::2"),
        Packet.parse("udp 192.0.2.1:1 -> 192.0.2.2:2"),
    ]
    res = FastEvaluator(pol).run(FlowArrays.from_packets(packets))
    assert [res.outcome(i) for i in range(4)] == ["accept", "drop", "accept", "drop"]
    fwd = [
        Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.10:8080 in eth0 out docker0"),
        Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.10:8081 in eth0 out docker0"),
    ]
    res = FastEvaluator(rs).run(FlowArrays.from_packets(fwd), direction=Direction.FORWARD)
    assert (
        [res.outcome(i) for i in range(2)]
        == [evaluate(rs, p, direction=Direction.FORWARD).outcome for p in fwd]
        == ["accept", "drop"]
    )


@pytest.mark.parametrize("direction", list(Direction))
def test_the_walk_visits_the_hooks_of_its_path_in_order(direction: Direction) -> None:
    """A base chain on every hook, each only a policy accept: the trace names the hooks the
    walk passed, which must be PATHS (the table the CLI and the fast evaluator read)."""
    from portkit.firewall import PATHS, Chain, Family, FilterAction, Hook, Ruleset, Table

    chains = tuple(Chain(h.value, (), h, priority=0, policy=FilterAction.ACCEPT) for h in Hook)
    rs = Ruleset((Table(Family.INET, "every_hook", chains),), "every hook")
    flow = {
        Direction.INPUT: "tcp 198.51.100.7:40000 -> 192.0.2.1:22 in eth0",
        Direction.FORWARD: "tcp 198.51.100.7:40000 -> 10.0.0.5:22 in eth0 out eth1",
        Direction.OUTPUT: "tcp 192.0.2.1:40000 -> 198.51.100.7:22 out eth0",
    }[direction]
    for stated in (direction, None):  # the path stated, or read from the packet's interfaces
        d = evaluate(rs, Packet.parse(flow), direction=stated)
        assert d.verdict is Verdict.ACCEPT and d.certain and d.direction is direction
        assert tuple(s.hook for s in d.trace) == PATHS[direction]


# --- stated rate limits (`evaluate(limits=)`, `fw check --limits`) -------------------------------

_LIMITED_NFT = """
table inet f {
    chain input {
        type filter hook input priority 0; policy drop;
        tcp flags & (fin | syn | rst | ack) == syn jump syn_flood
        tcp dport 22 accept
        tcp dport 25 quota over 10 mbytes drop
        tcp dport 25 accept
        tcp dport 80 meta mark 0x1 accept
    }
    chain syn_flood {
        limit rate 25/second burst 50 packets return
        drop
    }
}
"""

_LIMITED_IPTABLES = """*filter
:INPUT DROP [0:0]
-A INPUT -p tcp --dport 22 -m connlimit --connlimit-above 4 -j REJECT --reject-with tcp-reset
-A INPUT -p tcp --dport 22 -j ACCEPT
-A INPUT -p tcp --dport 23 -m hashlimit --hashlimit-upto 5/sec --hashlimit-name t -j ACCEPT
-A INPUT -p tcp --dport 24 -m recent --name r --update --seconds 30 --hitcount 6 -j DROP
-A INPUT -p tcp --dport 24 -j ACCEPT
COMMIT
"""


def _limited(limits: bool | None, flow: str, nft: bool = True):  # type: ignore[no-untyped-def]
    from portkit.firewall import parse_nft_script

    rs = parse_nft_script(_LIMITED_NFT) if nft else import_iptables_save(_LIMITED_IPTABLES)
    return evaluate(rs, Packet.parse(flow), direction=Direction.INPUT, limits=limits)


@pytest.mark.parametrize(
    ("flow", "nft", "unreached", "reached"),
    [
        ("tcp 192.0.2.1:5000 -> 192.0.2.2:22", True, "accept", "drop"),  # a SYN flood limit
        ("tcp 192.0.2.1:5000 -> 192.0.2.2:25", True, "accept", "drop"),  # a quota
        ("tcp 192.0.2.1:5000 -> 192.0.2.2:22", False, "accept", "reject:tcp-reset"),  # connlimit
        ("tcp 192.0.2.1:5000 -> 192.0.2.2:23", False, "accept", "drop"),  # hashlimit
    ],
)
def test_stated_limits_decide_rate_matches(flow: str, nft: bool, unreached: str, reached: str) -> None:
    unstated = _limited(None, flow, nft)
    assert not unstated.certain and unstated.possible == {unreached, reached}
    assert unstated.stated == ()
    calm, flood = _limited(True, flow, nft), _limited(False, flow, nft)
    assert calm.certain and calm.outcome == unreached and calm.stated
    assert flood.certain and flood.outcome == reached and "limits reached" in flood.stated[0]


def test_stated_limits_leave_other_unknowns_undecided() -> None:
    # A packet mark and a source's history (`-m recent`) are not rates: still forked.
    marked = _limited(True, "tcp 192.0.2.1:5000 -> 192.0.2.2:80")
    assert not marked.certain and marked.possible == {"accept", "drop"}
    recent = _limited(True, "tcp 192.0.2.1:5000 -> 192.0.2.2:24", nft=False)
    assert not recent.certain and recent.possible == {"accept", "drop"} and recent.stated == ()
@pytest.mark.parametrize("target", ["TARPIT", "DELUDE", "CLUSTERIP --new"])
def test_a_target_portkit_does_not_know_leaves_the_verdict_undecided(target: str) -> None:
    # `-j TARPIT` (xtables-addons) holds the connection and drops the packet; read as a target
    # that only changes the packet, the policy after it made the answer a certain accept.
    rs = import_iptables_save(
        f"*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 445 -j {target}\nCOMMIT\n"
    )
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:445 in eth0"))
    assert not d.certain
    assert {o.verdict for o in d.outcomes} == {Verdict.ACCEPT, Verdict.DROP}
    other = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22 in eth0"))
    assert other.certain and other.verdict is Verdict.ACCEPT


@pytest.mark.parametrize(
    "target", ["MARK --set-mark 1", "CT --notrack", "TCPMSS --clamp-mss-to-pmtu", "NFLOG", "SET"]
)
def test_targets_that_only_change_the_packet_go_on_to_the_next_rule(target: str) -> None:
    rs = import_iptables_save(
        f"*mangle\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -p tcp -j {target}\nCOMMIT\n"
        "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp --dport 445 -j DROP\nCOMMIT\n"
    )
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:445 in eth0"))
    assert d.certain and d.verdict is Verdict.DROP
