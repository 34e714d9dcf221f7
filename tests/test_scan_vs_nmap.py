"""Truth: on the lab, portkit gives nmap's state and reason for every port, for every scan type.

One lab for the module: a host behind every kind of firewall rule, and a host behind a lossy
link. Both tools run inside the lab's client namespace, `nmap -n -Pn --reason` of the same
type against `portkit scan -Pn --all-ports --json`; agreement must be 100%.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import socket
import sys
import time
import xml.etree.ElementTree as ET

import pytest

from conftest import needs_root
from fixtures_scan import module_lab_factory, needs_nmap  # noqa: F401
from portkit.model import Protocol
from portkit.testing import Lab, LabAction, LabHost, LabLink, LabListener, LabReply, LabRule, LabSpec

pytestmark = [needs_root, needs_nmap]

TCP = Protocol.TCP
UDP = Protocol.UDP
FIREWALLED = LabHost(
    "fw",
    listeners=(
        LabListener(22),
        LabListener(80),
        LabListener(443),
        LabListener(8080),
        LabListener(53, UDP),
        LabListener(123, UDP),
        LabListener(161, UDP),
        LabListener(5000, UDP, reply=LabReply.SILENT),
        LabListener(5001, UDP),
    ),
    rules=(
        LabRule(443, LabAction.DROP),  # open behind drop
        LabRule(81, LabAction.DROP),
        LabRule(82, LabAction.RESET),
        LabRule(8080, LabAction.RESET),  # open behind tcp reset
        LabRule(83, LabAction.PORT_UNREACHABLE),
        LabRule(84, LabAction.ADMIN_PROHIBITED),
        LabRule(85, LabAction.ACCEPT),
        LabRule(5001, LabAction.DROP, UDP),
        LabRule(5002, LabAction.PORT_UNREACHABLE, UDP),
        LabRule(5003, LabAction.ADMIN_PROHIBITED, UDP),
        LabRule(161, LabAction.ADMIN_PROHIBITED, UDP),  # open behind admin-prohibited
    ),
)
LOSSY = LabHost(
    "lossy",
    listeners=(LabListener(22), LabListener(80), LabListener(3306)),
    rules=(LabRule(81, LabAction.DROP),),
    link=LabLink(rtt_ms=4, loss=0.25, loss_budget=1),
)
TCP_PORTS = "21-23,53,79-86,110,443,3306,8080"
UDP_PORTS = "53,67,68,123,161,5000-5003"


@pytest.fixture(scope="module")
def lab(module_lab_factory) -> Lab:  # noqa: F811
    return module_lab_factory(LabSpec(prefix="pk4n", hosts=(FIREWALLED, LOSSY)))


# Raw TCP scans of one host move their packets in C (portkit.scan._rawio) when it is built;
# PORTKIT_SCAN_PURE=1 keeps them in Python. Both must give nmap's answers.
IO_PATHS = ["c", "python"] if importlib.util.find_spec("portkit.scan._rawio") else ["python"]
# Connect scans of one host make their first tries' connect() calls in C (_connectio) likewise.
CONNECT_IO_PATHS = ["c", "python"] if importlib.util.find_spec("portkit.scan._connectio") else ["python"]
NMAP_SEEN: dict[tuple[str, ...], dict[int, tuple[str, str]]] = {}


@pytest.fixture(params=IO_PATHS)
def io_path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=CONNECT_IO_PATHS)
def connect_io(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def nmap_ports(lab: Lab, flag: str, ports: str, address: str, *more: str) -> dict[int, tuple[str, str]]:
    """nmap's answers; asked once per scan (both of portkit's I/O paths are compared with them)."""
    key = (flag, ports, address, *more)
    if key not in NMAP_SEEN:
        NMAP_SEEN[key] = _nmap_ports(lab, flag, ports, address, *more)
    return NMAP_SEEN[key]


def fresh_link(lab: Lab, address: str) -> None:
    """Before a scan of the lossy host: its whole loss budget, and the same losses, for each scanner."""
    if address in (lab.address(LOSSY.name), lab.address6(LOSSY.name)):
        lab.reset_loss(LOSSY.name)


def _nmap_ports(lab: Lab, flag: str, ports: str, address: str, *more: str) -> dict[int, tuple[str, str]]:
    six = ["-6"] if ":" in address else []
    fresh_link(lab, address)
    proc = lab.run(
        "client", ["nmap", *six, "-n", "-Pn", "--reason", flag, *more, "-p", ports, "-oX", "-", address]
    )
    assert proc.returncode == 0, proc.stderr
    root = ET.fromstring(proc.stdout)
    found = {}
    for port in root.iter("port"):
        state = port.find("state")
        assert state is not None
        found[int(port.get("portid", "0"))] = (state.get("state", ""), state.get("reason", ""))
    for extra in root.iter("extraports"):
        raise AssertionError(f"nmap collapsed ports; widen the test's port list: {extra.attrib}")
    return found


SENT: dict[str, int] = {}


def portkit_ports(
    lab: Lab, flag: str, ports: str, address: str, *more: str, io: str = ""
) -> dict[int, tuple[str, str]]:
    argv = [
        sys.executable,
        "-m",
        "portkit",
        "scan",
        "-Pn",
        flag,
        *more,
        "-p",
        ports,
        "--all-ports",
        "--json",
        address,
    ]
    env = {**os.environ, "PORTKIT_SCAN_DEBUG": "1", "PORTKIT_SCAN_PURE": "1" if io == "python" else "0"}
    fresh_link(lab, address)
    proc = lab.run("client", argv, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    if io:
        assert f"io={io} " in proc.stderr, proc.stderr  # the path asked for is the one that ran
    doc = json.loads(proc.stdout)
    (host,) = doc["hosts"]
    SENT[address] = doc["scan"]["probes_sent"]
    assert host["extraports"] == []
    return {p["port"]: (p["state"], p["reason"]) for p in host["ports"]}


def agree(
    lab: Lab, flag: str, ports: str, host: str, *more: str, v6: bool = False, io: str = ""
) -> dict[int, tuple[str, str]]:
    address = lab.address6(host) if v6 else lab.address(host)
    ours = portkit_ports(lab, flag, ports, address, *more, io=io)
    theirs = nmap_ports(lab, flag, ports, address, *more)
    differences = {
        p: (ours.get(p), theirs.get(p)) for p in set(ours) | set(theirs) if ours.get(p) != theirs.get(p)
    }
    assert differences == {}, f"portkit vs nmap {flag}: {differences}"
    return ours


def test_syn_scan_agrees_with_nmap(lab: Lab, io_path: str) -> None:
    ports = agree(lab, "-sS", TCP_PORTS, "fw", io=io_path)
    assert ports[22] == ("open", "syn-ack")
    assert ports[443] == ("filtered", "no-response")
    assert ports[82] == ("closed", "reset")
    assert ports[83] == ("filtered", "port-unreach")
    assert ports[84] == ("filtered", "admin-prohibited")


def test_connect_scan_agrees_with_nmap(lab: Lab, connect_io: str) -> None:
    ports = agree(lab, "-sT", TCP_PORTS, "fw", io=connect_io)
    assert ports[80] == ("open", "syn-ack")
    assert ports[83] == ("closed", "conn-refused")  # the kernel reports ICMP port-unreachable as ECONNREFUSED
    assert ports[84] == ("filtered", "host-unreach")


def test_ack_scan_agrees_with_nmap(lab: Lab, io_path: str) -> None:
    ports = agree(lab, "-sA", TCP_PORTS, "fw", io=io_path)
    assert ports[22] == ("unfiltered", "reset")
    assert ports[81] == ("filtered", "no-response")


def test_udp_scan_agrees_with_nmap(lab: Lab) -> None:
    ports = agree(lab, "-sU", UDP_PORTS, "fw")
    assert ports[53] == ("open", "udp-response")
    assert ports[5000] == ("open|filtered", "no-response")
    assert ports[5002] == ("closed", "port-unreach")
    assert ports[5003] == ("filtered", "admin-prohibited")


def test_udp_scan_of_many_closed_ports_agrees_with_nmap(lab: Lab) -> None:
    """With Linux's default ICMP rate limit (the lab turns it off; here it is back on in the target's
    namespace), the target sends a peer 6 port-unreachables at once, then one a second: nmap waits
    them out, and so must portkit, or every closed port after the sixth reads open|filtered.
    Nothing listens there, so every port is closed; nmap's own waits are not always long enough
    (it may give up on a port), so each port nmap saw closed must be closed here too."""
    assert lab.run("fw", ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=1000"]).returncode == 0
    try:
        time.sleep(6)  # a full bucket for each scanner
        theirs = nmap_ports(lab, "-sU", "6000-6019", lab.address("fw"))
        time.sleep(6)
        ours = portkit_ports(lab, "-sU", "6000-6019", lab.address("fw"))
    finally:
        lab.run("fw", ["sysctl", "-qw", "net.ipv4.icmp_ratelimit=0"])
    assert ours == dict.fromkeys(range(6000, 6020), ("closed", "port-unreach"))
    assert {p for p, s in theirs.items() if s[0] == "closed"} <= set(ours)


def _link_local(lab: Lab, host: str) -> tuple[str, str]:
    """`host`'s link-local address and the interface it is on, once duplicate address detection
    is over (a tentative address cannot be used yet)."""
    deadline = time.monotonic() + 10
    while (
        lab.run(host, ["ip", "-o", "-6", "addr", "show", "tentative"]).stdout and time.monotonic() < deadline
    ):
        time.sleep(0.2)
    proc = lab.run(host, ["ip", "-o", "-6", "addr", "show", "scope", "link"])
    for line in proc.stdout.splitlines():
        words = line.split()
        if words[1] != "lo" and words[2] == "inet6":
            return words[3].split("/")[0], words[1].split("@")[0]
    raise AssertionError(f"{host} has no link-local address: {proc.stdout}{proc.stderr}")


def test_scans_of_a_link_local_target_agree_with_nmap(lab: Lab) -> None:
    """A zone on the target (`fe80::1%eth0`) is kept: a connect() to a link-local address without
    it fails with EINVAL, which portkit reported as filtered for every port."""
    address, _ = _link_local(lab, "fw")
    _, iface = _link_local(lab, "client")
    for flag in ("-sT", "-sS"):
        ours = portkit_ports(lab, flag, TCP_PORTS, f"{address}%{iface}")
        assert ours == nmap_ports(lab, flag, TCP_PORTS, f"{address}%{iface}"), flag
        assert ours[22] == ("open", "syn-ack")


def test_syn_scan_agrees_through_a_lossy_link(lab: Lab, io_path: str) -> None:
    ports = agree(lab, "-sS", TCP_PORTS, "lossy", io=io_path)
    assert ports[3306] == ("open", "syn-ack")
    assert ports[81] == ("filtered", "no-response")
    # The link did lose probes or replies (the same ones each run: the relay's random draws
    # restart with the budget): portkit had to retransmit for more than the dropped port.
    assert SENT[lab.address("lossy")] > len(ports) + 2


def test_connect_scan_agrees_through_a_lossy_link(lab: Lab, connect_io: str) -> None:
    agree(lab, "-sT", TCP_PORTS, "lossy", io=connect_io)


@pytest.mark.parametrize(
    ("flag", "io"), [*((f, io) for f in ("-sS", "-sA") for io in IO_PATHS), ("-sU", "")]
)  # UDP scans have one path (Python)
def test_ipv6_raw_scans_agree_with_nmap(lab: Lab, flag: str, io: str) -> None:
    ports = agree(lab, flag, UDP_PORTS if flag == "-sU" else TCP_PORTS, "fw", v6=True, io=io)
    if flag == "-sS":
        assert ports[83] == ("filtered", "port-unreach")
        assert ports[84] == ("filtered", "admin-prohibited")


def test_ipv6_connect_scan_agrees_with_nmap_and_the_kernel(lab: Lab, connect_io: str) -> None:
    """nmap 7.93's `-6 -sT` misses the ICMPv6 errors nftables' rejects send in this lab (it reports
    no-response, though connect() itself fails at once), so the rejected ports are checked against
    the kernel's own connect() result instead, and every other port against nmap."""
    address = lab.address6("fw")
    ours = portkit_ports(lab, "-sT", TCP_PORTS, address, io=connect_io)
    theirs = nmap_ports(lab, "-sT", TCP_PORTS, address)
    rejected = {83, 84}
    assert {p: s for p, s in ours.items() if p not in rejected} == {
        p: s for p, s in theirs.items() if p not in rejected
    }
    with lab.inside("client"):
        errors = {}
        for port in rejected:
            with socket.socket(socket.AF_INET6) as sock:
                sock.settimeout(2)
                errors[port] = sock.connect_ex((address, port))
    assert errors == {83: errno.ECONNREFUSED, 84: errno.EACCES}
    assert ours[83] == ("closed", "conn-refused")
    assert ours[84] == ("filtered", "admin-prohibited")


def test_host_discovery_finds_the_hosts_nmap_finds(lab: Lab) -> None:
    network = f"{lab.address('client').rsplit('.', 1)[0]}.0/28"
    proc = lab.run("client", [sys.executable, "-m", "portkit", "scan", network, "-sn", "--json"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    ours = {h["address"] for h in doc["hosts"]}
    nmap = lab.run("client", ["nmap", "-n", "-sn", "-oX", "-", network])
    theirs = {
        a.get("addr") for h in ET.fromstring(nmap.stdout).iter("host") for a in h.iter("address")
        if a.get("addrtype") == "ipv4"
    }  # fmt: skip
    assert ours == theirs == {lab.address("client"), lab.address("fw"), lab.address("lossy")}
    assert doc["scan"]["hosts_total"] == 16 and doc["scan"]["type"] == "ping"
