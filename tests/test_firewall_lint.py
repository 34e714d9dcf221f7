"""The linter finds what is planted: shadowed and redundant rules, dead rules, loops, exposures, lock-outs."""

from __future__ import annotations

from pathlib import Path

from portkit.firewall import Severity, import_iptables_save, lint_ruleset, parse_policy

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


def test_dead_rules_loops_and_missing_chains() -> None:
    rs = import_iptables_save(
        "*filter\n:INPUT DROP [0:0]\n:a - [0:0]\n:b - [0:0]\n:orphan - [0:0]\n"
        "-A INPUT -m conntrack --ctstate ESTABLISHED -j ACCEPT\n"
        "-A INPUT -p tcp --dport 22 -p udp -j ACCEPT\n"
        "-A INPUT -j a\n-A a -j b\n-A b -j a\n-A a -j nowhere\n-A orphan -j DROP\nCOMMIT\n"
    )
    findings = lint_ruleset(rs)
    checks = {f.check for f in findings}
    assert {"never-matches", "jump-loop", "missing-chain", "unused-chain"} <= checks
    loop = _by_check(findings, "jump-loop")[0]
    assert "a -> b -> a" in loop.message


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
