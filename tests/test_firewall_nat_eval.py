"""Both NAT bindings of a connection: a DNAT on prerouting/output and a SNAT or masquerade on
postrouting/input apply to the same first packet, as netfilter's nf_nat_inet_fn does.

Pure: rule sets from iptables-save text (no kernel). tests/test_firewall_nat_truth.py checks
the same against the real kernel in namespaces."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

from portkit.firewall import (
    CtState,
    Direction,
    FastEvaluator,
    Hook,
    Packet,
    Ruleset,
    evaluate,
    import_iptables_save,
)
from portkit.firewall._fast import FlowArrays

HAIRPIN = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 203.0.113.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 192.168.1.100:443
-A OUTPUT -d 198.51.100.9/32 -p tcp -m tcp --dport 9100 -j DNAT --to-destination 203.0.113.2:9100
-A POSTROUTING -s 192.168.1.0/24 -d 192.168.1.100/32 -p tcp -m conntrack --ctstate DNAT -j MASQUERADE
-A POSTROUTING -d 203.0.113.2/32 -p tcp -m tcp --dport 9100 -j SNAT --to-source 203.0.113.3:40123
-A POSTROUTING -o wan0 -j MASQUERADE
COMMIT
"""

ROUTER_ADDRESSES = {"wan0": "203.0.113.1", "lan0": "192.168.1.1"}


def masquerade(oif: str, dst: object) -> ipaddress.IPv4Address | None:
    address = ROUTER_ADDRESSES.get(oif)
    return ipaddress.IPv4Address(address) if address else None


def test_hairpin_is_dnated_and_masqueraded() -> None:
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 192.168.1.50:40000 -> 203.0.113.1:8443 in lan0 out lan0")
    d = evaluate(rs, flow, masquerade_source=masquerade)
    assert d.outcome == "accept" and d.certain
    assert d.final_packet is not None
    assert (str(d.final_packet.src), d.final_packet.sport) == ("192.168.1.1", 40000)
    assert (str(d.final_packet.dst), d.final_packet.dport) == ("192.168.1.100", 443)
    assert d.snat == "192.168.1.1"
    nat_steps = [(s.hook, s.effect) for s in d.trace if s.matched and s.position]
    assert nat_steps == [
        (Hook.PREROUTING, "dnat to 192.168.1.100:443"),
        (Hook.POSTROUTING, "masquerade: source -> 192.168.1.1"),
    ]
    doc = d.to_json()
    assert doc["nat"] == "192.168.1.100:443" and doc["snat"] == "192.168.1.1"
    assert doc["final"]["src"] == "192.168.1.1" and doc["final"]["dst"] == "192.168.1.100"
    assert doc["outcomes"][0]["snat"] == "192.168.1.1"


def test_masquerade_to_an_unknown_address_says_so() -> None:
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 192.168.1.50:40000 -> 203.0.113.1:8443 in lan0 out lan0")
    d = evaluate(rs, flow)  # a rules file: the interfaces' addresses are not known
    assert d.snat == "the address of lan0" and d.certain
    assert d.final_packet is not None and str(d.final_packet.dst) == "192.168.1.100"
    assert d.to_json()["final"]["src"] is None


def test_a_plain_forward_is_dnated_only() -> None:
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 198.51.100.7:40000 -> 203.0.113.1:8443 in wan0 out lan0")
    d = evaluate(rs, flow, masquerade_source=masquerade)
    assert d.final_packet is not None and d.snat is None
    assert (str(d.final_packet.src), str(d.final_packet.dst), d.final_packet.dport) == (
        "198.51.100.7",
        "192.168.1.100",
        443,
    )


def test_output_dnat_and_postrouting_snat() -> None:
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 203.0.113.1:41000 -> 198.51.100.9:9100 out wan0")
    d = evaluate(rs, flow, masquerade_source=masquerade)
    assert d.direction is Direction.OUTPUT and d.final_packet is not None
    assert (str(d.final_packet.src), d.final_packet.sport) == ("203.0.113.3", 40123)
    assert (str(d.final_packet.dst), d.final_packet.dport) == ("203.0.113.2", 9100)
    assert d.snat == "203.0.113.3:40123"


def test_later_packets_reuse_both_bindings() -> None:
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 192.168.1.50:40000 -> 203.0.113.1:8443 in lan0 out lan0 state established")
    d = evaluate(rs, flow, masquerade_source=masquerade)
    assert d.final_packet is not None and d.final_packet.state is CtState.ESTABLISHED
    assert (str(d.final_packet.src), str(d.final_packet.dst)) == ("192.168.1.1", "192.168.1.100")


def test_a_nat_chain_that_does_not_bind_leaves_the_next_one_its_turn() -> None:
    """Two nat tables on postrouting: the first binds nothing, so the second runs (and once
    one binds, no later nat chain on the hook runs)."""
    rs = import_iptables_save(HAIRPIN)
    # iptables has one nat table; the second comes from a copy of it with other rules.
    other = import_iptables_save(
        "*nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -o lan0 -j SNAT --to-source 192.168.1.254\nCOMMIT\n"
    )
    second = replace(other.tables[0], name="nat2")
    merged = replace(rs, tables=(*rs.tables, second))
    outside = Packet.parse("tcp 198.51.100.7:40000 -> 203.0.113.1:8443 in wan0 out lan0")
    d = evaluate(merged, outside, masquerade_source=masquerade)
    assert d.snat == "192.168.1.254"
    hairpin = Packet.parse("tcp 192.168.1.50:40000 -> 203.0.113.1:8443 in lan0 out lan0")
    d = evaluate(merged, hairpin, masquerade_source=masquerade)
    assert d.snat == "192.168.1.1"  # the first table bound the source: nat2 never runs
    assert not any(s.table.endswith("nat2") and s.matched and s.position for s in d.trace)


FILTER_AFTER_SNAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
-A PREROUTING -d 203.0.113.1/32 -p tcp -m tcp --dport 8443 -j DNAT --to-destination 192.168.1.100:443
-A POSTROUTING -o lan0 -j SNAT --to-source 192.168.1.1
COMMIT
*mangle
:POSTROUTING ACCEPT [0:0]
-A POSTROUTING -s 192.168.1.1/32 -o lan0 -j DROP
-A POSTROUTING -m conntrack --ctstate SNAT -j DROP
COMMIT
"""


def _mangle_at(priority: int) -> Ruleset:
    rs = import_iptables_save(FILTER_AFTER_SNAT)
    tables = tuple(
        replace(t, chains=tuple(replace(c, priority=priority) for c in t.chains)) if t.name == "mangle" else t
        for t in rs.tables
    )
    return replace(rs, tables=tables)


def test_chains_after_the_source_nat_see_the_new_source() -> None:
    """mangle POSTROUTING (priority -150) runs before nat (100) and sees the original source;
    the same chain at priority 200 runs after it and sees the SNATed source (and the SNAT
    status bit). The compiled evaluator agrees in both cases."""
    flow = Packet.parse("tcp 192.168.1.50:40000 -> 203.0.113.1:8443 in lan0 out lan0")
    outcomes = []
    for priority in (-150, 200):
        rs = _mangle_at(priority)
        d = evaluate(rs, flow)
        fast = FastEvaluator(rs).run(FlowArrays.from_packets([flow]), direction=Direction.FORWARD)
        assert fast.outcome(0) == d.outcome
        outcomes.append(d.outcome)
    assert outcomes == ["accept", "drop"]
    only_status = _mangle_at(200)
    mangle = next(t for t in only_status.tables if t.name == "mangle")
    chain = replace(mangle.chains[0], rules=mangle.chains[0].rules[1:])
    tables = tuple(replace(t, chains=(chain,)) if t is mangle else t for t in only_status.tables)
    d = evaluate(replace(only_status, tables=tables), flow)
    assert d.outcome == "drop" and "ct status snat" in str(d.decided_by)


def test_a_masquerade_that_keeps_the_source_is_no_source_nat() -> None:
    """This host's own connection leaves by wan0 from wan0's address: the binding changes
    nothing (no SNAT status, as nf_nat_setup_info decides), so `snat` stays null."""
    rs = import_iptables_save(HAIRPIN)
    flow = Packet.parse("tcp 203.0.113.1:41000 -> 198.51.100.20:443 out wan0")
    d = evaluate(rs, flow, masquerade_source=masquerade)
    assert d.snat is None and d.final_packet is not None and str(d.final_packet.src) == "203.0.113.1"
    assert any(s.effect == "masquerade: source stays 203.0.113.1" for s in d.trace)
