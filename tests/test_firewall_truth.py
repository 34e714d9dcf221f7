"""Fail closed: matches the model cannot decide make a verdict uncertain (both branches are
followed and reported), matches whose protocol cannot apply are false, and the compiled
evaluator never disagrees with the reference one. No root needed; the kernel checks of the
same cases are in test_firewall_truth_kernel.py."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portkit.firewall import (
    Chain,
    ChainType,
    CtState,
    Direction,
    Family,
    FastEvaluator,
    Field,
    FilterAction,
    FilterRule,
    Hook,
    Match,
    Packet,
    Ruleset,
    Table,
    Verdict,
    evaluate,
    import_iptables_save,
    import_nft_json,
)
from portkit.firewall._eval import MAX_BRANCHES
from portkit.firewall._fast import FlowArrays


def _doc(
    *rules: list[dict[str, Any]], policy: str = "drop", extra: list[dict[str, Any]] | None = None
) -> Any:
    items: list[dict[str, Any]] = [
        {"table": {"family": "inet", "name": "t"}},
        *(extra or []),
        {
            "chain": {
                "family": "inet",
                "table": "t",
                "name": "input",
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": policy,
            }
        },
    ]
    for n, expr in enumerate(rules, start=1):
        items.append({"rule": {"family": "inet", "table": "t", "chain": "input", "handle": n, "expr": expr}})
    return {"nftables": items}


ICMPV6_CONCAT = [
    {
        "match": {
            "op": "==",
            "left": {
                "concat": [
                    {"payload": {"protocol": "icmpv6", "field": "type"}},
                    {"payload": {"protocol": "icmpv6", "field": "code"}},
                ]
            },
            "right": {"set": [{"concat": ["destination-unreachable", "no-route"]}]},
        }
    },
    {"accept": None},
]
CT_STATUS_DNAT = [
    {"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}},
    {"accept": None},
]
LIMIT_OVER_SET = [
    {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}},
    {
        "set": {
            "op": "add",
            "elem": {"payload": {"protocol": "ip", "field": "saddr"}},
            "set": "@flood",
            "stmt": [{"limit": {"rate": 10, "burst": 5, "per": "minute", "inv": True}}],
        }
    },
    {"drop": None},
]
TCP_FLAGS = [
    {
        "match": {
            "op": "==",
            "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["syn", "ack"]]},
            "right": "syn",
        }
    },
    {"accept": None},
]
TH_DPORT = [
    {"match": {"op": "==", "left": {"payload": {"protocol": "th", "field": "dport"}}, "right": 22}},
    {"accept": None},
]


def test_a_match_whose_protocol_cannot_apply_is_false_not_assumed() -> None:
    rs = import_nft_json(_doc(ICMPV6_CONCAT))
    for flow in ("tcp 192.0.2.1:4000 -> 192.0.2.2:22", "tcp [2001:db8::1]:4000 -> [2001:db8::2]:22"):
        d = evaluate(rs, Packet.parse(flow))
        assert (d.outcome, d.certain) == ("drop", True), flow
    assert evaluate(import_nft_json(_doc(TCP_FLAGS)), Packet.parse("udp 192.0.2.1:1 -> 192.0.2.2:53")).certain


def test_ct_status_dnat_is_known_for_a_first_packet_and_uncertain_after() -> None:
    rs = import_nft_json(_doc(CT_STATUS_DNAT))
    new = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert (new.outcome, new.certain) == ("drop", True)  # nothing DNATed this connection
    est = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22 state established"))
    assert not est.certain and est.possible == {"accept", "drop"}


def test_ct_status_dnat_holds_after_a_prerouting_dnat() -> None:
    doc = _doc(CT_STATUS_DNAT)
    doc["nftables"][1:1] = [
        {
            "chain": {
                "family": "inet",
                "table": "t",
                "name": "pre",
                "type": "nat",
                "hook": "prerouting",
                "prio": -100,
                "policy": "accept",
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "t",
                "chain": "pre",
                "handle": 90,
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "right": 80,
                        }
                    },
                    {"redirect": {"port": 8080}},
                ],
            }
        },
    ]
    rs = import_nft_json(doc)
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:80"))
    assert (d.outcome, d.certain) == ("accept", True)


def test_a_rate_limited_set_update_is_uncertain_and_noted() -> None:
    set_decl = {
        "set": {"family": "inet", "table": "t", "name": "flood", "type": "ipv4_addr", "flags": ["dynamic"]}
    }
    rs = import_nft_json(_doc(LIMIT_OVER_SET, policy="accept", extra=[set_decl]))
    assert any("limit" in n and "undecided" in n for n in rs.notes)
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert not d.certain and d.possible == {"accept", "drop"}
    assert d.outcome == "accept"  # first branch: the limit is not exceeded
    drop = next(o for o in d.outcomes if o.verdict is Verdict.DROP)
    assert drop.assumed and drop.assumed[0][1] is True and "limit" in drop.assumed[0][0]
    assert any(s.unknown and s.matched for s in drop.trace)
    # Established traffic never reaches the set update (ct state new is false): certain.
    assert evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22 state established")).certain
    # IPv6 packets never meet `ip saddr`'s dependency: certain too.
    assert evaluate(rs, Packet.parse("tcp [2001:db8::1]:4000 -> [2001:db8::2]:22")).certain


def test_th_dport_reads_other_headers_on_icmp_so_it_is_unknown_there() -> None:
    rs = import_nft_json(_doc(TH_DPORT))
    assert evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22")).outcome == "accept"
    assert evaluate(rs, Packet.parse("udp 192.0.2.1:4000 -> 192.0.2.2:23")).certain
    icmp = evaluate(rs, Packet.parse("icmp 192.0.2.1 -> 192.0.2.2"))
    assert not icmp.certain and icmp.possible == {"accept", "drop"}


def test_branches_that_agree_give_a_certain_decision() -> None:
    set_decl = {
        "set": {"family": "inet", "table": "t", "name": "flood", "type": "ipv4_addr", "flags": ["dynamic"]}
    }
    rs = import_nft_json(_doc(LIMIT_OVER_SET, policy="drop", extra=[set_decl]))
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert d.certain and d.outcome == "drop" and len(d.outcomes) == 1
    assert d.uncertain  # the undecided rule is still named


def test_branching_is_bounded() -> None:
    rules = tuple(
        FilterRule((Match(Field.OPAQUE, text=f"meta mark {k}"),), FilterAction.JUMP, target="c")
        for k in range(20)
    )
    sub = Chain("c", (FilterRule((Match(Field.OPAQUE, text="meta mark 99"),), FilterAction.RETURN),))
    base = Chain("input", rules, Hook.INPUT, ChainType.FILTER, 0, FilterAction.DROP)
    rs = Ruleset((Table(Family.INET, "t", (base, sub)),))
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert d.truncated and not d.certain and 1 <= len(d.outcomes) <= MAX_BRANCHES


def test_json_keeps_old_fields_and_adds_outcomes() -> None:
    rs = import_nft_json(_doc(CT_STATUS_DNAT))
    doc = json.loads(
        json.dumps(evaluate(rs, Packet.parse("tcp 192.0.2.1:4 -> 192.0.2.2:22 state established")).to_json())
    )
    for key in (
        "flow",
        "packet",
        "verdict",
        "reject_with",
        "direction",
        "reason",
        "nat",
        "scanner",
        "uncertain",
        "trace",
    ):
        assert key in doc
    assert doc["certain"] is False and doc["truncated"] is False
    assert {o["verdict"] for o in doc["outcomes"]} == {"accept", "drop"}
    assert all({"assumed", "trace", "reason", "scanner"} <= set(o) for o in doc["outcomes"])


def test_cli_says_uncertain_and_exits_3(tmp_path: Any, cli: Any) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(_doc(CT_STATUS_DNAT)))
    flow = "tcp 192.0.2.1:4000 -> 192.0.2.2:22 state established"
    res = cli("fw", "check", "--rules", str(path), flow)
    assert res.status == 3
    assert "UNCERTAIN" in res.stdout and "outcome 1: DROP" in res.stdout and "outcome 2: ACCEPT" in res.stdout
    doc = cli("fw", "check", "--rules", str(path), flow, "--json").json()
    assert doc["certain"] is False
    sure = cli("fw", "check", "--rules", str(path), "tcp 192.0.2.1:4000 -> 192.0.2.2:22")
    assert sure.status == 1 and "UNCERTAIN" not in sure.stdout
    flows = tmp_path / "flows"
    flows.write_text(f"{flow}\ntcp 192.0.2.1:4000 -> 192.0.2.2:22\n")
    assert cli("fw", "check", "--rules", str(path), "--flows", str(flows)).status == 1
    flows.write_text(f"{flow}\n")
    assert cli("fw", "check", "--rules", str(path), "--flows", str(flows)).status == 3


# --- the compiled evaluator agrees, or hands the flow to the reference one ----------------

_OPAQUE_STMTS = [ICMPV6_CONCAT[0], CT_STATUS_DNAT[0], TCP_FLAGS[0], TH_DPORT[0], LIMIT_OVER_SET[1]]


@st.composite
def _opaque_rulesets(draw: Any) -> Any:
    rules = []
    for _ in range(draw(st.integers(1, 6))):
        expr: list[dict[str, Any]] = []
        if draw(st.booleans()):
            proto = draw(st.sampled_from(["tcp", "udp"]))
            port = draw(st.integers(20, 25))
            expr.append(
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": proto, "field": "dport"}},
                        "right": port,
                    }
                }
            )
        if draw(st.booleans()):
            expr.append(draw(st.sampled_from(_OPAQUE_STMTS)))
        expr.append({draw(st.sampled_from(["accept", "drop"])): None})
        rules.append(expr)
    set_decl = {
        "set": {"family": "inet", "table": "t", "name": "flood", "type": "ipv4_addr", "flags": ["dynamic"]}
    }
    return import_nft_json(_doc(*rules, policy=draw(st.sampled_from(["accept", "drop"])), extra=[set_decl]))


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(rs=_opaque_rulesets(), data=st.data())
def test_fast_evaluator_is_never_confidently_different(rs: Ruleset, data: st.DataObject) -> None:
    packets = []
    for _ in range(12):
        proto = data.draw(st.sampled_from([6, 17, 1, 58]))
        v6 = proto == 58 or (data.draw(st.booleans()) and proto != 1)
        src, dst = ("2001:db8::1", "2001:db8::2") if v6 else ("192.0.2.1", "192.0.2.2")
        ports = proto in (6, 17)
        packets.append(
            Packet(
                proto,
                ipaddress.ip_address(src),
                ipaddress.ip_address(dst),
                4000 if ports else None,
                data.draw(st.integers(20, 25)) if ports else None,
                state=data.draw(st.sampled_from([CtState.NEW, CtState.ESTABLISHED])),
            )
        )
    res = FastEvaluator(rs).run(FlowArrays.from_packets(packets), direction=Direction.INPUT)
    for i, p in enumerate(packets):
        d = evaluate(rs, p, direction=Direction.INPUT)
        assert bool(res.certain[i]) == d.certain, str(p)
        assert res.outcome(i) == d.outcome, str(p)
        # Every rule with an undecidable match on this packet's path shows up as uncertainty
        # unless the branches agree: a confident answer is one every branch gives.
        if d.certain:
            assert len(d.possible) == 1


# --- concatenations: sets, maps and verdict maps on tuples --------------------------------

CONCAT_SET = {
    "set": {
        "family": "inet",
        "table": "t",
        "name": "pairs",
        "type": ["ipv4_addr", "inet_service"],
        "flags": ["interval"],
        "elem": [
            {"concat": [{"prefix": {"addr": "10.0.0.0", "len": 8}}, {"range": [20, 30]}]},
            {"concat": ["192.0.2.7", 22]},
        ],
    }
}
CONCAT_MAP = {
    "map": {
        "family": "inet",
        "table": "t",
        "name": "svc",
        "type": ["inet_proto", "inet_service"],
        "map": "verdict",
        "elem": [[{"concat": ["udp", 53]}, {"accept": None}], [{"concat": ["tcp", 23]}, {"drop": None}]],
    }
}
_KEY = {
    "concat": [
        {"payload": {"protocol": "ip", "field": "protocol"}},
        {"payload": {"protocol": "th", "field": "dport"}},
    ]
}
_SADDR_DPORT = {
    "concat": [
        {"payload": {"protocol": "ip", "field": "saddr"}},
        {"payload": {"protocol": "tcp", "field": "dport"}},
    ]
}
CONCAT_RULES = [
    [{"vmap": {"key": _KEY, "data": {"set": [[{"concat": ["tcp", 2000]}, {"accept": None}]]}}}],
    [
        {"match": {"op": "==", "left": _SADDR_DPORT, "right": {"set": [{"concat": ["192.0.2.9", 2001]}]}}},
        {"accept": None},
    ],
    [{"match": {"op": "==", "left": _SADDR_DPORT, "right": "@pairs"}}, {"accept": None}],
    [
        {
            "vmap": {
                "key": {
                    "concat": [
                        {"meta": {"key": "l4proto"}},
                        {"payload": {"protocol": "th", "field": "dport"}},
                    ]
                },
                "data": "@svc",
            }
        }
    ],
]


def test_concatenated_sets_and_verdict_maps_match_tuples() -> None:
    rs = import_nft_json(_doc(*CONCAT_RULES, extra=[CONCAT_SET, CONCAT_MAP]))
    assert not rs.notes
    cases = {
        "tcp 192.0.2.1:4000 -> 192.0.2.2:2000": "accept",  # vmap tcp . 2000
        "udp 192.0.2.1:4000 -> 192.0.2.2:2000": "drop",  # udp . 2000 is no key
        "tcp 192.0.2.9:4000 -> 192.0.2.2:2001": "accept",  # anonymous concat set
        "tcp 192.0.2.8:4000 -> 192.0.2.2:2001": "drop",  # right port, wrong address
        "tcp 10.9.9.9:4000 -> 192.0.2.2:25": "accept",  # 10.0.0.0/8 . 20-30 (interval)
        "tcp 10.9.9.9:4000 -> 192.0.2.2:31": "drop",
        "tcp 192.0.2.7:4000 -> 192.0.2.2:22": "accept",
        "tcp 192.0.2.7:4000 -> 192.0.2.2:23": "drop",  # named vmap: tcp . 23 drop
        "udp 192.0.2.7:4000 -> 192.0.2.2:53": "accept",  # named vmap: udp . 53 accept
    }
    for flow, want in cases.items():
        d = evaluate(rs, Packet.parse(flow))
        assert (d.outcome, d.certain) == (want, True), flow
    # An ICMP packet never matches `ip protocol tcp . th dport ...`: its protocol differs.
    icmp = evaluate(rs, Packet.parse("icmp 192.0.2.1 -> 192.0.2.2"))
    assert (icmp.outcome, icmp.certain) == ("drop", True)
    res = FastEvaluator(rs).run(FlowArrays.from_packets([Packet.parse(f) for f in cases]))
    assert [res.outcome(i) for i in range(len(cases))] == list(cases.values())


def test_an_unmodelled_verdict_map_forks_on_each_verdict() -> None:
    key = {"concat": [{"meta": {"key": "mark"}}, {"payload": {"protocol": "tcp", "field": "dport"}}]}
    vmap = [{"vmap": {"key": key, "data": {"set": [[{"concat": [1, 22]}, {"accept": None}]]}}}]
    rs = import_nft_json(_doc(vmap))
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert not d.certain and d.possible == {"accept", "drop"}
    assert evaluate(rs, Packet.parse("udp 192.0.2.1:4000 -> 192.0.2.2:22")).certain  # tcp dependency


def test_tcp_flags_are_known_for_a_first_packet_only() -> None:
    not_syn = [
        {
            "match": {
                "op": "!=",
                "left": {
                    "&": [{"payload": {"protocol": "tcp", "field": "flags"}}, ["fin", "syn", "rst", "ack"]]
                },
                "right": "syn",
            }
        },
        {"drop": None},
    ]
    syn = [
        {"match": {"op": "in", "left": {"payload": {"protocol": "tcp", "field": "flags"}}, "right": "syn"}},
        {"accept": None},
    ]
    rs = import_nft_json(_doc(not_syn, syn))
    assert not rs.notes
    assert str(rs.tables[0].chains[0].rules[0]) == "tcp flags & (fin | syn | rst | ack) != syn drop"
    new = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert (new.outcome, new.certain) == ("accept", True)  # a SYN: not dropped, then accepted
    later = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22 state established"))
    assert not later.certain and later.possible == {"accept", "drop"}
    assert evaluate(rs, Packet.parse("udp 192.0.2.1:4000 -> 192.0.2.2:22")).certain


def test_fib_daddr_type_local_is_known_when_the_hosts_addresses_are() -> None:
    local = [
        {"match": {"op": "==", "left": {"fib": {"result": "type", "flags": ["daddr"]}}, "right": "local"}},
        {"accept": None},
    ]
    rpf = [
        {
            "match": {
                "op": "==",
                "left": {"fib": {"result": "oif", "flags": ["saddr", "iif"]}},
                "right": False,
            }
        },
        {"drop": None},
    ]
    rs = import_nft_json(_doc(rpf, local))
    flow = Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22")
    mine = [ipaddress.ip_address("192.0.2.2")]
    d = evaluate(rs, flow, local_addresses=mine)
    assert not d.certain  # the reverse-path lookup stays undecided...
    assert d.outcome == "accept"  # ...and the first branch takes the route as found
    assert d.possible == {"accept", "drop"}
    only_local = import_nft_json(_doc(local))
    assert evaluate(only_local, flow, local_addresses=mine).certain
    assert evaluate(only_local, flow, local_addresses=mine).outcome == "accept"
    other = evaluate(only_local, flow, local_addresses=[ipaddress.ip_address("192.0.2.3")])
    assert (other.outcome, other.certain) == ("drop", True)
    assert not evaluate(only_local, flow).certain  # a rules file: the host's addresses are unknown


IPT_TRUTH = """\
*filter
:INPUT DROP [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A INPUT -p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP
-A INPUT -m conntrack --ctstate DNAT -j ACCEPT
-A INPUT -m conntrack --ctstatus SEEN_REPLY -j ACCEPT
-A INPUT -p tcp -m addrtype --dst-type LOCAL -m tcp --dport 2000 -j ACCEPT
-A INPUT -p tcp -m conntrack --ctstate NEW --ctorigdstport 2001 -j ACCEPT
-A INPUT -p tcp -m tcp --syn --dport 2002 -j ACCEPT
COMMIT
"""


def test_iptables_match_options_are_modelled_or_undecided_never_ignored() -> None:
    rs = import_iptables_save(IPT_TRUTH)
    rules = rs.tables[0].chains[0].rules
    assert [m.field for m in rules[1].matches if m.field is Field.TCP_FLAGS]
    assert [m.field for m in rules[2].matches] == [Field.CT_STATUS]
    assert [m.field for m in rules[3].matches] == [Field.CT_STATUS]
    assert Field.FIB_DADDR_TYPE in [m.field for m in rules[4].matches]
    assert Field.OPAQUE in [m.field for m in rules[5].matches]  # --ctorigdstport: not modelled
    mine = [ipaddress.ip_address("192.0.2.2")]

    def check(flow: str, **kw: Any) -> Any:
        return evaluate(rs, Packet.parse(flow), local_addresses=mine, **kw)

    # A SYN is not "new but not SYN": not dropped by rule 2; no DNAT; port 2000 to a local address.
    first = check("tcp 192.0.2.1:4000 -> 192.0.2.2:2000")
    assert (first.outcome, first.certain) == ("accept", True)
    # Past rule 4 the unmodelled --ctorigdstport decides: every such flow is uncertain.
    for port in (2001, 2003):
        undecided = check(f"tcp 192.0.2.1:4000 -> 192.0.2.2:{port}")
        assert not undecided.certain and undecided.possible == {"accept", "drop"}
    later = check("tcp 192.0.2.1:4000 -> 192.0.2.2:2000 state established")
    assert (later.outcome, later.certain) == ("accept", True)
    # Without the host's addresses the addrtype match is undecided.
    assert not evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:2000")).certain


def test_first_branch_takes_an_ordinary_packet_for_untracked_keys() -> None:
    def rule(left: Any, op: str, right: Any) -> list[dict[str, Any]]:
        return [{"match": {"op": op, "left": left, "right": right}}, {"accept": None}]

    cases = [
        (rule({"meta": {"key": "mark"}}, "==", 7), "drop"),  # not marked
        (rule({"&": [{"ct": {"key": "mark"}}, 255]}, "==", 0), "accept"),  # connection not marked
        (rule({"meta": {"key": "pkttype"}}, "==", {"set": ["broadcast", "multicast"]}), "drop"),
        (rule({"&": [{"payload": {"protocol": "ip", "field": "frag-off"}}, 8191]}, "!=", 0), "drop"),
    ]
    for expr, first in cases:
        rs = import_nft_json(_doc(expr))
        d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
        assert (d.outcome, d.certain) == (first, False), expr


def test_exact_rule_sets_compile_without_a_fallback() -> None:
    """Rule sets the box model holds exactly (the common case, and the benchmark's) build
    no hull tables: the compiled path is unchanged for them."""
    rs = import_nft_json(
        _doc(
            [
                {
                    "match": {
                        "op": "==",
                        "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                        "right": 22,
                    }
                },
                {"accept": None},
            ]
        )
    )
    fe = FastEvaluator(rs)
    assert fe._hulls == {}
    res = fe.run(FlowArrays.from_packets([Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22")]))
    assert res.outcome(0) == "accept" and bool(res.certain[0]) and not res.decisions


def test_sets_that_change_at_run_time_are_undecided() -> None:
    match = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@seen"}},
        {"drop": None},
    ]
    for decl in (
        {"set": {"family": "inet", "table": "t", "name": "seen", "type": "ipv4_addr", "flags": ["timeout"]}},
        {"set": {"family": "inet", "table": "t", "name": "seen", "type": "ipv4_addr", "elem": ["192.0.2.9"]}},
    ):
        adder = [
            {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@seen"}},
        ]
        rules = [match] if "flags" in decl["set"] else [adder, match]
        rs = import_nft_json(_doc(*rules, policy="accept", extra=[decl]))
        d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
        assert (d.outcome, d.certain) == ("accept", False), decl  # first branch: the snapshot
        assert d.possible == {"accept", "drop"}
    static = {
        "set": {"family": "inet", "table": "t", "name": "seen", "type": "ipv4_addr", "elem": ["192.0.2.1"]}
    }
    d = evaluate(
        import_nft_json(_doc(match, policy="accept", extra=[static])),
        Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"),
    )
    assert (d.outcome, d.certain) == ("drop", True)


def test_statements_that_read_a_header_carry_its_dependency() -> None:
    decl = {
        "set": {"family": "inet", "table": "t", "name": "seen", "type": "ipv4_addr", "flags": ["dynamic"]}
    }
    adder = [
        {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 2000}},
        {"set": {"op": "add", "elem": {"payload": {"protocol": "ip", "field": "saddr"}}, "set": "@seen"}},
        {"drop": None},
    ]
    rs = import_nft_json(_doc(adder, policy="accept", extra=[decl]))
    v4 = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:2000"))
    v6 = evaluate(rs, Packet.parse("tcp [2001:db8::1]:4000 -> [2001:db8::2]:2000"))
    assert (v4.outcome, v4.certain) == ("drop", True)
    assert (v6.outcome, v6.certain) == ("accept", True)  # `ip saddr` stops the rule for IPv6


def test_a_nat_target_from_a_map_of_ranges_makes_the_decision_uncertain() -> None:
    nat_chain = {
        "chain": {
            "family": "inet",
            "table": "t",
            "name": "pre",
            "type": "nat",
            "hook": "prerouting",
            "prio": -100,
            "policy": "accept",
        }
    }
    dnat_map = {
        "rule": {
            "family": "inet",
            "table": "t",
            "chain": "pre",
            "handle": 90,
            "expr": [
                {
                    "dnat": {
                        "family": "ip",
                        "addr": {
                            "map": {
                                "key": {"payload": {"protocol": "tcp", "field": "dport"}},
                                # A range of targets: which one the kernel picks is not known.
                                "data": {"set": [[2009, {"range": ["10.0.0.9", "10.0.0.12"]}]]},
                            }
                        },
                    }
                }
            ],
        }
    }
    rs = import_nft_json(_doc(policy="accept", extra=[nat_chain, dnat_map]))
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:2009"))
    assert not d.certain and any("cannot compute" in n for n in d.uncertain)
    # IPv6 packets never meet `dnat ip`: certain.
    assert evaluate(rs, Packet.parse("tcp [2001:db8::1]:4000 -> [2001:db8::2]:2009")).certain
    res = FastEvaluator(rs).run(
        FlowArrays.from_packets([Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:2009")])
    )
    assert not bool(res.certain[0])
    # The map's key reads the TCP header: a UDP packet never meets the rule.
    assert evaluate(rs, Packet.parse("udp 192.0.2.1:4000 -> 192.0.2.2:2009")).certain


def test_a_queued_packet_is_decided_by_userspace_so_uncertain() -> None:
    rs = import_nft_json(_doc([{"queue": {"num": 0}}], policy="accept"))
    d = evaluate(rs, Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22"))
    assert (d.outcome, d.certain, d.possible) == ("drop", False, {"accept", "drop"})
    res = FastEvaluator(rs).run(FlowArrays.from_packets([Packet.parse("tcp 192.0.2.1:4000 -> 192.0.2.2:22")]))
    assert (res.outcome(0), bool(res.certain[0])) == ("drop", False)
