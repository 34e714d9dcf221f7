from __future__ import annotations

import socket
from pathlib import Path
from typing import Any


def test_explain_443_names_https_on_tcp_and_quic(cli: Any) -> None:
    result = cli("explain", "443", "--json")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["class"] == "well-known"
    https = {s["protocol"] for s in doc["services"] if s["name"] == "https"}
    assert https == {"tcp", "udp"}
    assert any("QUIC" in s["description"] for s in doc["services"] if s["protocol"] == "udp")
    assert doc["bind"]["needs_privilege"] is True


def test_explain_reports_this_machines_ephemeral_range(cli: Any) -> None:
    first, last = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    doc = cli("explain", f"{first}/udp", "--json").json()
    assert doc["ephemeral"] is True and doc["protocols"] == ["udp"]
    assert doc["ephemeral_range"] == f"{first}-{last}"


def test_explain_telnet_shows_the_risk_and_the_alternative(cli: Any) -> None:
    result = cli("explain", "23")
    assert result.status == 0
    assert "telnet" in result.stdout and "risk (telnet)" in result.stdout and "22" in result.stdout


def test_bad_port_exits_2_with_one_line(cli: Any) -> None:
    for args in (
        ["explain", "70000"],
        ["explain", "http"],
        ["explain", "22/icmp"],
        ["free-port", "--range", "9-1"],
    ):
        result = cli(*args)
        assert result.status == 2, args
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert "ports are 0-65535" in cli("explain", "70000").stderr


def test_unknown_option_is_one_line_too(cli: Any) -> None:
    result = cli("explain", "--bogus", "22")
    assert result.status == 2 and len(result.stderr.strip().splitlines()) == 1


def test_lookup_ssh_includes_22_tcp(cli: Any) -> None:
    doc = cli("lookup", "ssh", "--json").json()
    assert any(s["port"] == 22 and s["protocol"] == "tcp" for s in doc["services"])
    assert cli("lookup", "remote", "desktop").stdout.count("3389") >= 1


def test_ranges_json_has_iana_and_host_settings(cli: Any) -> None:
    doc = cli("ranges", "--json").json()
    assert [r["name"] for r in doc["iana"]] == ["well-known", "registered", "dynamic"]
    assert doc["host"]["unprivileged_start"] == int(
        Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text()
    )


def test_free_port_returns_bindable_ports_outside_ephemeral(cli: Any) -> None:
    doc = cli("free-port", "--count", "3", "--range", "20000-30000", "--json").json()
    assert len(doc["ports"]) == 3
    first, last = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for port in doc["ports"]:
        assert 20000 <= port <= 30000 and not first <= port <= last
        with socket.socket() as s:
            s.bind(("0.0.0.0", port))


def test_registry_import_then_lookup_answers_from_iana(
    cli: Any, iana_csv: Path, isolated_cache: Path
) -> None:
    env = {"PORTKIT_CACHE_DIR": str(isolated_cache)}
    result = cli("registry", "import", str(iana_csv), "--json", env=env)
    assert result.status == 0, result.stderr
    report = result.json()
    assert report["records"] == 14447 == report["imported"] + report["skipped"]
    doc = cli("explain", "8883", "--json", env=env).json()
    assert any(s["source"] == "iana" and s["name"] == "secure-mqtt" for s in doc["services"])


def test_registry_update_says_clearly_when_offline(cli: Any) -> None:
    result = cli(
        "registry", "update", env={"https_proxy": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9"}
    )
    assert result.status == 1
    assert "cannot download the IANA registry" in result.stderr and "registry import FILE" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_lookup_quotes_a_long_query_briefly(cli: Any) -> None:
    result = cli("lookup", "x" * 5000)
    assert result.status == 0
    assert "no service matches" in result.stdout and len(result.stdout.strip()) < 120


def test_explain_port_0_says_the_kernel_picks_a_port(cli: Any) -> None:
    """bind() to port 0 takes a free port of the ephemeral range; it is no port one holds."""
    out = cli("explain", "0").stdout
    first, last = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    assert f"the kernel picks a free port from {first}-{last}" in out
    assert "ports from" not in out


def test_explain_a_reserved_port_in_the_ephemeral_range_is_never_handed_out() -> None:
    """The kernel skips net.ipv4.ip_local_reserved_ports when it picks an ephemeral port (per
    namespace), so such a port is in the range but never handed out."""
    import os
    import subprocess
    import sys

    import pytest

    if os.geteuid() != 0:
        pytest.skip("needs root (a network namespace with its own reserved ports)")
    from portkit.testing import LabNamespace

    with LabNamespace("pkab") as ns:
        ns.run(["sysctl", "-qw", "net.ipv4.ip_local_reserved_ports=40000"])
        run = subprocess.run(
            ["ip", "netns", "exec", ns.name, sys.executable, "-m", "portkit", "explain", "40000"],
            capture_output=True,
            text=True,
            check=True,
        )
        ephemeral = next(line for line in run.stdout.splitlines() if line.startswith("ephemeral:"))
        assert "never handed out" in ephemeral and "reserved" in ephemeral, ephemeral


def test_key_value_lines_write_out_control_characters(capsys: Any) -> None:
    """`nat router` prints the gateway's own words (its external address string) this way."""
    from portkit.cli.output import emit_pairs

    emit_pairs([("external address", "\x1b]0;pwned\x07203.0.113.9")])
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\\x1b]0;pwned\\x07203.0.113.9" in out


def test_free_port_says_why_a_range_gave_too_few(cli: Any) -> None:
    """A range inside the ephemeral range holds no candidate at all: 'found only 0 of 1 free
    ports' read as if every port there were taken."""
    first = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
    result = cli("free-port", "--range", f"{first}-{first}")
    assert result.status == 1
    assert "found only 0 of 1" in result.stderr
    assert "skipped" in result.stderr and "ephemeral" in result.stderr
