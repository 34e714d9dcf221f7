"""`portkit fw` as a user runs it: check (string, flags, --flows, --json), show, export, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

WEB = """\
default incoming deny
allow established
allow in on lo
allow tcp 22 from 10.0.0.0/8
allow tcp 80,443
reject tcp 8080 with tcp-reset
reject udp 53
"""


@pytest.fixture
def web(tmp_path: Path) -> Path:
    path = tmp_path / "web.policy"
    path.write_text(WEB)
    return path


def test_check_one_string(cli: Any, web: Path) -> None:
    res = cli("fw", "check", "--rules", str(web), "tcp 203.0.113.5:51000 -> 10.0.0.2:443")
    assert res.status == 0
    assert "verdict:   ACCEPT" in res.stdout and "line 5" in res.stdout
    assert "inet portkit input #4 (line 5)" in res.stdout  # the trace names chain, position and line


def test_check_flags_and_json_schema(cli: Any, web: Path) -> None:
    res = cli(
        "fw",
        "check",
        "--rules",
        str(web),
        "--proto",
        "tcp",
        "--src",
        "203.0.113.5",
        "--sport",
        "51000",
        "--dst",
        "10.0.0.2",
        "--dport",
        "8080",
        "--in",
        "eth0",
        "--state",
        "new",
        "--json",
    )
    assert res.status == 1
    doc = res.json()
    assert doc["verdict"] == "reject" and doc["reject_with"] == "tcp-reset"
    assert doc["scanner"]["state"] == "closed" and doc["scanner"]["errno"] == "ECONNREFUSED"
    assert doc["packet"]["in"] == "eth0" and doc["direction"] == "input"
    step = doc["trace"][-1]
    assert set(step) >= {"hook", "table", "chain", "position", "where", "rule", "matched", "effect"}
    assert step["where"] == "line 6" and step["matched"] is True
    udp = cli("fw", "check", "--rules", str(web), "udp 203.0.113.5:5353 -> 10.0.0.2:53", "--json").json()
    assert udp["reject_with"] == "icmp-port-unreachable"


def test_check_limits_states_what_rate_limits_do(cli: Any) -> None:
    # OpenWrt's fw4 rate-limits SYNs on every zone: unstated, a WAN port is "reject or drop".
    rules = str(Path(__file__).parent / "corpus/firewall/fw4-01_configuration-01_ruleset.nft")
    flow = "tcp 203.0.113.5:40000 -> 10.11.12.1:22 in pppoe-wan"
    unstated = cli("fw", "check", "--rules", rules, flow, "--json")
    assert unstated.status == 3 and unstated.json()["stated"] == []
    calm = cli("fw", "check", "--rules", rules, flow, "--limits", "unreached")
    assert calm.status == 1 and "verdict:   REJECT with tcp-reset" in calm.stdout
    assert "stated:    inet fw4 syn_flood #1: limit rate 25/second" in calm.stdout
    flood = cli("fw", "check", "--rules", rules, flow, "--limits", "reached", "--json").json()
    assert flood["verdict"] == "drop" and flood["certain"] and "limits reached" in flood["stated"][0]


def test_check_flows_file(cli: Any, web: Path, tmp_path: Path) -> None:
    flows = tmp_path / "flows.txt"
    flows.write_text(
        "# probes\ntcp 10.1.1.1:40000 -> 10.0.0.2:22\ntcp 198.51.100.1:40000 -> 10.0.0.2:22\n"
        "tcp 198.51.100.1:40000 -> 10.0.0.2:9999 state established\n"
    )
    res = cli("fw", "check", "--rules", str(web), "--flows", str(flows), "--json")
    assert res.status == 1
    doc = res.json()
    assert [r["verdict"] for r in doc["results"]] == ["accept", "drop", "accept"] and doc["accepted"] == 2
    plain = cli("fw", "check", "--rules", str(web), "--flows", str(flows))
    assert "drop" in plain.stdout and plain.stdout.count("\n") >= 4


def test_show_and_export(cli: Any, web: Path) -> None:
    shown = cli("fw", "show", str(web))
    assert shown.status == 0 and "chain input (filter hook input priority 0 policy drop)" in shown.stdout
    assert cli("fw", "show", str(web), "--json").json()["tables"][0]["name"] == "portkit"
    nft = cli("fw", "export", str(web), "--to", "nft")
    assert "table inet portkit {" in nft.stdout and "reject with tcp reset" in nft.stdout
    ipt = cli("fw", "export", str(web), "--to", "iptables")
    assert "-A INPUT -p tcp -m tcp --dport 8080 -j REJECT --reject-with tcp-reset" in ipt.stdout
    refused = cli("fw", "export", str(web), "--to", "ufw", "--json")
    assert refused.status == 1 and not refused.json()["ok"] and refused.json()["text"] == ""
    ufw = cli("fw", "export", str(web), "--to", "ufw", "--json", "--force").json()
    assert "ufw default deny incoming" in ufw["text"] and ufw["unrendered"] and ufw["ok"]
    assert any(not o["narrows"] for o in ufw["omitted"])
    strict = cli("fw", "export", str(web), "--to", "firewalld", "--strict", "--force")
    assert strict.status == 1 and "warning: --force" in strict.stderr


@pytest.mark.parametrize(
    "args",
    [
        ("fw", "check", "--rules", "RULES", "tcp 1.2.3.4:1 => 5.6.7.8:2"),
        ("fw", "check", "--rules", "RULES", "--dst", "10.0.0.1", "--state", "sleepy"),
        ("fw", "check", "--rules", "/nonexistent/rules", "tcp 1.2.3.4:1 -> 5.6.7.8:2"),
        ("fw", "check", "--rules", "RULES"),
        ("fw", "apply", "RULES", "--confirm-within", "soon"),
        ("fw", "export", "RULES", "--to", "pf"),
        # Interface names Linux refuses (dev_valid_name): none can carry a packet.
        ("fw", "check", "--rules", "RULES", "tcp 1.2.3.4:1 -> 5.6.7.8:2 in abcdefghijklmnop"),
        ("fw", "check", "--rules", "RULES", "tcp 1.2.3.4:1 -> 5.6.7.8:2 out a/b"),
        ("fw", "check", "--rules", "RULES", "--dst", "10.0.0.1", "--in", "eth0:1"),
        ("fw", "check", "--rules", "RULES", "tcp 1.2.3.4:1 -> 5.6.7.8:2", "--out", ".."),
        ("fw", "check", "--rules", "RULES", "tcp 1.2.3.4:1 -> 5.6.7.8:2", "--limits", "soon"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli: Any, web: Path, args: tuple[str, ...]) -> None:
    res = cli(*(str(web) if a == "RULES" else a for a in args))
    assert res.status == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    if any(a in ("in", "out", "--in", "--out") or " in " in a or " out " in a for a in args):
        assert "interface name" in res.stderr, res.stderr


def test_a_flow_names_interfaces_as_linux_allows_them(cli: Any, web: Path) -> None:
    for name in ("eth0", "br-lan", "wg0.5", "abcdefghijklmno", "veth@x", "é"):
        res = cli("fw", "check", "--rules", str(web), f"tcp 1.2.3.4:1 -> 5.6.7.8:80 in {name}")
        assert res.status in (0, 1, 3), (name, res.stderr)


def test_apply_state_lives_where_the_caller_says(tmp_path: Path) -> None:
    """The library takes the state directory as an argument; the CLI takes it from
    $PORTKIT_FW_STATE, else the library's default."""
    import json

    from portkit.cli.firewall import _state_root
    from portkit.firewall import confirm_apply, rollback_apply

    assert _state_root({}) is None and _state_root({"PORTKIT_FW_STATE": ""}) is None
    assert _state_root({"PORTKIT_FW_STATE": str(tmp_path)}) == tmp_path
    state = tmp_path / "netns-x"
    state.mkdir()
    (state / "state.json").write_text(json.dumps({"status": "rolled-back", "netns": "x"}))
    assert confirm_apply(netns="x", state_root=tmp_path).status == "rolled-back"
    assert confirm_apply(netns="y", state_root=tmp_path).status == "nothing-pending"
    assert rollback_apply(netns="x", state_root=tmp_path).status == "nothing-pending"


def test_rule_text_cannot_write_to_the_terminal(cli: Any, tmp_path: Path) -> None:
    """A comment is whoever wrote the rules' to choose (iptables-restore loads this one): check and
    show printed its OSC sequence raw, retitling the reader's terminal."""
    rules = tmp_path / "c.rules"
    rules.write_text(
        "*filter\n:INPUT DROP [0:0]\n"
        '-A INPUT -p tcp --dport 22 -m comment --comment "\x1b]0;pwned\x07 ssh" -j ACCEPT\nCOMMIT\n'
    )
    for args in (("check", "--rules", str(rules), "tcp 1.1.1.1:5 -> 2.2.2.2:22"), ("show", str(rules))):
        res = cli("fw", *args)
        assert res.status == 0, res.stderr
        assert "\x1b" not in res.stdout and "\x07" not in res.stdout
        assert "\\x1b]0;pwned\\x07 ssh" in res.stdout


@pytest.mark.parametrize("command", [("apply", "RULES"), ("confirm",), ("rollback",)])
def test_an_empty_netns_name_is_bad_input_not_this_host(
    cli: Any, web: Path, tmp_path: Path, command: tuple[str, ...]
) -> None:
    """`--netns "$NS"` with NS unset: confirm and rollback acted on this host's pending apply, and
    apply wrote its rules into this host's state before refusing the name."""
    import os

    state = tmp_path / "state"
    args = [str(web) if a == "RULES" else a for a in command]
    res = cli("fw", *args, "--netns", "", env={**os.environ, "PORTKIT_FW_STATE": str(state)})
    assert res.status == 2, (res.stdout, res.stderr)
    assert "invalid netns name ''" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (state / "host").exists()
