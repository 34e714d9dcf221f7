"""nft JSON written back in nft syntax: unmodelled rules in show and check read as nft lists them.

The oracle is the real nft in a namespace the test creates: every rule of ROUND_TRIP is loaded,
listed as JSON, rendered by portkit, loaded again into a twin table, and listed as the same JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_root
from portkit.firewall._nftexpr import render_embedded_json, render_json_text, render_statement
from portkit.testing import LabNamespace

needs_nft = pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")

# Each needs the declarations of TABLE; each statement kind nft -j writes appears at least once.
ROUND_TRIP = [
    'iifname { "br-lan", "lan" } tcp dport 22 accept',
    'iifname "eth*" udp dport 53 counter accept',
    "ct status dnat accept",
    "ct state new limit rate over 10/second burst 5 packets drop",
    "limit rate 100 kbytes/second accept",
    "ip saddr 10.0.0.0/8 tcp dport { 80, 443, 8000-8100 } accept",
    "ip6 saddr 2001:db8::/32 counter drop",
    "ip protocol . th dport vmap { tcp . 22 : accept, udp . 53 : drop }",
    "ip saddr . tcp dport { 10.0.0.1 . 22, 10.0.0.2 . 80 } accept",
    "tcp flags & (syn | ack) == syn counter",
    "tcp flags syn tcp option maxseg size set 1360",
    "ct state new add @flood { ip saddr limit rate over 5/second } drop",
    "ip saddr @blocklist drop",
    "meta mark 0x00000001 meta mark set 0x00000002",
    'log prefix "drop: {x} [y]" level warn drop',
    "log group 2",
    "reject with icmpx admin-prohibited",
    "reject with tcp reset",
    "tcp dport 8080 dnat ip to 10.0.0.5:80",
    'oifname "eth0" masquerade',
    "ct count over 10 reject",
    "quota over 10 mbytes drop",
    "ip dscp cs1 accept",
    "ip ttl < 10 drop",
    "meta l4proto icmp icmp type { echo-request, echo-reply } accept",
    "icmpv6 type . icmpv6 code { nd-neighbor-solicit . 0, echo-request . 0 } accept",
    "fib daddr type local accept",
    "fib saddr . iif oif missing drop",
    "tcp dport 22 ct original ip saddr 10.0.0.1 accept",
    "meta skuid 0 accept",
    "jump sub",
    "goto sub",
    "numgen inc mod 2 vmap { 0 : accept, 1 : drop }",
    "ip daddr set jhash ip saddr mod 2 map { 0 : 10.0.0.1, 1 : 10.0.0.2 }",
    "tcp dport 80 meter m1 { ip saddr limit rate 10/second } accept",
    "ip saddr 10.0.0.1-10.0.0.9 accept",
    "exthdr frag exists drop",
    "@th,16,16 22 accept",
    'ct helper set "ftp-standard"',
    "notrack",
    "meta nfproto ipv6 accept",
    "iif lo accept",
    "ct mark & 0x0000ff00 == 0x00000100 accept",
    'tcp dport 25 counter name "c1" drop',
    "ip saddr != { 10.0.0.0/8, 192.168.0.0/16 } drop",
    "ip saddr 10.0.0.0/8 snat ip to 192.0.2.1",
    "tcp dport 80 redirect to :8080",
    "meta l4proto tcp masquerade to :1024-2048 random",
    "socket transparent 1 accept",
    "rt ip nexthop 10.0.0.1 accept",
    'osf ttl loose name "Linux" accept',
    "symhash mod 2 vmap { 0 : accept, 1 : drop }",
    "ip option ra exists accept",
    "sctp chunk init exists accept",
    "meta pkttype broadcast drop",
    "ct state established,related accept",
    "ct state != established drop",
    "tcp dport 22 ct mark set 7 accept",
    "meta priority set 1:2",
    "tcp dport 22 update @seen { ip saddr timeout 1m } accept",
    "ip6 nexthdr ipv6-icmp accept",
    "ether saddr 00:11:22:33:44:55 drop",
    "vlan id 10 accept",
    "tcp dport 1-1023 ip saddr != 10.0.0.0/8 counter reject",
    'meta iifname != { "wan", "wan6" } accept',
    "ip saddr vmap @m",
    "tcp dport 22 update @dm { ip saddr : 10.0.0.1 } accept",
    "tcp option sack-perm exists accept",
    "ip saddr & 255.255.0.0 == 10.1.0.0 accept",
    "ip length 100-200 accept",
    "meta mark set ct mark",
    "ct mark set meta mark & 0xffff",
    'tcp dport 22 ct state new log prefix "ssh " flags all accept',
    "icmp type echo-request limit rate 1/minute burst 2 packets accept",
    "tcp dport 22 limit rate over 1 mbytes/second burst 100 kbytes drop",
    "ct expiration 5s accept",
    "ct direction original accept",
    "ip saddr . ip daddr . tcp dport @blockport drop",
    "meta l4proto { tcp, udp } th dport 53 accept",
]

TABLE = """table inet {name} {{
 set blocklist {{ type ipv4_addr; }}
 set flood {{ type ipv4_addr; flags dynamic; }}
 set seen {{ type ipv4_addr; flags dynamic,timeout; }}
 map m {{ type ipv4_addr : verdict; }}
 set blockport {{ type ipv4_addr . ipv4_addr . inet_service; }}
 map dm {{ type ipv4_addr : ipv4_addr; flags dynamic; }}
 counter c1 {{ }}
 ct helper ftp-standard {{ type "ftp" protocol tcp; }}
 chain sub {{ }}
 chain filter {{ type filter hook prerouting priority -300; }}
 chain dstnat {{ type nat hook prerouting priority -100; }}
 chain srcnat {{ type nat hook postrouting priority 100; }}
}}
"""


def _chain_for(rule: str) -> str:
    if "snat" in rule or "masquerade" in rule:
        return "srcnat"
    return "dstnat" if "dnat" in rule or "redirect" in rule else "filter"


class _Nft:
    def __init__(self, netns: str) -> None:
        self.netns = netns

    def run(self, *args: str, script: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", self.netns, "nft", *args],
            input=script,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def rule_expr(self, table: str, chain: str) -> list[Any]:
        listed = self.run("-j", "list", "chain", "inet", table, chain)
        assert listed.returncode == 0, listed.stderr
        [rule] = [o["rule"] for o in json.loads(listed.stdout)["nftables"] if "rule" in o]
        expr: list[Any] = rule["expr"]
        return expr


@pytest.fixture(scope="module")
def nft() -> Iterator[_Nft]:
    with LabNamespace("pknftx") as ns:
        tool = _Nft(ns.name)
        for table in ("orig", "again"):
            made = tool.run("-f", "-", script=TABLE.format(name=table))
            assert made.returncode == 0, made.stderr
        yield tool


@needs_root
@needs_nft
@pytest.mark.parametrize("rule", ROUND_TRIP)
def test_rendered_rule_loads_as_the_same_json(nft: _Nft, rule: str) -> None:
    chain = _chain_for(rule)
    for table in ("orig", "again"):
        nft.run("flush", "chain", "inet", table, chain)
    loaded = nft.run("-f", "-", script=f"add rule inet orig {chain} {rule}\n")
    assert loaded.returncode == 0, loaded.stderr
    expr = nft.rule_expr("orig", chain)
    text = " ".join(render_statement(stmt) for stmt in expr)
    assert '{"' not in text, text  # no JSON left in it
    checked = nft.run("-c", "-f", "-", script=f"add rule inet again {chain} {text}\n")
    assert checked.returncode == 0, (text, checked.stderr)
    again = nft.run("-f", "-", script=f"add rule inet again {chain} {text}\n")
    assert again.returncode == 0, (text, again.stderr)
    assert nft.rule_expr("again", chain) == expr, text


@pytest.mark.parametrize(
    ("node", "text"),
    [
        ({"match": {"op": "in", "left": {"ct": {"key": "status"}}, "right": "dnat"}}, "ct status dnat"),
        (
            {"match": {"op": "==", "left": {"meta": {"key": "iifname"}},
                       "right": {"set": ["lan", "br-lan"]}}},
            'meta iifname { "lan", "br-lan" }',
        ),
        (
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                       "right": {"prefix": {"addr": "10.0.0.0", "len": 8}}}},
            "ip saddr != 10.0.0.0/8",
        ),
        (
            {"match": {"op": "==", "left": {"&": [{"payload": {"protocol": "tcp", "field": "flags"}},
                                                  ["syn", "ack"]]}, "right": "syn"}},
            "tcp flags & (syn | ack) == syn",
        ),
        ({"limit": {"rate": 3, "per": "minute", "burst": 5}}, "limit rate 3/minute burst 5 packets"),
        ({"limit": {"rate": 1, "rate_unit": "mbytes", "per": "second", "inv": True}},
         "limit rate over 1 mbytes/second"),
        ({"log": {"prefix": 'a "b" {c}'}}, 'log prefix "a \\"b\\" {c}"'),
        ({"counter": {"packets": 3, "bytes": 180}}, "counter packets 3 bytes 180"),
        ({"dnat": {"family": "ip6", "addr": "2001:db8::1", "port": 80}}, "dnat ip6 to [2001:db8::1]:80"),
        ({"jump": {"target": "sub"}}, "jump sub"),
        ("update @dm { ip saddr : 10.0.0.1 }", "update @dm { ip saddr : 10.0.0.1 }"),
    ],
)  # fmt: skip
def test_statements_read_as_nft_writes_them(node: Any, text: str) -> None:
    assert render_statement(node) == text
    assert render_json_text(json.dumps(node)) == text


def test_what_the_renderer_does_not_know_stays_json_never_invented_syntax() -> None:
    unknown = {"frobnicate": {"level": 3}}
    assert render_statement(unknown) == '{"frobnicate":{"level":3}}'
    inside = {"match": {"op": "==", "left": {"newthing": {"x": 1}}, "right": 1}}
    assert render_statement(inside) == '{"newthing":{"x":1}} 1'
    malformed = {"limit": {"per": "second"}}  # no rate
    assert render_statement(malformed) == '{"limit":{"per":"second"}}'
    assert render_json_text("-m foo --bar") == "-m foo --bar"  # iptables text is left alone


@pytest.mark.parametrize(
    ("note", "text"),
    [
        (
            'inet f input handle 3: cannot model match {"match":{"left":{"ct":{"key":"status"}},"op":"in",'
            '"right":"dnat"}} (left); assumed to match',
            "inet f input handle 3: cannot model match ct status dnat (left); assumed to match",
        ),
        (
            'inet f input handle 7: limit {"burst":5,"per":"minute","rate":3} is not modelled',
            "inet f input handle 7: limit rate 3/minute burst 5 packets is not modelled",
        ),
        (
            'value {"set": [1, 2]} or {"prefix": {"addr": "10.0.0.0", "len": 8}}',
            "value { 1, 2 } or 10.0.0.0/8",
        ),
        ("no { json } here", "no { json } here"),
        ('unknown {"x": 1}', 'unknown {"x":1}'),
    ],
)
def test_notes_name_statements_in_nft_syntax(note: str, text: str) -> None:
    assert render_embedded_json(note) == text


UNMODELLED = """\
table inet filter {
  set flood { type ipv4_addr; flags dynamic; }
  chain input {
    type filter hook input priority 0; policy drop;
    ct status dnat accept
    ct state new add @flood { ip saddr limit rate over 5/second } drop
    icmpv6 type . icmpv6 code { nd-neighbor-solicit . 0, echo-request . 0 } accept
    tcp dport 22 limit rate 3/minute accept
    ip protocol . th dport vmap { tcp . 22 : accept, udp . 53 : drop }
  }
}
"""


@needs_root
@needs_nft
def test_show_and_check_print_unmodelled_rules_in_nft_syntax(cli: Any, nft: _Nft, tmp_path: Path) -> None:
    rules = tmp_path / "unmodelled.nft"
    rules.write_text(UNMODELLED)
    shown = cli("fw", "show", str(rules))
    assert shown.status == 0, shown.stderr
    assert '{"' not in shown.stdout
    printed = [line.split(": ", 1)[1] for line in shown.stdout.splitlines() if "(handle " in line]
    assert "ct status dnat accept" in printed
    assert "tcp dport 22 limit rate 3/minute burst 5 packets accept" in printed
    assert any(p.startswith("ct state new add @flood { ip saddr limit rate over 5/second") for p in printed)
    # What show prints loads again into the same table (nft -c).
    declared = "table inet filter {\n set flood { type ipv4_addr; flags dynamic; }\n chain input { }\n}\n"
    script = declared + "".join(f"add rule inet filter input {p}\n" for p in printed)
    checked = nft.run("-c", "-f", "-", script=script)
    assert checked.returncode == 0, (script, checked.stderr)
    notes = [line for line in shown.stderr.splitlines() if line.startswith("note: ")]
    # ct status is modelled now; the set update with a limit is not, and its note is nft syntax.
    assert any("add @flood { ip saddr limit rate over 5/second" in n for n in notes), shown.stderr
    assert not any('{"' in n for n in notes), shown.stderr
    traced = cli("fw", "check", "--rules", str(rules), "tcp 203.0.113.5:40000 -> 192.0.2.1:22")
    assert "ct status dnat accept" in traced.stdout and '{"' not in traced.stdout


CORPUS = Path(__file__).resolve().parent / "corpus" / "firewall"


def _by_chain(listing: str) -> dict[tuple[str, str, str], list[Any]]:
    chains: dict[tuple[str, str, str], list[Any]] = {}
    for item in json.loads(listing)["nftables"]:
        if "rule" in item:
            rule = item["rule"]
            chains.setdefault((rule["family"], rule["table"], rule["chain"]), []).append(_plain(rule["expr"]))
    return chains


def _plain(node: Any) -> Any:
    """nft lists a one-element anonymous set it was given as `{ x }` as x itself: the same match."""
    if isinstance(node, dict):
        if set(node) == {"set"} and isinstance(node["set"], list) and len(node["set"]) == 1:
            return _plain(node["set"][0])
        return {key: _plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_plain(item) for item in node]
    return node


@needs_root
@needs_nft
@pytest.mark.parametrize(
    "path",
    sorted([*CORPUS.glob("*.nft"), *CORPUS.glob("*.json")]) or [pytest.param(None, marks=pytest.mark.skip(
        reason=f"no nft rule sets in {CORPUS}"))],
    ids=lambda p: p.name if p else "none",
)  # fmt: skip
def test_every_rule_of_the_real_rule_sets_renders_to_the_same_rule(path: Path) -> None:
    """Each corpus rule set is loaded twice; the twin's chains are emptied and refilled with
    portkit's rendering of every rule, which must list as the same JSON, chain by chain."""
    with LabNamespace("pknftx") as one, LabNamespace("pknftx") as two:
        original, twin = _Nft(one.name), _Nft(two.name)
        flags = ["-j"] if path.suffix == ".json" else []
        for tool in (original, twin):
            loaded = tool.run(*flags, "-f", str(path))
            assert loaded.returncode == 0, loaded.stderr
        expected = _by_chain(original.run("-j", "list", "ruleset").stdout)
        script = []
        for family, table, chain in _by_chain(twin.run("-j", "list", "ruleset").stdout):
            twin.run("flush", "chain", family, table, chain)
        listed = json.loads(original.run("-j", "list", "ruleset").stdout)["nftables"]
        for item in listed:
            if "rule" in item:
                rule = item["rule"]
                text = " ".join(render_statement(stmt) for stmt in rule["expr"])
                assert '{"' not in text, text
                script.append(f"add rule {rule['family']} {rule['table']} {rule['chain']} {text}\n")
        refilled = twin.run("-f", "-", script="".join(script))
        assert refilled.returncode == 0, refilled.stderr[:2000]
        assert _by_chain(twin.run("-j", "list", "ruleset").stdout) == expected
        assert sum(map(len, expected.values())) == len(script) > 0
