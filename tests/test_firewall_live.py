"""The live side, in namespaces this test creates: `fw check --netns` against real packets,
iptables-nft tables read through iptables-save, the export/import round trip, and `fw apply`
rolling back unless confirmed."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import fixtures_firewall as lab_mod
from conftest import needs_root
from portkit.firewall import canonical, import_iptables_save, parse_policy, read_live

pytestmark = needs_root


def _nft(lab: lab_mod.FirewallLab, script: str) -> None:
    subprocess.run(["ip", "netns", "exec", lab.server, "nft", "-f", "-"], input=script, text=True, check=True)


def _probe(
    lab: lab_mod.FirewallLab, proto: str, dport: int, src: str = "10.66.0.1", dst: str = "10.66.0.2"
) -> str:
    base = lab.sport_block()
    return lab.run([lab_mod.Probe(proto, src, 0, dst, dport)], base)[0], base  # type: ignore[return-value]


def test_fw_check_netns_gives_the_kernels_answer(lab: lab_mod.FirewallLab, cli: Any) -> None:
    _nft(
        lab,
        "flush ruleset\ntable inet web {\n chain input {\n  type filter hook input priority 0; policy drop;\n"
        "  ct state established,related accept\n  tcp dport 2000 accept\n"
        "  tcp dport 2001 reject with tcp reset\n  udp dport 2002 reject with icmpx type admin-prohibited\n"
        " }\n}\n",
    )
    expectations = {
        ("tcp", 2000): ("accept", None, "connected+accepted"),
        ("tcp", 2001): ("reject", "tcp-reset", "ECONNREFUSED"),
        ("udp", 2002): ("reject", "icmp-admin-prohibited", "EHOSTUNREACH"),
        ("tcp", 2003): ("drop", None, "timeout"),
    }
    for (proto, port), (verdict, answer, seen) in expectations.items():
        observed, base = _probe(lab, proto, port)
        flow = f"{proto} 10.66.0.1:{base} -> 10.66.0.2:{port} in {lab.server_if}"
        res = cli("fw", "check", "--netns", lab.server, flow, "--json")
        doc = res.json()
        assert (doc["verdict"], doc["reject_with"]) == (verdict, answer), flow
        assert doc["trace"] and res.status == (0 if verdict == "accept" else 1)
        assert observed == seen, flow
    text = cli(
        "fw",
        "check",
        "--netns",
        lab.server,
        "--proto",
        "tcp",
        "--src",
        "10.66.0.1",
        "--dst",
        "10.66.0.2",
        "--dport",
        "2001",
        "--in",
        lab.server_if,
    )
    assert "REJECT with tcp-reset" in text.stdout and "handle" in text.stdout


def test_iptables_nft_tables_are_read_through_iptables_save(lab: lab_mod.FirewallLab) -> None:
    lab.flush()
    rules = (
        "*filter\n:INPUT ACCEPT [0:0]\n"
        '-A INPUT -p tcp -m tcp --dport 2004 -m comment --comment "no app" '
        "-j REJECT --reject-with tcp-reset\n"
        "-A INPUT -p udp -m multiport --dports 2005,2006 -j DROP\nCOMMIT\n"
    )
    subprocess.run(
        ["ip", "netns", "exec", lab.server, "iptables-nft-restore"], input=rules, text=True, check=True
    )
    try:
        rs = read_live(lab.server)
        assert any("iptables-save" in n for n in rs.notes)
        for proto, port in (("tcp", 2004), ("udp", 2005), ("tcp", 2005)):
            observed, base = _probe(lab, proto, port)
            probe = lab_mod.Probe(proto, "10.66.0.1", 0, "10.66.0.2", port)
            assert lab_mod.predict(rs, probe, base, lab.server_if) == observed
    finally:
        subprocess.run(["ip", "netns", "exec", lab.server, "iptables-nft", "-F"], check=False)
        lab.flush()


def test_iptables_legacy_tables_are_read_beside_nftables(lab: lab_mod.FirewallLab) -> None:
    """x_tables rules sit in the same hooks as nftables' but nft does not list them: read from
    iptables-legacy-save as `filter-legacy`, they give the kernel's answer with nft rules beside."""
    legacy = (
        "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n"
        "-A INPUT -p tcp --dport 2006 -j DROP\n-A INPUT -p udp --dport 2007 -j REJECT\nCOMMIT\n"
    )
    _nft(lab, "flush ruleset\ntable inet web {\n chain input {\n  type filter hook input priority 0; "
         "policy accept;\n  tcp dport 2008 drop\n }\n}\n")  # fmt: skip
    subprocess.run(
        ["ip", "netns", "exec", lab.server, "iptables-legacy-restore"], input=legacy, text=True, check=True
    )
    try:
        rs = read_live(lab.server)
        names = [str(t) for t in rs.tables]
        assert "ip filter-legacy" in names and "inet web" in names, names
        assert not any(t.name == "filter" for t in rs.tables)  # iptables-nft's filter is not there
        for proto, port in (("tcp", 2006), ("udp", 2007), ("tcp", 2008), ("tcp", 2009), ("udp", 2006)):
            observed, base = _probe(lab, proto, port)
            probe = lab_mod.Probe(proto, "10.66.0.1", 0, "10.66.0.2", port)
            assert lab_mod.predict(rs, probe, base, lab.server_if) == observed, (proto, port, observed)
        # Emptied, the legacy table changes nothing and is left out.
        subprocess.run(["ip", "netns", "exec", lab.server, "iptables-legacy", "-F"], check=True)
        assert "ip filter-legacy" not in [str(t) for t in read_live(lab.server).tables]
    finally:
        subprocess.run(["ip", "netns", "exec", lab.server, "iptables-legacy", "-F"], check=False)
        lab.flush()


def test_round_trip_of_iptables_and_policy_rulesets(lab: lab_mod.FirewallLab) -> None:
    ipt = import_iptables_save(
        "*filter\n:INPUT DROP [0:0]\n:svc - [0:0]\n"
        "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        "-A INPUT -s 10.0.0.0/8 -p tcp -m multiport --dports 22,80:90 -j svc\n"
        "-A INPUT -p udp ! --dport 53 -j REJECT --reject-with icmp-host-prohibited\n"
        "-A INPUT -i eth+ -p icmp -m icmp --icmp-type 8 -j ACCEPT\n-A svc -p tcp --sport 1:1023 -j RETURN\n"
        "-A svc -j ACCEPT\nCOMMIT\n"
    )
    pol = parse_policy(
        "default incoming deny\nallow established\nallow tcp 22,443 from 10.0.0.0/8\n"
        "reject udp 5000-5100 with admin-prohibited\nallow icmpv6\n"
    )
    for rs in (ipt, pol):
        assert canonical(lab.load(rs)) == canonical(rs)
    lab.flush()


def test_apply_rolls_back_unless_confirmed(lab: lab_mod.FirewallLab, cli: Any, tmp_path: Path) -> None:
    env = {"PORTKIT_FW_STATE": str(tmp_path / "state")}
    _nft(
        lab,
        "flush ruleset\ntable inet old {\n chain input {\n  type filter hook input priority 0;\n"
        "  tcp dport 2007 drop\n }\n}\n",
    )
    new = tmp_path / "new.policy"
    new.write_text("default incoming deny\nallow tcp 2000\n")
    res = cli("fw", "apply", str(new), "--netns", lab.server, "--confirm-within", "2s", "--json", env=env)
    assert res.status == 0 and res.json()["status"] == "pending"
    assert {t.name for t in lab.kernel_ruleset().tables} == {"portkit"}
    assert _probe(lab, "tcp", 2001)[0] == "timeout"  # the new policy drops it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and {t.name for t in lab.kernel_ruleset().tables} != {"old"}:
        time.sleep(0.2)
    assert {t.name for t in lab.kernel_ruleset().tables} == {"old"}  # rolled back, unconfirmed
    assert _probe(lab, "tcp", 2001)[0] == "connected+accepted"
    late = cli("fw", "confirm", "--netns", lab.server, "--json", env=env)
    assert late.status == 1

    res = cli("fw", "apply", str(new), "--netns", lab.server, "--confirm-within", "2s", env=env)
    assert res.status == 0
    ok = cli("fw", "confirm", "--netns", lab.server, "--json", env=env)
    assert ok.status == 0 and ok.json()["status"] == "confirmed"
    time.sleep(2.5)
    assert {t.name for t in lab.kernel_ruleset().tables} == {"portkit"}  # kept

    bad = tmp_path / "bad.nft"
    bad.write_text(
        "table inet x { chain c { type filter hook input priority 0; tcp dport 70000 accept; } }\n"
    )
    res = cli("fw", "apply", str(bad), "--netns", lab.server, env=env)
    assert res.status == 2 and "invalid" in res.stderr
    assert {t.name for t in lab.kernel_ruleset().tables} == {"portkit"}  # untouched
    lab.flush()


def test_prerouting_nat_rewrites_before_the_filter(lab: lab_mod.FirewallLab) -> None:
    """A redirect on prerouting changes the port the input chain sees, as portkit predicts."""
    cases = {
        # input accepts the rewritten port: the probe to 2100 gets through
        "tcp dport 2000 accept": "accept",
        # input accepts only the original port: the rewritten packet is dropped
        "tcp dport 2100 accept": "drop",
    }
    for rule, verdict in cases.items():
        script = (
            "flush ruleset\ntable ip nat {\n chain pre {\n  type nat hook prerouting priority -100;\n"
            "  tcp dport 2100 redirect to :2000\n }\n}\n"
            "table inet f {\n chain input {\n  type filter hook input priority 0; policy drop;\n"
            f"  ct state established accept\n  {rule}\n }}\n}}\n"
        )
        _nft(lab, script)
        rs = lab.kernel_ruleset()
        observed, base = _probe(lab, "tcp", 2100)
        packet = lab_mod.Probe("tcp", "10.66.0.1", 0, "10.66.0.2", 2100).packet(base, lab.server_if)
        from portkit.firewall import evaluate

        d = evaluate(rs, packet)
        assert d.verdict.value == verdict, rule
        assert d.final_packet is not None and d.final_packet.dport == 2000
        assert observed.startswith("connected") == (verdict == "accept"), (rule, observed)
    lab.flush()
