"""On a LAN, nmap's XML says more of a host: its MAC address and a <hosthint>; portkit's must too.

A lab with one host on the client's link (veth pairs through a bridge, so every host has a
MAC address), listening on 22 and 8081 and dropping 100-140. nmap and portkit run the same SYN
scan from the client namespace; nmap is the oracle for the MAC address, the hints, the
collapsed ports' ranges and the "MAC Address:" line, and ndiff must see no difference but the
scanner line.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import needs_root
from fixtures_nmapxml import assert_valid_nmap_xml, needs_xmllint
from fixtures_scan import module_lab_factory, needs_nmap  # noqa: F401
from portkit.testing import Lab, LabHost, LabListener, LabSpec

pytestmark = [needs_root, needs_nmap]

PORTS = "1-140,8081"
WEB = LabHost("web", listeners=(LabListener(22), LabListener(8081)), nft="tcp dport 100-140 drop")


@pytest.fixture(scope="module")
def lab(module_lab_factory) -> Lab:  # noqa: F811
    # A prefix of its own per run (pid and random), so parallel runs never share namespaces.
    prefix = f"m{os.getpid() % 1000:03d}{secrets.token_hex(1)}"
    return module_lab_factory(LabSpec(prefix=prefix, hosts=(WEB,)))


@pytest.fixture(scope="module")
def outputs(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    out = tmp_path_factory.mktemp("lan")
    address = lab.address("web")
    found = {}
    for who, argv in (
        ("nmap", ["nmap", "-n", "-sS"]),
        ("portkit", [sys.executable, "-m", "portkit", "scan", "-sS"]),
    ):
        xml = out / f"{who}.xml"
        proc = lab.run("client", [*argv, "-p", PORTS, "-oX", str(xml), address], timeout=120)
        assert proc.returncode == 0, proc.stderr
        found[who] = (xml, proc.stdout)
    return found


def _mac_of(lab: Lab) -> str:
    out = subprocess.run(
        ["ip", "-n", lab.netns("web"), "-j", "link", "show", "dev", "eth0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    import json

    return str(json.loads(out.stdout)[0]["address"]).upper()


Outputs = dict[str, tuple[Path, str]]


def test_the_mac_address_is_reported_as_nmap_reports_it(lab: Lab, outputs: Outputs) -> None:
    mac = _mac_of(lab)

    def macs(root: ET.Element, where: str) -> list[dict[str, str]]:
        return [a.attrib for a in root.findall(f"{where}/address") if a.get("addrtype") == "mac"]

    ours, theirs = (ET.parse(outputs[k][0]).getroot() for k in ("portkit", "nmap"))
    assert macs(ours, "host") == macs(theirs, "host") == [{"addr": mac, "addrtype": "mac"}]
    # nmap hints at each host its discovery found on the link; portkit does the same.
    assert macs(ours, "hosthint") == macs(theirs, "hosthint")
    assert [a.get("addr") for a in ours.findall("hosthint/address")] == [lab.address("web"), mac]
    text = outputs["portkit"][1]
    assert f"MAC Address: {mac} (Unknown)" in text
    assert f"MAC Address: {mac} (Unknown)" in outputs["nmap"][1]


def test_collapsed_ports_name_their_ranges_as_nmap_does(outputs: dict[str, tuple[Path, str]]) -> None:
    def reasons(path: Path) -> list[dict[str, str]]:
        return [e.attrib for e in ET.parse(path).getroot().iter("extrareasons")]

    ours, theirs = reasons(outputs["portkit"][0]), reasons(outputs["nmap"][0])
    assert ours == theirs
    assert {r["ports"] for r in ours} == {"1-21,23-99", "100-140"}
    not_shown = "Not shown: 98 closed tcp ports (reset), 41 filtered tcp ports (no-response)"
    assert not_shown in outputs["portkit"][1] and not_shown in outputs["nmap"][1]


def test_times_carry_the_measured_variation(outputs: dict[str, tuple[Path, str]]) -> None:
    times = ET.parse(outputs["portkit"][0]).getroot().find("host/times")
    assert times is not None
    srtt, rttvar, timeout = (int(times.get(k, "-1")) for k in ("srtt", "rttvar", "to"))
    assert srtt > 0 and rttvar >= 0 and rttvar != srtt, times.attrib
    assert timeout >= max(100_000, srtt), times.attrib


@needs_xmllint
def test_the_xml_follows_nmaps_dtd(outputs: dict[str, tuple[Path, str]], tmp_path: Path) -> None:
    assert_valid_nmap_xml(outputs["portkit"][0], tmp_path)


@pytest.mark.skipif(shutil.which("ndiff") is None, reason="needs nmap's ndiff")
def test_ndiff_sees_only_the_scanner_line(outputs: dict[str, tuple[Path, str]]) -> None:
    proc = subprocess.run(
        ["ndiff", str(outputs["nmap"][0]), str(outputs["portkit"][0])], capture_output=True, text=True
    )
    assert proc.returncode in (0, 1), proc.stderr
    changed = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(changed) == 2 and changed[1].startswith("+portkit "), proc.stdout


@pytest.mark.skipif(shutil.which("ndiff") is None, reason="needs nmap's ndiff")
def test_host_discovery_xml_and_grepable_are_nmaps(lab: Lab, tmp_path: Path) -> None:
    """-sn: the same hosts, each with its MAC address; ndiff sees only the scanner line, and the
    grepable host lines are nmap's."""
    network = f"{lab.address('client').rsplit('.', 1)[0]}.8/29"  # the web host, not the client
    files = {}
    for who, argv in (("nmap", ["nmap", "-n"]), ("portkit", [sys.executable, "-m", "portkit", "scan"])):
        xml, grepable = tmp_path / f"{who}.xml", tmp_path / f"{who}.gnmap"
        proc = lab.run("client", [*argv, "-sn", "-oX", str(xml), "-oG", str(grepable), network], timeout=120)
        assert proc.returncode == 0, proc.stderr
        files[who] = (xml, grepable)
    ndiff = ["ndiff", str(files["nmap"][0]), str(files["portkit"][0])]
    proc = subprocess.run(ndiff, capture_output=True, text=True)
    changed = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(changed) == 2 and changed[1].startswith("+portkit "), proc.stdout
    hosts = [
        [line for line in path.read_text().splitlines() if line.startswith("Host:")]
        for path in (files["nmap"][1], files["portkit"][1])
    ]
    assert hosts[0] == hosts[1] == [f"Host: {lab.address('web')} ()\tStatus: Up"]
    root = ET.parse(files["portkit"][0]).getroot()
    assert [a.get("addr") for a in root.findall("host/address")] == [lab.address("web"), _mac_of(lab)]
