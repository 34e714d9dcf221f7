"""`portkit nat add/rm/ls/check` against a real home network of namespaces.

The rules `nat add` prints are loaded into the lab router with the real tool (nft -f -,
iptables-restore -n) and checked end to end: data sent from the outside host to the router's
public address must come back from the LAN server's echo service, hairpin from a LAN host
included, and nothing beyond the forward may get through. firewalld and ufw text, which no
daemon can load here, is read back through portkit's importers and evaluated.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import needs_root, run_cli
from portkit.testing import HomeLab, HomeSpec, LabHost

PAYLOAD = os.urandom(48 * 1024)  # more than one segment, both ways


@pytest.fixture
def home() -> Iterator[HomeLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, nftables, iptables)")
    with HomeLab(HomeSpec((LabHost("server"), LabHost("pc")))) as running:
        running.echo_server("server", 443)
        yield running


def _add(home: HomeLab, *args: str) -> str:
    result = run_cli(
        "nat", "add", "8443", f"{home.address('server')}:443", "--netns", home.netns("router"), *args
    )
    assert result.status == 0, result.stderr
    return result.stdout


def _ls(home: HomeLab) -> list[dict[str, object]]:
    result = run_cli("nat", "ls", "--netns", home.netns("router"), "--json")
    assert result.status in (0, 1), result.stderr
    forwards: list[dict[str, object]] = result.json()["forwards"]
    return forwards


def _reaches(home: HomeLab, host: str) -> bool:
    return home.exchange(host, home.wan_address, 8443, PAYLOAD) == PAYLOAD


def _nft_ruleset(home: HomeLab) -> str:
    return str(home.run("router", ["nft", "list", "ruleset"]).stdout)


def _iptables_rules(home: HomeLab) -> list[str]:
    out = home.run("router", ["iptables-save"]).stdout
    return [ln for ln in out.splitlines() if ln.startswith(("-A", ":", "*"))]


@needs_root
def test_nft_forward_end_to_end_with_hairpin_then_rm(home: HomeLab) -> None:
    before = _nft_ruleset(home)
    assert not _reaches(home, "outside")
    rules = _add(home, "--in", "wan0", "--hairpin")
    assert 'comment "portkit-nat:tcp-8443"' in rules
    home.nft("router", rules)
    assert _reaches(home, "outside")
    assert _reaches(home, "pc")  # hairpin: a LAN client through the public address
    assert _reaches(home, "router")  # the router itself (output DNAT)
    # ... but not its connections to its own loopback, which stay with its own service.
    home.popen("router", ["socat", "TCP-LISTEN:8443,bind=127.0.0.1,reuseaddr,fork", "SYSTEM:echo local"])
    for _ in range(100):
        answer = home.exchange("router", "127.0.0.1", 8443, b"")
        if answer:
            break
        time.sleep(0.05)
    assert answer == b"local\n"
    forwards = [f for f in _ls(home) if f["tag"] == "portkit-nat:tcp-8443"]
    assert len(forwards) == 3  # prerouting from wan0, prerouting from elsewhere, output
    for f in forwards:
        assert f["target"] == f"{home.address('server')}:443" and f["filter"] == "accept"
        if f["hook"] == "output":  # the router's own connections: not forwarded, no hairpin
            assert f["forwarding"] is None and f["hairpin"] == "not-applicable"
        else:
            assert f["forwarding"] is True and f["hairpin"] == "yes"
        listening = f["listening"]
        assert isinstance(listening, dict) and listening["state"] == "listening"
        assert listening["netns"] == home.netns("server")
    removed = run_cli("nat", "rm", "tcp-8443", "--netns", home.netns("router"), "--apply")
    assert removed.status == 0, removed.stderr
    assert _nft_ruleset(home) == before  # exactly what add made, table included
    assert not _reaches(home, "outside")
    again = run_cli("nat", "rm", "tcp-8443", "--netns", home.netns("router"))
    assert again.status == 1 and "no rules tagged portkit-nat:tcp-8443" in again.stderr


@needs_root
def test_iptables_forward_end_to_end_with_hairpin_then_rm(home: HomeLab) -> None:
    before = _iptables_rules(home)
    rules = _add(home, "--to", "iptables", "--in", "wan0", "--hairpin")
    loaded = home.run("router", ["iptables-restore", "-n"], input=rules)
    assert loaded.returncode == 0, loaded.stderr
    assert _reaches(home, "outside")
    assert _reaches(home, "pc")
    forwards = [f for f in _ls(home) if f["tag"] == "portkit-nat:tcp-8443"]
    assert {(f["table"], f["chain"]) for f in forwards} == {("ip nat", "PREROUTING"), ("ip nat", "OUTPUT")}
    assert all(f["filter"] == "accept" for f in forwards)
    assert {f["hook"]: f["hairpin"] for f in forwards} == {"prerouting": "yes", "output": "not-applicable"}
    removed = run_cli("nat", "rm", "tcp-8443", "--netns", home.netns("router"), "--apply", "--json")
    assert removed.status == 0, removed.stderr
    assert len(removed.json()["iptables"]) == 5  # 2 prerouting, output, postrouting, forward
    after = _iptables_rules(home)
    assert [ln for ln in after if ln.startswith("-A")] == [ln for ln in before if ln.startswith("-A")]
    assert not _reaches(home, "outside")


@needs_root
def test_forward_through_a_dropping_filter_accepts_only_the_forward(home: HomeLab) -> None:
    # A router whose forward path drops everything but replies: the accept must go into that
    # chain (an accept in portkit's own table would not override its drop), and nothing else
    # may pass: not the server's other ports, not the server addressed directly.
    home.nft(
        "router",
        "table inet filter {\n chain forward {\n  type filter hook forward priority filter; policy drop;\n"
        '  ct state established,related accept\n  oifname "wan0" accept\n }\n}\n',
    )
    home.echo_server("server", 22)
    home.run("outside", ["ip", "route", "add", "192.168.77.0/24", "via", home.wan_address])
    rules = _add(home)
    assert "insert rule inet filter forward" in rules
    home.nft("router", rules)
    assert _reaches(home, "outside")
    direct = home.exchange("outside", home.address("server"), 443, b"direct")
    assert direct == b""  # not DNATed: the accept is only for DNATed connections
    other = run_cli("nat", "add", "2222", f"{home.address('server')}:22", "--netns", home.netns("router"))
    assert other.status == 0
    assert home.exchange("outside", home.address("server"), 22, b"x") == b""  # not loaded yet
    home.nft("router", other.stdout)
    assert home.exchange("outside", home.wan_address, 2222, b"ssh?") == b"ssh?"
    assert home.exchange("outside", home.address("server"), 22, b"x") == b""  # still not directly
    [forward] = [f for f in _ls(home) if f["tag"] == "portkit-nat:tcp-8443"]
    assert forward["filter"] == "accept"
    assert forward["hairpin"] == "no"  # no --hairpin: LAN clients are DNATed but not masqueraded
    removed = run_cli("nat", "rm", "tcp-8443", "--netns", home.netns("router"), "--apply")
    assert removed.status == 0
    after = _nft_ruleset(home)
    assert "portkit-nat:tcp-8443" not in after and "portkit-nat:tcp-2222" in after  # only that forward
    assert home.exchange("outside", home.wan_address, 2222, b"ssh?") == b"ssh?"
    assert "policy drop" in _nft_ruleset(home)  # the user's own chain stays


@needs_root
def test_nat_add_apply_goes_through_the_guarded_apply(home: HomeLab, tmp_path: Path) -> None:
    env = {"PORTKIT_FW_STATE": str(tmp_path)}
    router = home.netns("router")
    applied = run_cli(
        "nat", "add", "8443", f"{home.address('server')}:443", "--in", "wan0",
        "--netns", router, "--apply", "--confirm-within", "60s", env=env,
    )  # fmt: skip
    assert applied.status == 0, applied.stderr
    assert "pending" in applied.stderr
    assert _reaches(home, "outside")
    rolled = run_cli("fw", "rollback", "--netns", router, env=env)
    assert rolled.status == 0, rolled.stderr
    assert not _reaches(home, "outside")
    assert "portkit_nat" not in _nft_ruleset(home)
    assert "table ip home" in _nft_ruleset(home)  # the rules that were there before are back


@needs_root
def test_nat_ls_lists_a_docker_publish_and_flags_a_target_where_nothing_listens(home: HomeLab) -> None:
    # What Docker writes for `docker run -p 8080:80` (iptables-nft), with the container's address
    # replaced by the LAN host `pc`, where nothing listens on port 80.
    docker = (
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\n:DOCKER - [0:0]\n"
        "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n"
        "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n"
        "-A DOCKER -i docker0 -j RETURN\n"
        "-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT "
        f"--to-destination {home.address('pc')}:80\n"
        "COMMIT\n"
        # Docker sets iptables' FORWARD policy to DROP and accepts its containers' traffic itself.
        "*filter\n:FORWARD DROP [0:0]\n"
        f"-A FORWARD -d {home.address('pc')}/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        "-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n"
        "-A FORWARD -o wan0 -j ACCEPT\nCOMMIT\n"
    )
    loaded = home.run("router", ["iptables-restore", "-n"], input=docker)
    assert loaded.returncode == 0, loaded.stderr
    # nft rules cannot open iptables' FORWARD: nat add says so, and its iptables output does it.
    planned = run_cli(
        "nat", "add", "8443", f"{home.address('server')}:443", "--netns", home.netns("router"), "--json"
    )
    assert any("iptables' FORWARD chain drops" in n for n in planned.json()["notes"])
    home.nft("router", planned.json()["rules"])
    assert not _reaches(home, "outside")
    iptables = _add(home, "--to", "iptables")
    accept = "*filter\n" + iptables.split("*filter\n", 1)[1]
    assert home.run("router", ["iptables-restore", "-n"], input=accept).returncode == 0
    assert _reaches(home, "outside")
    listed = run_cli("nat", "ls", "--netns", home.netns("router"), "--json")
    assert listed.status == 1  # a problem was found
    forwards = listed.json()["forwards"]
    [published] = [f for f in forwards if f["chain"] == "DOCKER"]
    # PREROUTING's `-m addrtype --dst-type LOCAL`, decided from the router's local routing table.
    assert published["public_address"] == "local" and published["public_port"] == "8080"
    assert published["in"] == "!docker0" and published["filter"] == "accept"
    assert published["target"] == f"{home.address('pc')}:80"
    assert published["listening"]["state"] == "nothing-listens"
    assert any("nothing listens on tcp" in p for p in published["problems"])
    [ours] = [f for f in forwards if f["tag"] == "portkit-nat:tcp-8443"]
    assert ours["listening"]["state"] == "listening" and not ours["problems"]
    text = run_cli("nat", "ls", "--netns", home.netns("router"))
    assert "ip nat DOCKER" in text.stdout
    # nft cannot show an iptables-nft DNAT's target; the check reads it from iptables-save.
    checked = run_cli("nat", "check", f"{home.wan_address}:8080", "--from", home.netns("outside"))
    assert checked.status == 1
    assert f"DNATed it to {home.address('pc')}:80, which refused it" in checked.stdout
    assert f"-> {home.address('pc')}:80: nothing listens on tcp {home.address('pc')}:80" in text.stdout


@needs_root
def test_nat_ls_reports_forwarding_off(home: HomeLab) -> None:
    home.nft("router", _add(home))
    home.run("router", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    [forward] = _ls(home)
    assert forward["forwarding"] is False
    assert any("forwarding is off" in str(p) for p in forward["problems"])  # type: ignore[union-attr]
    assert not _reaches(home, "outside")  # the kernel agrees


@needs_root
def test_nat_check_passes_and_fails_with_the_router_evidence(home: HomeLab) -> None:
    public = f"{home.wan_address}:8443"
    outside = home.netns("outside")
    failed = run_cli("nat", "check", public, "--from", outside, "--json")
    assert failed.status == 1
    doc = failed.json()
    assert doc["reachable"] is False and doc["router"] == home.netns("router")
    assert "no DNAT rule" in doc["cause"]
    # portkit diagnose from the same vantage names the cause by its code.
    assert doc["diagnosis"] is not None and doc["diagnosis"]["code"] == "NO_LISTENER", doc["diagnosis"]
    home.nft("router", _add(home, "--in", "wan0"))
    passed = run_cli("nat", "check", public, "--from", outside, "--json")
    assert passed.status == 0, passed.stdout
    doc = passed.json()
    assert doc["reachable"] and doc["probe"]["outcome"] == "connected"
    assert doc["probe"]["received_text"] == "portkit nat check\n"  # echoed by the LAN server
    assert [h["rule"] for h in doc["rule_hits"]] == ["portkit-nat:tcp-8443"]
    [entry] = doc["conntrack"]
    assert entry["dnat"] and entry["reply"].startswith(f"{home.address('server')}:443 ->")
    # A forward to a port where nothing listens: DNATed, then refused by the target.
    home.nft(
        "router",
        run_cli("nat", "add", "9000", f"{home.address('pc')}:9", "--netns", home.netns("router")).stdout,
    )
    refused = run_cli("nat", "check", f"{home.wan_address}:9000", "--from", outside)
    assert refused.status == 1
    assert f"DNATed it to {home.address('pc')}:9, which refused it" in refused.stdout
    assert "diagnose: DNAT_TO_NOTHING" in refused.stdout, refused.stdout


@needs_root
def test_udp_forward_end_to_end(home: HomeLab) -> None:
    from portkit.model import Protocol

    home.echo_server("server", 5353, Protocol.UDP)
    rules = run_cli(
        "nat", "add", "53", f"{home.address('server')}:5353", "--proto", "udp",
        "--netns", home.netns("router"),
    )  # fmt: skip
    home.nft("router", rules.stdout)
    assert home.exchange("outside", home.wan_address, 53, b"query", Protocol.UDP) == b"query"
    checked = run_cli(
        "nat", "check", f"{home.wan_address}:53", "--proto", "udp", "--from", home.netns("outside")
    )
    assert checked.status == 0, checked.stdout


# -- text no daemon can load here: read back through portkit's importers ----------------------


def _evaluate(ruleset: object, flow: str) -> object:
    from portkit.firewall import Packet, evaluate

    local = {__import__("ipaddress").ip_address("203.0.113.1")}
    return evaluate(ruleset, Packet.parse(flow), local_addresses=local, forwarding={4: True})  # type: ignore[arg-type]


def test_ufw_text_reads_back_and_forwards_only_the_port(tmp_path: Path) -> None:
    import ipaddress

    from portkit.firewall import Ruleset, import_iptables_save, import_ufw
    from portkit.model import Transport
    from portkit.nat import PortForward, render

    stock = Path("/usr/share/ufw/iptables") if Path("/usr/share/ufw/iptables").is_dir() else Path("/etc/ufw")
    if not (stock / "before.rules").is_file():
        pytest.skip("ufw's stock rules files are not installed (Debian package ufw)")
    fwd = PortForward(8443, ipaddress.ip_address("192.168.77.10"), 443, Transport.TCP, "wan0")
    text = render(fwd, "ufw")
    directory = tmp_path / "ufw"
    directory.mkdir()
    for name in ("before.rules", "after.rules", "user.rules"):
        source = stock / name
        if not source.is_file():
            source = Path("/etc/ufw") / name
        shutil.copy(source, directory / name)
    (directory / "before.rules").write_text(text + (directory / "before.rules").read_text())
    defaults = tmp_path / "ufw.default"
    defaults.write_text(
        'DEFAULT_INPUT_POLICY="DROP"\nDEFAULT_OUTPUT_POLICY="ACCEPT"\nDEFAULT_FORWARD_POLICY="DROP"\n'
    )
    filtering = import_ufw(directory, defaults_file=defaults)
    nat_section = text[text.index("\n*nat") : text.index("\n*filter")]
    nat = import_iptables_save(nat_section, source="ufw before.rules *nat")
    ruleset = Ruleset((*nat.tables, *filtering.tables), "ufw")
    through = _evaluate(ruleset, "tcp 192.0.2.7:40000 -> 203.0.113.1:8443 in wan0")
    assert through.outcome == "accept" and through.certain  # type: ignore[attr-defined]
    assert str(through.final_packet.dst) == "192.168.77.10"  # type: ignore[attr-defined]
    # Routed traffic that no DNAT rewrote still meets ufw's routed policy: drop.
    direct = _evaluate(ruleset, "tcp 192.0.2.7:40000 -> 192.168.77.10:443 in wan0 out br-lan")
    assert direct.outcome == "drop"  # type: ignore[attr-defined]
    other = _evaluate(ruleset, "tcp 192.0.2.7:40000 -> 203.0.113.1:8444 in wan0")
    assert other.final_packet.dst == through.packet.dst  # type: ignore[attr-defined]


def test_firewalld_lines_read_back() -> None:
    import ipaddress

    from portkit.firewall import import_iptables_save
    from portkit.model import Transport
    from portkit.nat import PortForward, parse_firewalld, render

    target = ipaddress.ip_address("192.168.77.10")
    plain = PortForward(8443, target, 443, Transport.TCP)
    ports, direct = parse_firewalld(render(plain, "firewalld"))
    assert ports == [{"port": "8443", "proto": "tcp", "toport": "443", "toaddr": "192.168.77.10"}]
    assert direct == []
    bound = PortForward(
        8443, target, 443, Transport.UDP, "wan0", ipaddress.ip_address("203.0.113.1"), True,
        ipaddress.ip_network("192.168.77.0/24"),
    )  # fmt: skip
    text = render(bound, "firewalld")
    assert '--zone="$(firewall-cmd --get-zone-of-interface=wan0)"' in text
    ports, direct = parse_firewalld(text)
    assert ports == [
        {
            "port": "8443",
            "proto": "udp",
            "toport": "443",
            "toaddr": "192.168.77.10",
            "destination": "203.0.113.1",
        }
    ]
    # The hairpin direct rules are iptables rules: they read back as DNAT, DNAT and a masquerade
    # of DNATed connections from the LAN only.
    lines = [f"-A {args}" for family, table, args in direct if family == "ipv4" and table == "nat"]
    assert len(lines) == len(direct) == 3
    ruleset = import_iptables_save("*nat\n" + "\n".join(lines) + "\nCOMMIT\n")
    actions = [(c.name, r.action.value) for _t, c, _i, r in ruleset.rules()]
    assert actions == [("PREROUTING", "dnat"), ("OUTPUT", "dnat"), ("POSTROUTING", "masquerade")]
    assert all(r.comment == "portkit-nat:udp-203.0.113.1-8443" for *_x, r in ruleset.rules())


def test_generated_nft_and_iptables_read_back_to_the_same_forward() -> None:
    """Every format states the same forward: the DNAT rule portkit reads back from each is the one asked."""
    import ipaddress

    from portkit.firewall import import_iptables_save
    from portkit.model import Transport
    from portkit.nat import PortForward, find_forwards, render

    fwd = PortForward(8443, ipaddress.ip_address("192.168.77.10"), 443, Transport.TCP, "wan0")
    ruleset = import_iptables_save(render(fwd, "iptables"))
    [found] = find_forwards(ruleset)
    assert (found.protocol, found.public_address, found.public_port, found.iif, found.target) == (
        "tcp", "local", "8443", "wan0", "192.168.77.10:443",
    )  # fmt: skip
    assert found.tag == "portkit-nat:tcp-8443"


# -- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("add", "0", "192.168.1.5:443"), "invalid public port '0'"),
        (("add", "70000", "192.168.1.5:443"), "invalid public port '70000'"),
        (("add", "8443", "192.168.1.5:70000"), "invalid target port '70000'"),
        (("add", "8443", "192.168.1.5"), "invalid target"),
        (("add", "8443", "192.168.1.5:443", "--in", "bad name!"), "invalid interface"),
        (("add", "8443", "192.168.1.5:443", "--public-addr", "2001:db8::1"), "invalid --public-addr"),
        (("add", "8443", "192.168.1.5:443", "--to", "ufw", "--apply"), "--apply loads nft rules only"),
        (("add", "8443", "192.168.1.5:443", "--netns", "pk-no-such-netns"), "unknown network namespace"),
        (("rm", "tcp-0"), "invalid forward id"),
        (("rm", "nonsense"), "invalid forward id"),
        (("ls", "--netns", "pk-no-such-netns"), "unknown network namespace"),
        (("check", "203.0.113.1:0", "--from", "x"), "invalid target port '0'"),
        (("check", "203.0.113.1:8443", "--from", "pk-no-such-netns"), "unknown network namespace"),
        # getaddrinfo reads these as inet_aton does (1.2.0.3, octal 8.0.0.5): refused, not resolved
        (("add", "8443", "1.2.3:443"), "invalid target host '1.2.3'"),
        (("add", "8443", "010.0.0.5:443"), "invalid target host '010.0.0.5'"),
        (("add", "8443", "0x0a000005:443"), "invalid target host '0x0a000005'"),
        (("add", "8443", "192.168.1.5:443", "--public-addr", "203.0.113"), "invalid --public-addr"),
        (("check", "203.0.113:8443", "--from", "x"), "invalid target host '203.0.113'"),
        (("add", "8443", "192.168.1.5:443", "--zone", "dmz"), "give it with --to firewalld"),
        (("add", "8443", "192.168.1.5:443", "--to", "firewalld", "--zone", "a b;x"), "invalid --zone"),
        # addresses no DNAT can deliver to: "any" is not a destination, nor a group or broadcast
        (("add", "8443", "0.0.0.0:443"), "invalid target 0.0.0.0"),
        (("add", "8443", "[::]:443"), "invalid target ::"),
        (("add", "8443", "224.0.0.1:443", "--proto", "udp"), "invalid target 224.0.0.1"),
        (("add", "8443", "255.255.255.255:443"), "invalid target 255.255.255.255"),
        (("add", "8443", "[ff02::1]:443"), "invalid target ff02::1"),
        (("add", "8443", "[::1]:443"), "invalid target ::1"),  # never routed from outside
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], words: str) -> None:
    result = run_cli("nat", *args)
    assert result.status == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert words in result.stderr


def test_firewalld_zone_is_written_into_every_line() -> None:
    result = run_cli("nat", "add", "8443", "192.168.1.5:443", "--to", "firewalld", "--zone", "dmz")
    assert result.status == 0, result.stderr
    adds = [line for line in result.stdout.splitlines() if line.startswith("firewall-cmd --permanent")]
    assert adds and all("--zone=dmz " in line for line in adds), result.stdout


@needs_root
def test_an_unknown_target_name_is_one_line_and_exit_2() -> None:
    # Resolved inside an empty namespace: the DNS query has nowhere to go, so nothing leaves.
    import subprocess
    import sys

    from portkit.testing import LabNamespace

    with LabNamespace("pknat") as ns:
        proc = ns.run(
            [sys.executable, "-m", "portkit", "nat", "add", "8443", "no-such-host.invalid:443"],
            timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "unknown target host 'no-such-host.invalid'" in proc.stderr


@needs_root
def test_an_internationalised_target_name_is_looked_up_not_refused() -> None:
    """`bücher.example` is a host name (asked for as xn--bcher-kva.example); a string that has
    no IDNA form is still refused as no name."""
    import subprocess
    import sys

    from portkit.testing import LabNamespace

    with LabNamespace("pknat") as ns:
        proc = ns.run(
            [sys.executable, "-m", "portkit", "nat", "add", "8443", "bücher.example:443"],
            timeout=60, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.returncode == 2 and "unknown target host 'bücher.example'" in proc.stderr, proc.stderr
    refused = run_cli("nat", "add", "8443", "ü" * 70 + ".example:443")  # a label too long
    assert refused.status == 2 and "invalid target host" in refused.stderr, refused.stderr


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_target_and_id_parsers_take_any_text(text: str) -> None:
    from portkit.errors import UsageError
    from portkit.nat._generate import parse_forward_id
    from portkit.nat._rules import parse_target

    try:
        address, port = parse_target(text)  # no name lookups: see _no_lookups
        assert 1 <= port <= 65535 and str(address)
    except UsageError:
        pass
    try:
        ident = parse_forward_id(text)
        assert text.strip().endswith(ident)
    except UsageError:
        pass


@given(
    st.integers(1, 65535), st.integers(1, 65535), st.sampled_from(["tcp", "udp"]),
    st.one_of(st.none(), st.ip_addresses(v=4)),
)  # fmt: skip
def test_a_forward_id_reads_back(public: int, target: int, proto: str, address: object) -> None:
    import ipaddress

    from portkit.model import Transport
    from portkit.nat import PortForward
    from portkit.nat._generate import parse_forward_id

    fwd = PortForward(public, ipaddress.ip_address("192.168.1.5"), target, Transport(proto),
                      public_address=address)  # type: ignore[arg-type]  # fmt: skip
    assert parse_forward_id(fwd.id) == fwd.id == parse_forward_id(fwd.tag)


@pytest.fixture(autouse=True)
def _no_lookups(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names never reach a resolver from this process (CLI runs are separate processes)."""
    import socket

    def refuse(*_: object, **__: object) -> object:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_conntrack_readers_take_any_input() -> None:
    from portkit.nat._conntrack import decode_dump, parse_proc

    line = (
        "ipv4     2 tcp      6 117 TIME_WAIT src=203.0.113.2 dst=203.0.113.1 sport=40000 dport=8443 "
        "src=192.168.77.10 dst=203.0.113.2 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2"
    )
    [entry] = parse_proc(line + "\nnot a line\n")
    assert entry.dnat and str(entry.reply) == "192.168.77.10:443 -> 203.0.113.2:40000"
    assert decode_dump(b"") == ([], False)
    assert decode_dump(b"\x10\x00\x00\x00\x03\x00" + bytes(10)) == ([], True)  # NLMSG_DONE


def test_add_without_root_facts_still_writes_rules_for_every_format() -> None:
    for fmt in ("nft", "iptables", "firewalld", "ufw"):
        result = run_cli("nat", "add", "8443", "192.168.1.5:443", "--to", fmt, "--json")
        assert result.status == 0, result.stderr
        doc = json.loads(result.stdout)
        assert doc["forward"]["id"] == "tcp-8443" and "portkit-nat:tcp-8443" in doc["rules"]


# -- what miniupnpd makes ----------------------------------------------------------------------

MINIUPNPD = "/usr/sbin/miniupnpd"
# miniupnpd adds rules to chains that must exist; the router drops forwarded traffic except
# replies, LAN to WAN, and what miniupnpd's chain accepts.
MINIUPNPD_TABLES = """
table inet upnp {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "br-lan" oifname "wan0" accept
        jump miniupnpd
    }
    chain miniupnpd {
    }
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        jump prerouting_miniupnpd
    }
    chain prerouting_miniupnpd {
    }
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        jump postrouting_miniupnpd
    }
    chain postrouting_miniupnpd {
    }
}
"""


@needs_root
def test_nat_ls_lists_what_miniupnpd_made_beside_nat_add(tmp_path: Path) -> None:
    import time

    if not os.access(MINIUPNPD, os.X_OK) or shutil.which("upnpc") is None:
        pytest.skip("needs miniupnpd (miniupnpd-nftables) and upnpc (miniupnpc): scripts/install.sh --test")
    # miniupnpd maps nothing while its external address is private or reserved: a WAN subnet
    # outside those, which exists only inside the lab.
    with HomeLab(HomeSpec((LabHost("server"), LabHost("pc")), wan_subnet="11.250.43.0/24")) as home:
        home.echo_server("server", 5000)
        home.echo_server("pc", 443)
        home.nft("router", MINIUPNPD_TABLES)
        config = tmp_path / "miniupnpd.conf"
        config.write_text(
            "ext_ifname=wan0\nlistening_ip=br-lan\nhttp_port=0\nenable_upnp=yes\nenable_natpmp=yes\n"
            "secure_mode=yes\nsystem_uptime=no\nuuid=6b1e4f0c-8d2a-4c55-9a37-000000000016\n"
            "upnp_table_name=upnp\nupnp_nat_table_name=upnp\nupnp_forward_chain=miniupnpd\n"
            "upnp_nat_chain=prerouting_miniupnpd\nupnp_nat_postrouting_chain=postrouting_miniupnpd\n"
            "allow 1024-65535 192.168.77.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
        )
        home.popen(
            "router", [MINIUPNPD, "-d", "-f", str(config), "-P", str(tmp_path / "pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not home.run("router", ["ss", "-Hlun", "sport = :5351"]).stdout.strip():
            assert time.monotonic() < deadline, "miniupnpd did not start"
            time.sleep(0.05)
        mapped = home.run(
            "server", ["upnpc", "-e", "portkit test", "-a", home.address("server"), "5000", "5000", "TCP"]
        )
        assert "is redirected to internal" in mapped.stdout, mapped.stdout[-400:]
        home.nft(
            "router",
            run_cli(
                "nat", "add", "8443", f"{home.address('pc')}:443", "--netns", home.netns("router")
            ).stdout,
        )
        assert home.exchange("outside", home.wan_address, 5000, PAYLOAD) == PAYLOAD
        assert _reaches(home, "outside")
        forwards = {f["chain"]: f for f in _ls(home)}
        upnp = forwards["prerouting_miniupnpd"]
        assert upnp["table"] == "inet upnp" and upnp["target"] == f"{home.address('server')}:5000"
        assert upnp["protocol"] == "tcp" and upnp["public_port"] == "5000"
        # miniupnpd's forward accept reads raw header bytes (`@nh,128,32 0xc0a84d0a @nh,72,8 0x6`)
        # in an inet table, where they are an IPv4 address and protocol only for IPv4 packets:
        # the model leaves it undecided, so the verdict is uncertain, not a guess.
        assert upnp["filter"] == "uncertain", _nft_ruleset(home)
        assert upnp["listening"]["state"] == "listening"  # type: ignore[index]
        ours = forwards["prerouting"]
        assert ours["tag"] == "portkit-nat:tcp-8443" and ours["filter"] == "accept"
        # nat add put its accept at the top of miniupnpd's dropping forward chain as well.
        assert (
            'accept comment "portkit-nat:tcp-8443"'
            in home.run("router", ["nft", "list", "chain", "inet", "upnp", "forward"]).stdout
        )


@needs_root
def test_a_raw_ipv4_protocol_read_is_the_ip_protocol_where_the_rule_sees_ipv4_only() -> None:
    from portkit.firewall import Field, parse_nft_script

    ruleset = parse_nft_script(
        "table inet t {\n chain pre {\n  type nat hook prerouting priority dstnat;\n"
        '  iif "lo" @nh,72,8 6 th dport 5000 dnat ip to 10.0.0.1\n }\n'
        " chain through {\n  type filter hook forward priority filter;\n"
        "  @nh,72,8 6 th dport 5000 accept\n }\n}\n"
    )
    rules = {c.name: r for _t, c, _i, r in ruleset.rules()}
    protocol = [m for m in rules["pre"].matches if m.field is Field.L4PROTO]
    assert [(m.ranges, m.family) for m in protocol] == [(((6, 6),), 4)]  # `dnat ip to`: IPv4 only
    assert any(m.field is Field.OPAQUE for m in rules["through"].matches)  # IPv6 packets too: undecided


@needs_root
def test_nat_ls_lists_a_redirect_to_this_host(home: HomeLab) -> None:
    home.echo_server("router", 8080)
    home.nft(
        "router",
        "table ip redir {\n chain pre {\n  type nat hook prerouting priority dstnat;\n"
        '  iifname "wan0" tcp dport 80 redirect to :8080\n }\n}\n',
    )
    assert home.exchange("outside", home.wan_address, 80, b"redirected") == b"redirected"
    [forward] = _ls(home)
    assert forward["kind"] == "redirect" and forward["target"] == "(this host):8080"
    assert forward["forwarding"] is None and forward["hairpin"] == "not-applicable"
    assert forward["filter"] == "accept"
    assert forward["listening"]["state"] == "listening"  # type: ignore[index]


_LOOPBACK_ONLY = """
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 9000)); s.listen(); print("ready", flush=True); time.sleep(300)
"""


def test_a_redirect_from_the_network_to_a_loopback_only_listener_is_not_listening(home: HomeLab) -> None:
    """A redirect of arriving traffic goes to the incoming interface's first address, not to
    127.0.0.1: a service bound to loopback only is not reached (the kernel refuses it)."""
    import sys

    proc = home.popen("router", [sys.executable, "-c", _LOOPBACK_ONLY], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith(b"ready")
        home.nft(
            "router",
            "table ip redir {\n chain pre {\n  type nat hook prerouting priority dstnat;\n"
            '  iifname "wan0" tcp dport 80 redirect to :9000\n }\n}\n',
        )
        assert home.exchange("outside", home.wan_address, 80, b"redirected") == b""
        [forward] = _ls(home)
    finally:
        proc.kill()
        proc.wait(timeout=5)
    listening = forward["listening"]
    assert listening["state"] == "nothing-listens", listening  # type: ignore[index]
    assert home.wan_address in listening["detail"], listening  # type: ignore[index]


@needs_root
def test_ipv6_forwards_load_and_read_back() -> None:
    import ipaddress

    from portkit.firewall import import_iptables_save, parse_nft_script
    from portkit.model import Transport
    from portkit.nat import PortForward, find_forwards, render

    fwd = PortForward(
        8443, ipaddress.ip_address("fd00:77::10"), 443, Transport.TCP, "wan0",
        ipaddress.ip_address("2001:db8::1"), True,
    )  # fmt: skip
    assert fwd.id == "tcp-2001:db8::1-8443"
    forwards = find_forwards(parse_nft_script(render(fwd, "nft")))
    assert {(f.table, f.chain) for f in forwards} == {
        ("ip6 portkit_nat", "prerouting"),
        ("ip6 portkit_nat", "output"),
    }
    assert {f.target for f in forwards} == {"[fd00:77::10]:443"}
    assert {f.public_address for f in forwards} == {"2001:db8::1"}
    iptables = import_iptables_save(render(fwd, "iptables"), version=6)
    assert {f.target for f in find_forwards(iptables)} == {"[fd00:77::10]:443"}


@needs_root
def test_nat_add_notes_what_is_not_a_rule(home: HomeLab) -> None:
    router = home.netns("router")
    home.run("router", ["sysctl", "-qw", "net.ipv4.ip_forward=0"])
    result = run_cli("nat", "add", "8443", "10.9.9.9:443", "--in", "wan9", "--netns", router)
    assert result.status == 0
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert any("there is no interface wan9 here" in n for n in notes)
    assert any("forwarding is off: run `sysctl -w net.ipv4.ip_forward=1`" in n for n in notes)
    assert not any(ln.startswith("note") for ln in result.stdout.splitlines())  # stdout: rules only
    loaded = home.run("router", ["nft", "-c", "-f", "-"], input=result.stdout)
    assert loaded.returncode == 0, loaded.stderr


def test_a_forward_to_ipv4_loopback_says_what_the_kernel_needs_for_it(home: HomeLab) -> None:
    """The kernel drops a packet from the network DNATed to 127.0.0.0/8 as a martian unless
    route_localnet is on for the interface it arrives on: loaded as printed, such a forward
    silently does nothing, so the note names the sysctl (which, run, makes it work)."""
    home.echo_server("router", 5432)
    router = home.netns("router")
    for fmt in ("iptables", "nft"):
        argv = ("add", "7777", "127.0.0.1:5432", "--in", "wan0", "--to", fmt, "--netns", router)
        result = run_cli("nat", *argv)
        assert result.status == 0, result.stderr
        sysctl = "sysctl -w net.ipv4.conf.wan0.route_localnet=1"
        assert sysctl in result.stderr, result.stderr
    home.nft("router", result.stdout)
    assert home.exchange("outside", home.wan_address, 7777, b"ping") == b""
    assert home.run("router", sysctl.split()).returncode == 0
    assert home.exchange("outside", home.wan_address, 7777, b"ping") == b"ping"


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
@pytest.mark.parametrize("args", [("ls",), ("ls", "--json"), ("rm", "tcp-8443")])
def test_without_root_ls_and_rm_say_what_root_is_for(args: tuple[str, ...]) -> None:
    """One line naming the nat command's need, not the firewall reader's hint (`fw show FILE`)."""
    import sys

    argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    proc = subprocess.run(
        [*argv, sys.executable, "-m", "portkit", "nat", *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert f"nat {args[0]}" in proc.stderr and "needs root" in proc.stderr and "fw show" not in proc.stderr
