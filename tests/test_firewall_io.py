"""Importers and exporters: nft JSON, iptables-save, ufw, the policy file; nft, iptables, ufw, firewalld."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from portkit.errors import UsageError
from portkit.firewall import (
    ExportRefused,
    Field,
    FilterAction,
    Hook,
    Packet,
    RejectType,
    detect_format,
    evaluate,
    export_ruleset,
    import_iptables_save,
    import_nft_json,
    import_ufw,
    load_file,
    parse_policy,
    render_iptables,
    render_nft,
)
from portkit.model.protocols import Transport

NFT_JSON = {
    "nftables": [
        {"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "f", "handle": 1}},
        {
            "set": {
                "family": "inet",
                "name": "allowed",
                "table": "f",
                "type": "ipv4_addr",
                "handle": 3,
                "flags": ["interval"],
                "elem": [
                    {"prefix": {"addr": "10.0.0.0", "len": 8}},
                    {"range": ["192.168.1.1", "192.168.1.9"]},
                ],
            }
        },
        {
            "set": {
                "family": "inet",
                "name": "ports",
                "table": "f",
                "type": "inet_service",
                "handle": 4,
                "flags": ["interval"],
                "elem": [22, {"range": [8000, 8080]}],
            }
        },
        {
            "chain": {
                "family": "inet",
                "table": "f",
                "name": "input",
                "handle": 1,
                "type": "filter",
                "hook": "input",
                "prio": 0,
                "policy": "drop",
            }
        },
        {"chain": {"family": "inet", "table": "f", "name": "sub", "handle": 2}},
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "input",
                "handle": 5,
                "expr": [
                    {
                        "match": {
                            "op": "in",
                            "left": {"ct": {"key": "state"}},
                            "right": ["established", "related"],
                        }
                    },
                    {"accept": None},
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "input",
                "handle": 8,
                "expr": [
                    {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "eth*"}},
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "right": "@ports",
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                            "right": "@allowed",
                        }
                    },
                    {"counter": {"packets": 0, "bytes": 0}},
                    {"accept": None},
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "input",
                "handle": 10,
                "expr": [
                    {
                        "match": {
                            "op": "!=",
                            "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                            "right": {"prefix": {"addr": "10.1.0.0", "len": 16}},
                        }
                    },
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "right": {"set": [80, 443]},
                        }
                    },
                    {"accept": None},
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "input",
                "handle": 11,
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "udp", "field": "dport"}},
                            "right": 53,
                        }
                    },
                    {"reject": {"type": "icmpx", "expr": "admin-prohibited"}},
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "input",
                "handle": 20,
                "expr": [
                    {
                        "vmap": {
                            "key": {"payload": {"protocol": "tcp", "field": "dport"}},
                            "data": {"set": [[5000, {"jump": {"target": "sub"}}], [5002, {"drop": None}]]},
                        }
                    }
                ],
            }
        },
        {
            "rule": {
                "family": "inet",
                "table": "f",
                "chain": "sub",
                "handle": 23,
                "expr": [
                    {
                        "match": {
                            "op": "==",
                            "left": {"payload": {"protocol": "tcp", "field": "sport"}},
                            "right": {"range": [1000, 2000]},
                        }
                    },
                    {"return": None},
                ],
            }
        },
        {"rule": {"family": "inet", "table": "f", "chain": "sub", "handle": 24, "expr": [{"accept": None}]}},
    ]
}


def test_nft_json_sets_intervals_and_verdict_maps() -> None:
    rs = import_nft_json(json.dumps(NFT_JSON))
    t = rs.tables[0]
    assert {s.name for s in t.sets} == {"allowed", "ports"}
    chain = t.chain("input")
    assert chain is not None and chain.policy is FilterAction.DROP and chain.hook is Hook.INPUT
    # The vmap became one rule per key, both keeping handle 20.
    vm = [r for r in chain.rules if r.handle == 20]
    assert [r.action for r in vm] == [FilterAction.JUMP, FilterAction.DROP]
    assert evaluate(rs, Packet.parse("tcp 10.2.2.2:1 -> 192.0.2.1:8080 in eth1")).outcome == "accept"
    assert evaluate(rs, Packet.parse("tcp 192.168.1.10:1 -> 192.0.2.1:22 in eth1")).outcome == "drop"
    assert evaluate(rs, Packet.parse("tcp 10.1.0.1:1 -> 192.0.2.1:443")).outcome == "drop"
    assert evaluate(rs, Packet.parse("tcp 10.2.0.1:1 -> 192.0.2.1:443")).outcome == "accept"
    assert (
        evaluate(rs, Packet.parse("udp 10.2.0.1:1 -> 192.0.2.1:53")).outcome == "reject:icmp-admin-prohibited"
    )
    assert evaluate(rs, Packet.parse("tcp 10.1.0.1:1500 -> 192.0.2.1:5000")).outcome == "drop"  # return
    assert evaluate(rs, Packet.parse("tcp 10.1.0.1:2500 -> 192.0.2.1:5000")).outcome == "accept"


MARK_RULE = {
    "rule": {
        "family": "inet",
        "table": "f",
        "chain": "input",
        "handle": 21,
        "expr": [{"match": {"op": "==", "left": {"meta": {"key": "mark"}}, "right": 7}}, {"accept": None}],
    }
}


def test_unmodelled_expressions_are_kept_and_flagged() -> None:
    rs = import_nft_json({"nftables": [*NFT_JSON["nftables"][:-2], MARK_RULE, *NFT_JSON["nftables"][-2:]]})
    assert any("meta" in n and "assumed not to match: the packet is not marked" in n for n in rs.notes)
    d = evaluate(rs, Packet.parse("tcp 10.1.0.1:1 -> 192.0.2.1:9999"))
    # The mark match is undecided: both outcomes, the first branch taking the packet as unmarked.
    assert d.outcome == "drop" and d.uncertain and not d.certain and d.possible == {"accept", "drop"}
    rendering = render_nft(rs)
    # nft writes the mark match as nft listed it: the rule goes out whole, never without it.
    assert not rendering.omitted
    assert "meta mark 0x00000007" in rendering.text or "meta mark 7" in rendering.text, rendering.text


def test_iptables_save_v4_and_v6() -> None:
    v4 = import_iptables_save(
        "*filter\n:INPUT DROP [0:0]\n"
        "-A INPUT -s 192.0.2.0/24,198.51.100.7 -p tcp -m tcp --sport 1024:65535 --dport 22 "
        '-m comment --comment "ssh from office" -j ACCEPT\n'
        "-A INPUT -p icmp -m icmp --icmp-type 8/0 -j ACCEPT\n"
        "-A INPUT -m iprange --src-range 203.0.113.1-203.0.113.9 "
        "-j REJECT --reject-with icmp-host-prohibited\n"
        "-A INPUT -m recent --rcheck --seconds 60 -j DROP\nCOMMIT\n"
    )
    rules = v4.tables[0].chains[0].rules
    assert rules[0].comment == "ssh from office" and rules[0].line == 3
    assert evaluate(v4, Packet.parse("tcp 198.51.100.7:2000 -> 192.0.2.1:22")).outcome == "accept"
    assert evaluate(v4, Packet.parse("tcp 198.51.100.7:200 -> 192.0.2.1:22")).outcome == "drop"
    assert evaluate(v4, Packet.parse("icmp 198.51.100.7 -> 192.0.2.1")).outcome == "accept"
    assert (
        evaluate(v4, Packet.parse("udp 203.0.113.5:1 -> 192.0.2.1:2")).outcome
        == "reject:icmp-host-prohibited"
    )
    assert rules[3].uncertain and any("recent" in n for n in v4.notes)
    v6 = import_iptables_save(
        "*filter\n:INPUT DROP [0:0]\n-A INPUT -s 2001:db8::/32 -p tcp --dport 443 -j REJECT "
        "--reject-with icmp6-adm-prohibited\nCOMMIT\n",
        version=6,
    )
    assert (
        evaluate(v6, Packet.parse("tcp [2001:db8::5]:1 -> [2001:db8::1]:443")).outcome
        == "reject:icmpv6-admin-prohibited"
    )


@pytest.mark.parametrize(
    "bad",
    [
        "-A INPUT -j ACCEPT\n",
        "*filter\n-A INPUT -p bogus -j ACCEPT\nCOMMIT\n",
        "*filter\nwhat is this\nCOMMIT\n",
    ],
)
def test_bad_iptables_text_is_a_usage_error(bad: str) -> None:
    with pytest.raises(UsageError):
        import_iptables_save(bad)


@pytest.mark.skipif(not Path("/etc/ufw/before.rules").exists(), reason="ufw is not installed")
def test_ufw_layout_with_user_rules(tmp_path: Path) -> None:
    for name in ("before.rules", "after.rules", "before6.rules", "after6.rules"):
        (tmp_path / name).write_text(Path("/etc/ufw", name).read_text())
    (tmp_path / "user.rules").write_text(
        "*filter\n:ufw-user-input - [0:0]\n:ufw-user-output - [0:0]\n:ufw-user-forward - [0:0]\n"
        "### RULES ###\n### tuple ### allow tcp 22 0.0.0.0/0 any 0.0.0.0/0 in\n"
        "-A ufw-user-input -p tcp --dport 22 -j ACCEPT\n"
        "### tuple ### deny tcp 8080 0.0.0.0/0 any 0.0.0.0/0 in\n"
        "-A ufw-user-input -p tcp --dport 8080 -j DROP\n### END RULES ###\nCOMMIT\n"
    )
    defaults = tmp_path / "ufw.default"
    defaults.write_text('DEFAULT_INPUT_POLICY="DROP"\nDEFAULT_FORWARD_POLICY="DROP"\n')
    rs = import_ufw(tmp_path, defaults_file=defaults)
    ssh = evaluate(rs, Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.1:22 in eth0"))
    assert ssh.outcome == "accept"
    assert [s.chain for s in ssh.trace if s.matched and "jump" in s.effect][:2] == ["INPUT", "INPUT"]
    assert ssh.decided_by is not None and ssh.decided_by.chain == "ufw-user-input"
    assert evaluate(rs, Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.1:8080 in eth0")).outcome == "drop"
    assert (
        evaluate(rs, Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.1:9 in eth0 state established")).outcome
        == "accept"
    )
    assert load_file(tmp_path, ufw_defaults=defaults).rule_count == rs.rule_count
    # Without a defaults file beside or inside the directory the policies are unknown (never
    # this host's /etc/default/ufw): every policy is followed.
    unknown = evaluate(load_file(tmp_path), Packet.parse("tcp 198.51.100.7:5000 -> 192.0.2.1:9 in eth0"))
    assert not unknown.certain and "accept" in unknown.possible


POLICY = """\
# web server
default incoming deny
default outgoing allow
allow established
allow in on lo
allow tcp 22 from 10.0.0.0/8
allow tcp 80,443
reject udp 5000-5100 from 192.0.2.0/24 with icmp-admin-prohibited
deny tcp 6379
allow out tcp 25 to 192.0.2.10
allow icmp type echo-request
"""


def test_policy_file() -> None:
    rs = parse_policy(POLICY, source="web.policy")
    assert detect_format(POLICY) == "policy"
    chains = {c.name: c for c in rs.tables[0].chains}
    assert chains["input"].policy is FilterAction.DROP and chains["output"].policy is FilterAction.ACCEPT
    assert [r.line for r in chains["input"].rules][:3] == [4, 5, 6]
    assert evaluate(rs, Packet.parse("tcp 10.9.9.9:1 -> 192.0.2.1:22")).outcome == "accept"
    assert evaluate(rs, Packet.parse("tcp 198.51.100.1:1 -> 192.0.2.1:22")).outcome == "drop"
    assert (
        evaluate(rs, Packet.parse("udp 192.0.2.7:1 -> 192.0.2.1:5050")).outcome
        == "reject:icmp-admin-prohibited"
    )
    d = evaluate(rs, Packet.parse("tcp 198.51.100.1:1 -> 192.0.2.1:22"))
    assert d.decided_by is not None and d.decided_by.position == 0


@pytest.mark.parametrize(
    "bad",
    [
        "permit tcp 22",
        "allow tcp 99999",
        "allow tcp 22 from 10.0.0.0/33",
        "default incoming reject",
        "reject udp 53 with tcp-reset",
        "allow tcp 22 sideways",
    ],
)
def test_bad_policy_lines_name_the_line(bad: str) -> None:
    with pytest.raises(UsageError, match="policy:1"):
        parse_policy(bad + "\n")


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["allow", "deny", "reject"]),
            st.sampled_from(["tcp", "udp"]),
            st.integers(1, 65535),
            st.sampled_from(["any", "10.0.0.0/8", "192.0.2.7"]),
        ),
        max_size=8,
    )
)
def test_policy_parser_accepts_every_well_formed_line(lines: list[tuple[str, str, int, str]]) -> None:
    text = "\n".join(f"{a} {p} {port} from {src}" for a, p, port, src in lines)
    rs = parse_policy(text)
    assert len(rs.tables[0].chains[0].rules) == len(lines)


class _OneService:
    """A name resolver that knows one service, so a test sees which resolver a policy used."""

    def ports_for_name(self, name: str) -> list[tuple[int, Transport]]:
        return [(8443, Transport.TCP)] if name == "pk-admin" else []

    def top_ports(self, count: int, protocol: Transport) -> list[int]:
        return []


def test_policy_service_names_resolve_through_the_resolver_given(tmp_path: Path) -> None:
    text = "default incoming deny\nallow tcp to any port pk-admin\n"
    path = tmp_path / "admin.policy"
    path.write_text(text)
    flow = Packet.parse("tcp 10.0.0.1:40000 -> 192.0.2.1:8443")
    for rs in (parse_policy(text, names=_OneService()), load_file(path, names=_OneService())):
        assert evaluate(rs, flow).outcome == "accept"
        assert evaluate(rs, Packet.parse("tcp 10.0.0.1:40000 -> 192.0.2.1:22")).outcome == "drop"
    # Without a resolver the entry point takes portkit's registry, which knows ssh, not pk-admin.
    with pytest.raises(UsageError, match=r"pk-admin.*unknown service name"):
        parse_policy(text)
    rs = parse_policy("default incoming deny\nallow tcp to any port ssh\n")
    assert evaluate(rs, Packet.parse("tcp 10.0.0.1:40000 -> 192.0.2.1:22")).outcome == "accept"
    with pytest.raises(UsageError, match=r"ssh.*unknown service name"):
        parse_policy("allow tcp to any port ssh\n", names=_OneService())


def test_iptables_export_splits_sets_and_reports_what_it_cannot_write() -> None:
    rs = import_nft_json(NFT_JSON)
    text, problems = render_iptables(rs)
    assert "-A INPUT -i eth+ -p tcp -m multiport --dports 22,8000:8080 -s 10.0.0.0/8 -j ACCEPT" in text
    assert "--src-range 192.168.1.1-192.168.1.9" in text
    assert "-A INPUT -p tcp -m tcp --dport 5000 -j sub" in text
    assert problems == []
    # What iptables-save writes, iptables import reads back to the same verdicts.
    back = import_iptables_save(text.replace("*filter\n", "*filter\n", 1))
    for flow in (
        "tcp 10.2.2.2:1 -> 192.0.2.1:8080 in eth1",
        "tcp 10.1.0.1:2500 -> 192.0.2.1:5000",
        "udp 10.2.0.1:1 -> 192.0.2.1:53",
    ):
        assert evaluate(back, Packet.parse(flow)).outcome == evaluate(rs, Packet.parse(flow)).outcome


def test_ufw_and_firewalld_exports() -> None:
    rs = parse_policy(POLICY)
    with pytest.raises(ExportRefused, match="ufw accepts icmp"):
        export_ruleset(rs, "ufw")  # ufw's before.rules accept ICMP this policy drops
    ufw, ufw_problems = export_ruleset(rs, "ufw", force=True)
    assert "ufw default deny incoming" in ufw
    assert "ufw allow proto tcp from 10.0.0.0/8 to any port 22" in ufw
    assert "ufw deny proto tcp from any to any port 6379" in ufw
    assert any("established" in p for p in ufw_problems)
    fwd, fwd_problems = export_ruleset(rs, "firewalld", force=True)
    assert "--new-zone=portkit" in fwd and "--set-target=DROP" in fwd
    assert 'source address="10.0.0.0/8" port port="22" protocol="tcp" accept' in fwd
    assert 'port port="5000-5100" protocol="udp" reject type="icmp-admin-prohibited"' in fwd
    assert any("interface" in p for p in fwd_problems)  # `allow in on lo`
    with pytest.raises(UsageError):
        export_ruleset(rs, "pf")


def test_nft_export_of_an_iptables_ruleset_keeps_semantics() -> None:
    rs = import_iptables_save("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp ! --dport 22 -j REJECT\nCOMMIT\n")
    text, problems = render_nft(rs)
    assert not problems
    assert "tcp dport != 22 reject with icmp type port-unreachable" in text
    assert rs.tables[0].chains[0].rules[0].matches[1].field is Field.DPORT
    assert rs.tables[0].chains[0].rules[0].reject is not None
    assert rs.tables[0].chains[0].rules[0].reject.type is RejectType.ICMP


V6_ONLY = [
    # ip6tables-save's own header, with no address to tell by.
    "# Generated by ip6tables-save v1.8.9 (nf_tables)\n*filter\n:INPUT DROP [0:0]\n"
    "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    # ICMPv6, an IPv6 literal in a target option (Cilium's TPROXY rules), icmp6 reject types.
    "*filter\n:INPUT DROP [0:0]\n-A INPUT -p ipv6-icmp -j ACCEPT\n"
    "-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    "*mangle\n-P PREROUTING DROP\n"
    "-A PREROUTING -p udp -j TPROXY --on-port 1 --on-ip :: --tproxy-mark 0x1/0x1\n"
    "-A PREROUTING -p tcp --dport 22 -j ACCEPT\nCOMMIT\n",
    "*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\n"
    "-A INPUT -j REJECT --reject-with icmp6-adm-prohibited\nCOMMIT\n",
    "*nat\n:PREROUTING ACCEPT [0:0]\n"
    "-A PREROUTING -p tcp --dport 23 -j DNAT --to-destination [2001:db8::99]:23\nCOMMIT\n"
    "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n",
]


@pytest.mark.parametrize("text", V6_ONLY)
def test_an_ip6tables_file_is_read_as_ip6tables_whatever_its_name(text: str, tmp_path: Path) -> None:
    # Read as IPv4 rules, an IPv6 flow met no base chain: a certain ACCEPT for rules that drop it.
    path = tmp_path / "rules.txt"
    path.write_text(text)
    rs = load_file(path)
    assert {t.family.value for t in rs.tables} == {"ip6"}
    d = evaluate(rs, Packet.parse("tcp [2001:db8::2]:4000 -> [2001:db8::1]:23 in eth0"))
    assert d.verdict.value in ("drop", "reject")


def test_an_iptables_file_stays_iptables(tmp_path: Path) -> None:
    path = tmp_path / "rules.txt"
    path.write_text(
        "# Generated by iptables-save v1.8.9 (nf_tables) on Mon Dec  7 14:48:59 2026\n*filter\n"
        ":INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -m comment --comment \"a::b\" -j ACCEPT\n"
        "-A INPUT -m mac --mac-source 00:11:22:33:44:55 -j ACCEPT\nCOMMIT\n"
    )
    assert {t.family.value for t in load_file(path).tables} == {"ip"}
