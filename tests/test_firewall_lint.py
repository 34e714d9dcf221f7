"""The linter finds what is planted: shadowed and redundant rules, dead rules, loops, exposures, lock-outs."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import needs_root
from portkit.firewall import Severity, import_iptables_save, import_nft_json, lint_ruleset, parse_policy
from portkit.firewall._lint import default_route_interfaces
from portkit.testing import LabNamespace

PLANTED = """\
default incoming deny
allow established
allow tcp 22 from 10.0.0.0/8
deny tcp 22 from 10.1.0.0/16
allow tcp 80,443
allow tcp 443
allow tcp 6379
allow tcp 5432 from 10.0.0.0/8
"""


def _by_check(findings: list, check: str) -> list:
    return [f for f in findings if f.check == check]


def test_planted_shadowed_rule_names_its_shadow() -> None:
    findings = lint_ruleset(parse_policy(PLANTED))
    shadowed = _by_check(findings, "shadowed")
    assert len(shadowed) == 1
    assert shadowed[0].where == "inet portkit input #3 (line 4)"
    assert "inet portkit input #2 (line 3)" in shadowed[0].related
    assert shadowed[0].severity is Severity.MEDIUM
    redundant = _by_check(findings, "redundant")
    assert [f.where for f in redundant] == ["inet portkit input #5 (line 6)"]


def test_planted_exposed_redis_but_not_the_restricted_database() -> None:
    findings = lint_ruleset(parse_policy(PLANTED))
    exposed = _by_check(findings, "risky-exposure")
    assert [f.where for f in exposed] == ["6379/tcp (IPv4, IPv6)"]
    assert exposed[0].severity is Severity.CRITICAL and "line 7" in exposed[0].message
    assert findings[0].check == "risky-exposure"  # most severe first


def test_partial_overlap_is_reported_with_the_rules_involved() -> None:
    rs = parse_policy("allow tcp 1000-2000\ndeny tcp 1500-2500\n")
    overlap = _by_check(lint_ruleset(rs), "overlap")
    assert len(overlap) == 1 and overlap[0].related == ("inet portkit input #1 (line 1)",)
    assert "part of its traffic is accepted earlier" in overlap[0].message
    refused = _by_check(lint_ruleset(parse_policy("deny tcp 1000-2000\nallow tcp 1500-2500\n")), "overlap")
    assert "part of its traffic is dropped earlier" in refused[0].message
    nat = "*nat\n:PREROUTING ACCEPT [0:0]\n"
    nat += "-A PREROUTING -p tcp --dport 1000:2000 -j DNAT --to-destination 10.0.0.1\n"
    nat += "-A PREROUTING -p tcp --dport 1500:2500 -j REDIRECT --to-ports 8080\nCOMMIT\n"
    (moved,) = _by_check(lint_ruleset(import_iptables_save(nat, source="nat.rules")), "overlap")
    assert "part of its traffic is DNATed earlier" in moved.message


def test_dead_rules_loops_and_missing_chains() -> None:
    rs = import_iptables_save(
        "*filter\n:INPUT DROP [0:0]\n:a - [0:0]\n:b - [0:0]\n:orphan - [0:0]\n"
        "-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
        "-A INPUT -p tcp --dport 22 -p udp -j ACCEPT\n"
        "-A INPUT -j a\n-A a -j b\n-A b -j a\n-A orphan -j DROP\nCOMMIT\n"
    )
    findings = lint_ruleset(rs)
    checks = {f.check for f in findings}
    assert {"never-matches", "jump-loop", "unused-chain"} <= checks
    loop = _by_check(findings, "jump-loop")[0]
    assert "a -> b -> a" in loop.message
    # iptables-restore refuses a jump to a chain nobody declared (and so does the import); an
    # nft JSON document can still hold one.
    doc = {
        "nftables": [
            {"table": {"family": "ip", "name": "filter", "handle": 1}},
            {"chain": {"family": "ip", "table": "filter", "name": "input", "handle": 1}},
            {
                "rule": {
                    "family": "ip",
                    "table": "filter",
                    "chain": "input",
                    "expr": [{"jump": {"target": "nowhere"}}],
                }
            },
        ]
    }
    assert _by_check(lint_ruleset(import_nft_json(json.dumps(doc))), "missing-chain")


def test_missing_established_and_accept_by_default() -> None:
    findings = lint_ruleset(parse_policy("default incoming deny\nallow tcp 22\n"))
    assert _by_check(findings, "no-established")
    open_default = lint_ruleset(parse_policy("deny tcp 23\n"))
    assert _by_check(open_default, "accept-by-default")
    broad = lint_ruleset(parse_policy("default incoming deny\nallow established\nallow tcp\n"))
    assert _by_check(broad, "broad-accept")


def test_ssh_session_cut() -> None:
    rs = parse_policy("default incoming deny\nallow tcp 22 from 10.0.0.0/8\n")
    cut = lint_ruleset(rs, ssh_connection="203.0.113.50 50000 192.0.2.10 22")
    ssh = _by_check(cut, "ssh-lockout")
    assert [f.severity for f in ssh] == [Severity.CRITICAL, Severity.HIGH]
    fine = lint_ruleset(
        parse_policy("default incoming deny\nallow established\nallow tcp 22\n"),
        ssh_connection="203.0.113.50 50000 192.0.2.10 22",
    )
    assert not _by_check(fine, "ssh-lockout")


def test_fail_on_sets_the_exit_status(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    policy = tmp_path / "planted.policy"
    policy.write_text(PLANTED)
    high = cli("fw", "lint", str(policy), "--no-ssh")
    assert high.status == 1 and "6379/tcp" in high.stdout
    never = cli("fw", "lint", str(policy), "--fail-on", "never", "--json")
    assert never.status == 0
    doc = never.json()
    assert doc["failed"] is False and {f["check"] for f in doc["findings"]} >= {"shadowed", "risky-exposure"}
    clean = tmp_path / "clean.policy"
    clean.write_text(
        "default incoming deny\nallow established\nallow in on lo\nallow tcp 22 from 10.0.0.0/8\n"
    )
    assert cli("fw", "lint", str(clean), "--no-ssh", "--fail-on", "low").status == 0


# --- rule text with braces and brackets; interfaces and the internet -----------------------

BRACES_NFT = """\
table inet filter {
  chain input {
    type filter hook input priority 0; policy drop;
    ct state established,related accept
    iifname { "br-lan", "lan" } tcp dport 1-65535 accept comment "lan {all} [/b] [red]"
    tcp dport 22 accept comment "{0} {}"
  }
}
"""


def _iptables(*rules: str) -> object:
    lines = ["*filter", ":INPUT DROP [0:0]", "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    return import_iptables_save("\n".join([*lines, *rules, "COMMIT", ""]))


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="parsing nft scripts needs root and nft"
)
def test_rule_text_with_braces_and_brackets_is_printed_not_interpreted(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rules = tmp_path / "braces.nft"
    rules.write_text(BRACES_NFT)
    piped = cli("fw", "lint", str(rules), "--no-ssh", "--fail-on", "never")
    assert piped.status == 0, piped.stderr
    assert "internal error" not in piped.stderr
    assert 'comment "lan {all} [/b] [red]"' in piped.stdout
    doc = cli("fw", "lint", str(rules), "--no-ssh", "--fail-on", "never", "--json").json()
    # nft orders the set's elements its own way.
    assert any(re.search(r'iifname \{ "(br-)?lan", "(br-)?lan" \}', f["message"]) for f in doc["findings"])
    if shutil.which("script") is None:
        return
    # On a terminal the table is Rich's: cell text must not be read as Rich markup.
    tty = subprocess.run(
        ["script", "-qec", shlex.join([sys.executable, "-m", "portkit", "fw", "lint", str(rules),
                                      "--no-ssh", "--fail-on", "never"]), "/dev/null"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"},
    )  # fmt: skip
    assert tty.returncode == 0, tty.stdout + tty.stderr
    assert "internal error" not in tty.stdout and "[/b] [red]" in tty.stdout


def test_an_accept_on_a_lan_bridge_is_not_called_internet_exposure() -> None:
    for iface in ("br-lan", "br0", "lan", "docker0", "virbr0"):
        findings = lint_ruleset(_iptables(f"-A INPUT -i {iface} -p tcp --dport 6379 -j ACCEPT"))
        [exposed] = _by_check(findings, "risky-exposure")
        assert "internet" not in exposed.message.replace("internal network", ""), exposed.message
        assert f"on {iface} (by its name an internal network)" in exposed.message
        assert exposed.severity is Severity.INFO
        broad = lint_ruleset(_iptables(f"-A INPUT -i {iface} -p tcp -j ACCEPT"))
        [wide] = _by_check(broad, "broad-accept")
        assert "anywhere" not in wide.message and iface in wide.message
        assert wide.severity is Severity.LOW


def test_an_accept_without_an_interface_or_on_a_wan_is_internet_exposure() -> None:
    everyone = lint_ruleset(_iptables("-A INPUT -p tcp --dport 6379 -j ACCEPT"))
    [anywhere] = _by_check(everyone, "risky-exposure")
    assert anywhere.severity is Severity.CRITICAL
    assert "whole internet (0.0.0.0/0) on any interface" in anywhere.message
    for iface in ("wan", "pppoe-wan", "ppp0"):
        on_wan = lint_ruleset(_iptables(f"-A INPUT -i {iface} -p tcp --dport 6379 -j ACCEPT"))
        [wan] = _by_check(on_wan, "risky-exposure")
        assert wan.severity is Severity.CRITICAL
        assert f"whole internet (0.0.0.0/0) on {iface} (a WAN interface)" in wan.message
    # An interface of unknown role is named, not called the internet, unless known to be the WAN.
    unknown = lint_ruleset(_iptables("-A INPUT -i ens3 -p tcp --dport 6379 -j ACCEPT"))
    [maybe] = _by_check(unknown, "risky-exposure")
    assert maybe.severity is Severity.MEDIUM and "on ens3 (lint cannot tell" in maybe.message
    known = lint_ruleset(
        _iptables("-A INPUT -i ens3 -p tcp --dport 6379 -j ACCEPT"), wan_interfaces=frozenset({"ens3"})
    )
    [wan] = _by_check(known, "risky-exposure")
    assert wan.severity is Severity.CRITICAL and "on ens3 (a WAN interface)" in wan.message


def test_a_wan_that_refuses_the_port_leaves_only_the_unnamed_interfaces() -> None:
    rs = _iptables("-A INPUT -i wan -j DROP", "-A INPUT -p tcp --dport 6379 -j ACCEPT")
    [exposed] = _by_check(lint_ruleset(rs), "risky-exposure")
    assert "internet" not in exposed.message.replace("faces the internet", "")
    assert "interfaces no rule names" in exposed.message and exposed.severity is Severity.MEDIUM


def test_default_route_interfaces_from_proc_net(tmp_path: Path) -> None:
    (tmp_path / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth1\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
        "br-lan\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    )
    (tmp_path / "ipv6_route").write_text(
        "00000000000000000000000000000000 00 00000000000000000000000000000000 00 "
        "fd000000000000000000000000000001 00000400 00000002 00000000 00000003     wan6\n"
        "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001   br-lan\n"
    )
    assert default_route_interfaces(str(tmp_path)) == {"eth1", "wan6"}
    assert default_route_interfaces(str(tmp_path / "missing")) == frozenset()


@needs_root
@pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")
def test_live_lint_in_a_namespace_knows_the_default_route_interface(cli) -> None:  # type: ignore[no-untyped-def]
    with LabNamespace("pklint") as namespace:
        ns = namespace.name
        for command in (
            "link add up0 type veth peer name in0",
            "link set up0 up",
            "link set in0 up",
            "addr add 192.0.2.2/24 dev up0",
            "route add default via 192.0.2.1 dev up0",
        ):
            subprocess.run(["ip", "-n", ns, *command.split()], check=True)
        rules = (
            "table inet f { chain input { type filter hook input priority 0; policy drop;\n"
            'iifname "up0" tcp dport 6379 accept\niifname "in0" tcp dport 5432 accept\n}\n}\n'
        )
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=rules, text=True, check=True)
        assert default_route_interfaces(netns=ns) == {"up0"}
        doc = cli("fw", "lint", "--netns", ns, "--no-ssh", "--fail-on", "never", "--json").json()
        exposed = {f["where"]: f for f in doc["findings"] if f["check"] == "risky-exposure"}
        redis = exposed["6379/tcp (IPv4, IPv6)"]
        assert redis["severity"] == "critical" and "on up0 (a WAN interface)" in redis["message"]
        postgres = exposed["5432/tcp (IPv4, IPv6)"]  # in0: a name that says nothing about its role
        assert postgres["severity"] == "medium" and "internet" not in postgres["message"].split("(")[0]
        assert "on in0 (lint cannot tell" in postgres["message"]


def test_an_exposure_that_rests_on_an_unmodelled_match_says_it_is_uncertain() -> None:
    from portkit.firewall import import_nft_json

    # A connection's first packet is never DNATed when no nat rule does it, so `ct status dnat`
    # is decided; a rate limit is not: the exposure holds only while the limit is not exceeded.
    status_dnat = {"limit": {"rate": 3, "per": "minute", "burst": 5}}
    dport = {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 6379}}
    doc = {
        "nftables": [
            {"table": {"family": "inet", "name": "f"}},
            {"chain": {"family": "inet", "table": "f", "name": "input", "type": "filter", "hook": "input",
                       "prio": 0, "policy": "drop"}},
            {"rule": {"family": "inet", "table": "f", "chain": "input", "handle": 3,
                      "expr": [status_dnat, dport, {"accept": None}]}},
        ]
    }  # fmt: skip
    findings = lint_ruleset(import_nft_json(json.dumps(doc)))
    [exposed] = _by_check(findings, "risky-exposure")
    assert "limit rate 3/minute burst 5 packets tcp dport 6379 accept" in exposed.message
    assert exposed.message.endswith("(uncertain: the accept depends on a match portkit cannot model)")
