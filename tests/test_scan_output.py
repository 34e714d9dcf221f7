"""Output formats: nmap XML (valid per nmap's DTD, readable by ndiff), grepable, CSV, JSON."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

import portkit
from fixtures_nmapxml import assert_valid_nmap_xml, needs_xmllint
from portkit.model import Method, Protocol, ServiceRecord, TlsInfo
from portkit.scan import HostResult, PortResult, PortState, Reason, ScanResult
from portkit.scan._results import ExtraPorts
from portkit.scan.output import render_csv, render_grepable, render_json, render_text, render_xml

NMAP_XSL = Path("/usr/share/nmap/nmap.xsl")
needs_ndiff = pytest.mark.skipif(shutil.which("ndiff") is None, reason="needs nmap's ndiff")


def sample() -> ScanResult:
    https = PortResult(
        443, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK, 64,
        ServiceRecord(
            "http", "nginx", "1.22.1", "Debian", "ssl", ("cpe:/a:igor_sysoev:nginx:1.22.1",),
            Method.PROBED, 10,
            tls=TlsInfo(
                "TLSv1.3", "TLS_AES_256_GCM_SHA384", subject="CN=lab", issuer="CN=lab", sans=("lab",)
            ),
        ),
    )  # fmt: skip
    host = HostResult(
        "192.0.2.10",
        ("web.example",),
        ports=[
            PortResult(22, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK, 64, ServiceRecord("ssh")),
            PortResult(
                81, Protocol.TCP, PortState.FILTERED, Reason.NO_RESPONSE, 0, ServiceRecord("hosts2-ns")
            ),
            https,
        ],
        extraports=[ExtraPorts(PortState.CLOSED, 997, ((Reason.RESET, 997),), ("1-21,23-442,444-1000",))],
        rtt=0.0012,
        rttvar=0.0003,
        timeout=0.0024,
    )
    return ScanResult(
        "syn", Protocol.TCP, "top:1000", 1000, {}, "portkit scan 192.0.2.10 -sS", 1_700_000_000.0, 1.5,
        [host], 1, services="1-1000",
    )  # fmt: skip


def xmllint_ok(text: str, tmp_path: Path) -> None:
    path = tmp_path / "scan.xml"
    path.write_text(text)
    assert_valid_nmap_xml(path, tmp_path)


@needs_xmllint
def test_xml_is_valid_against_nmaps_dtd(tmp_path: Path) -> None:
    text = render_xml(sample())
    xmllint_ok(text, tmp_path)
    root = ET.fromstring(text)
    # What wrote it, and the same three lines nmap's XML opens with.
    assert (root.get("scanner"), root.get("version")) == ("portkit", portkit.__version__)
    lines = text.splitlines()
    href = NMAP_XSL.as_uri() if NMAP_XSL.exists() else "nmap.xsl"
    assert lines[2] == f'<?xml-stylesheet href="{href}" type="text/xsl"?>'
    version = re.escape(portkit.__version__)
    assert re.fullmatch(
        rf"<!-- portkit {version} scan initiated .+ as: portkit scan 192\.0\.2\.10 -sS -->", lines[3]
    ), lines[3]
    reasons = root.find(".//extraports/extrareasons")
    assert reasons is not None and reasons.get("ports") == "1-21,23-442,444-1000"
    times = root.find(".//times")
    assert times is not None and times.attrib == {"srtt": "1200", "rttvar": "300", "to": "100000"}
    service = root.find(".//port[@portid='443']/service")
    assert service is not None
    assert service.attrib == {
        "name": "http", "product": "nginx", "version": "1.22.1", "extrainfo": "Debian",
        "tunnel": "ssl", "method": "probed", "conf": "10",
    }  # fmt: skip
    assert [c.text for c in service.findall("cpe")] == ["cpe:/a:igor_sysoev:nginx:1.22.1"]
    table = root.find(".//port[@portid='22']/service")
    assert table is not None and table.get("method") == "table" and table.get("conf") == "3"
    extra = root.find(".//extraports")
    assert extra is not None and extra.get("count") == "997" and extra.get("state") == "closed"


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@needs_xmllint
@needs_ndiff
def test_ndiff_reads_and_diffs_a_real_scan(cli, tmp_path: Path, listener: int) -> None:  # type: ignore[no-untyped-def]
    ours = tmp_path / "portkit.xml"
    result = cli("scan", "127.0.0.1", "-sT", "-p", f"1-50,{listener}", "-oX", str(ours))
    assert result.status == 0, result.stderr
    xmllint_ok(ours.read_text(), tmp_path)
    theirs = tmp_path / "nmap.xml"
    proc = subprocess.run(
        ["nmap", "-n", "-sT", "-p", f"1-50,{listener}", "-oX", str(theirs), "127.0.0.1"], capture_output=True
    )
    assert proc.returncode == 0
    same = subprocess.run(["ndiff", str(ours), str(ours)], capture_output=True, text=True)
    assert same.returncode == 0, same.stderr  # no differences
    diff = subprocess.run(["ndiff", "--xml", str(theirs), str(ours)], capture_output=True, text=True)
    assert diff.returncode in (0, 1), diff.stderr
    assert "Traceback" not in diff.stderr
    # ndiff saw the same host and the same port states (only the service column may differ).
    root = ET.fromstring(diff.stdout)
    changed_states = []
    for entry in root.iter("portdiff"):
        before, after = entry.find("a/port/state"), entry.find("b/port/state")
        if before is not None and after is not None and before.get("state") != after.get("state"):
            changed_states.append(entry)
    assert changed_states == []


def test_grepable_lines() -> None:
    text = render_grepable(sample())
    lines = text.splitlines()
    # nmap's header and footer words, so scripts that look for them find them.
    assert re.fullmatch(
        r"# Nmap 7\.93 scan initiated \w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4} "
        r"as: portkit scan 192\.0\.2\.10 -sS",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        r"# Nmap done at .+ -- 1 IP address \(1 host up\) scanned in 1\.50 seconds", lines[-1]
    ), lines[-1]
    assert "Host: 192.0.2.10 (web.example)\tStatus: Up" in lines
    ports_line = next(line for line in lines if "\tPorts: " in line)
    assert "22/open/tcp//ssh///" in ports_line
    # A '/' inside a field is written '|', as nmap does: the line still splits into 7 fields per port.
    assert "443/open/tcp//ssl|http//nginx 1.22.1 (Debian)/" in ports_line
    assert ports_line.endswith("\tIgnored State: closed (997)")
    entries = ports_line.split("\tPorts: ")[1].split("\t")[0].split(", ")
    assert all(len(e.split("/")) == 8 for e in entries), entries


def test_grepable_writes_ignored_state_only_for_one_collapsed_state() -> None:
    """nmap's grepable format has room for one ignored state: with two it writes none."""
    result = sample()
    host = result.hosts[0]
    host.extraports.append(ExtraPorts(PortState.FILTERED, 40, ((Reason.NO_RESPONSE, 40),)))
    ports_line = next(line for line in render_grepable(result).splitlines() if "\tPorts: " in line)
    assert "Ignored State" not in ports_line
    assert ports_line.endswith("(Debian)/")
    text = render_text(result)
    assert "Not shown: 997 closed tcp ports (reset), 40 filtered tcp ports (no-response)\n" in text


def test_grepable_all_ports_collapsed_and_timed_out_hosts() -> None:
    result = sample()
    host = result.hosts[0]
    host.ports.clear()
    timed_out = HostResult("192.0.2.11", status="timeout")
    result.hosts.append(timed_out)
    result.hosts_total = 2
    lines = render_grepable(result).splitlines()
    assert "Host: 192.0.2.10 (web.example)\tPorts: \tIgnored State: closed (997)" in lines
    # nmap 7.93: a host that timed out answered, so it is up (its Up line, then the Timeout one),
    # and it counts among the hosts up everywhere (portkit counted it down: `<hosts up="0" down="1">`).
    at = lines.index("Host: 192.0.2.11 ()\tStatus: Timeout")
    assert lines[at - 1] == "Host: 192.0.2.11 ()\tStatus: Up"
    assert not any(line.startswith("Host: 192.0.2.11 ()\tPorts") for line in lines)
    assert "-- 2 IP addresses (2 hosts up) scanned in" in lines[-1]
    assert result.hosts_up == 2 and result.to_json()["scan"]["hosts_up"] == 2
    assert '<hosts up="2" down="0" total="2"/>' in render_xml(result)


def test_service_names_get_nmaps_question_mark_only_when_guessed_after_detection() -> None:
    """nmap -sV: an open port named by the port table alone is `name?`; not without -sV,
    not for other states, never for "unknown"."""
    guessed = PortResult(2222, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK, 64,
                         ServiceRecord("EtherNetIP-1", extrainfo="silent"))  # fmt: skip
    filtered = PortResult(
        81, Protocol.TCP, PortState.FILTERED, Reason.NO_RESPONSE, 0, ServiceRecord("hosts2-ns")
    )
    nothing = PortResult(38953, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK, 64,
                         ServiceRecord("unknown", confidence=0, extrainfo="silent"))  # fmt: skip
    host = HostResult("192.0.2.10", ports=[filtered, guessed, nothing])
    result = ScanResult("syn", Protocol.TCP, "-", 3, {}, "portkit scan", 1_700_000_000.0, 1.0, [host], 1)
    assert re.search(r"^2222/tcp  open     EtherNetIP-1 ", render_text(result), re.M)
    grep = render_grepable(result)
    assert "2222/open/tcp//EtherNetIP-1///" in grep and "38953/open/tcp/////" in grep
    result.service_scan = True
    text = render_text(result)
    assert "2222/tcp  open     EtherNetIP-1? (silent)" in text
    assert "81/tcp    filtered hosts2-ns\n" in text
    assert "38953/tcp open     unknown       (silent)" in text
    grep = render_grepable(result)
    # nmap's formats carry no word of portkit's own about a silent port.
    assert "2222/open/tcp//EtherNetIP-1?///" in grep
    assert "38953/open/tcp/////" in grep
    assert "81/filtered/tcp//hosts2-ns///" in grep


def test_csv_rows() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(sample()))))
    assert rows[0] == {
        "host": "192.0.2.10", "hostname": "web.example", "port": "22", "protocol": "tcp", "state": "open",
        "reason": "syn-ack", "ttl": "64", "service": "ssh", "count": "1",
    }  # fmt: skip
    assert rows[-1]["port"] == "*" and rows[-1]["count"] == "997" and rows[-1]["state"] == "closed"


def test_csv_never_carries_a_formula_from_the_scanned_side() -> None:
    # A PTR answer and a banner are chosen by whoever runs the scanned host.
    from dataclasses import replace

    result = sample()
    host = replace(result.hosts[0], hostnames=("=HYPERLINK(1,2)",))
    host.ports[0] = replace(host.ports[0], service=ServiceRecord("+cmd|' /C calc'!A0"))
    rows = list(csv.DictReader(io.StringIO(render_csv(replace(result, hosts=[host])))))
    assert rows[0]["hostname"] == "'=HYPERLINK(1,2)"
    assert rows[0]["service"] == "'+cmd|' /C calc'!A0"
    assert all(not v.startswith(("=", "+", "@")) for row in rows for v in row.values() if v)


def test_json_schema() -> None:
    doc = json.loads(render_json(sample()))
    assert set(doc) == {"scan", "hosts"}
    assert {"type", "protocol", "ports", "start", "elapsed", "states", "interrupted"} <= set(doc["scan"])
    host = doc["hosts"][0]
    assert {"address", "hostnames", "status", "ports", "extraports"} <= set(host)
    port = host["ports"][2]
    assert port["service"]["method"] == "probed" and port["service"]["cpe"] == [
        "cpe:/a:igor_sysoev:nginx:1.22.1"
    ]
    assert port["tls"]["version"] == "TLSv1.3"  # issue 5's tls schema (docs/json.md, json:services)
    assert host["ports"][0]["ttl"] == 64


def test_text_shows_versions_when_detected_and_reasons_on_request() -> None:
    text = render_text(sample(), reason=True)
    assert "Scan report for web.example (192.0.2.10)" in text
    assert "Not shown: 997 closed tcp ports (reset)\n" in text
    assert "443/tcp open     ssl/http  syn-ack ttl 64 nginx 1.22.1 (Debian)" in text
    assert "PORT    STATE    SERVICE   REASON         VERSION" in text
    assert "81/tcp  filtered hosts2-ns no-response\n" in text


def test_attach_replaces_a_ports_service_and_tls() -> None:
    result = sample()
    host = result.hosts[0]
    updated = host.attach(22, Protocol.TCP, ServiceRecord("ssh", "OpenSSH", "9.2p1", method=Method.PROBED))
    assert updated.service is not None and updated.service.product == "OpenSSH"
    assert host.port(22) == updated
    with pytest.raises(KeyError):
        host.attach(23, Protocol.TCP, ServiceRecord("telnet"))


NMAP_SERVICES = Path("/usr/share/nmap/nmap-services")


@pytest.mark.skipif(not NMAP_SERVICES.exists(), reason="needs nmap's nmap-services")
def test_ports_are_named_from_nmap_services_per_protocol() -> None:
    """The oracle is the installed file itself: its first entry per port and protocol."""
    from portkit.registry.nmap import port_names, table_namer

    expected: dict[tuple[int, str], str] = {}
    for line in NMAP_SERVICES.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) >= 2 and not line.startswith("#") and "/" in fields[1]:
            number, _, proto = fields[1].partition("/")
            expected.setdefault((int(number), proto), fields[0])
    tcp, udp = port_names(Protocol.TCP), port_names(Protocol.UDP)
    assert tcp == {p: n for (p, proto), n in expected.items() if proto == "tcp"}
    assert udp == {p: n for (p, proto), n in expected.items() if proto == "udp"}
    assert (tcp[8081], udp[8081], tcp[22], udp[53]) == ("blackice-icecap", "sunproxyadmin", "ssh", "domain")
    name = table_namer()
    assert name(8080, Protocol.TCP) == "http-proxy" and name(38953, Protocol.TCP) == ""


@pytest.mark.skipif(not NMAP_SERVICES.exists(), reason="needs nmap's nmap-services")
def test_one_port_lookups_agree_with_the_whole_table() -> None:
    """The scan's listing names its ports one by one (`first_port_name`): same as the parsed table."""
    import random

    from portkit.registry.nmap import _PortTableNamer, first_port_name, port_names

    text = NMAP_SERVICES.read_text(errors="replace")
    rng = random.Random(15)
    for protocol in (Protocol.TCP, Protocol.UDP):
        table = port_names(protocol, (NMAP_SERVICES,))
        ports = {0, 1, 7, 22, 53, 80, 8081, 65535, 70000, *rng.sample(range(65536), 1500)}
        ports |= set(rng.sample(sorted(table), 500))
        for port in sorted(ports):
            assert first_port_name(text, port, protocol) == table.get(port, ""), (port, protocol)
    # Lines that only mention a port (a comment, another entry's third field) do not name it.
    tricky = "# 22/tcp is ssh\nfoo\t122/tcp\t0.1\t# 22/tcp\nbar\t0022/tcp\t0.1\nssh\t22/tcp\t0.5\n"
    assert first_port_name(tricky, 22, Protocol.TCP) == "bar"  # int("0022"): the table's rule too
    assert first_port_name(tricky, 122, Protocol.TCP) == "foo"
    assert first_port_name(tricky, 22, Protocol.UDP) == ""
    namer = _PortTableNamer(text, (NMAP_SERVICES,))
    many = rng.sample(range(1, 65536), 3 * _PortTableNamer.LOOKUPS_BEFORE_TABLE)
    tcp = port_names(Protocol.TCP, (NMAP_SERVICES,))
    assert [namer(p, Protocol.TCP) for p in many] == [tcp.get(p, "") for p in many]


def test_without_nmap_services_ports_are_named_from_etc_services() -> None:
    from portkit.registry import nmap

    names = nmap.port_names(Protocol.TCP, ())  # no nmap-services: as if nmap were not installed
    if Path("/etc/services").exists():
        assert names[8081] == "tproxy" and names[22] == "ssh"  # what nmap falls back to


def test_the_scan_initiated_comment_stays_a_comment() -> None:
    """"--" may not appear inside an XML comment: written "-&#45;" as nmap writes it."""
    result = sample()
    result.command = "portkit scan 192.0.2.10 --sv --all-ports -oX -"
    text = render_xml(result)
    comment = text.splitlines()[3]
    assert "-&#45;sv -&#45;all-ports" in comment and "--" not in comment[4:-3]
    ET.fromstring(text)  # well-formed


def test_neighbour_dump_is_read_like_ip_neigh() -> None:
    import struct

    from portkit.scan._neighbours import mac_vendor, parse_neighbours

    def neigh(family: int, dst: bytes, lladdr: bytes, state: int) -> bytes:
        attrs = b""
        for kind, value in ((1, dst), (2, lladdr)):
            attr = struct.pack("=HH", 4 + len(value), kind) + value
            attrs += attr + b"\0" * (-len(attr) % 4)
        body = struct.pack("=BBHiHBB", family, 0, 0, 2, state, 0, 1) + attrs
        return struct.pack("=IHHII", 16 + len(body), 28, 2, 1, 0) + body

    vmware = bytes.fromhex("005056000001")
    data = (
        neigh(socket.AF_INET, bytes([198, 51, 100, 10]), bytes.fromhex("ae74c64eb5be"), 0x02)
        + neigh(socket.AF_INET, bytes([198, 51, 100, 11]), b"", 0x01)  # incomplete: no answer
        + neigh(socket.AF_INET6, bytes.fromhex("20010db8" + "00" * 11 + "0a"), vmware, 0x80)
    )
    found, done = parse_neighbours(data + struct.pack("=IHHII", 20, 3, 2, 1, 0) + b"\0" * 4)
    assert done
    assert found == {"198.51.100.10": "AE:74:C6:4E:B5:BE", "2001:db8::a": "00:50:56:00:00:01"}
    if Path("/usr/share/nmap/nmap-mac-prefixes").exists():
        assert mac_vendor("00:50:56:00:00:01") == "VMware"
        assert mac_vendor("AE:74:C6:4E:B5:BE") == ""  # locally administered: nobody's prefix


def test_mac_address_line_also_for_hosts_without_listed_ports_and_ping_scans() -> None:
    """nmap prints `MAC Address:` for every on-link host it reports, ports listed or not."""
    result = sample()
    host = result.hosts[0]
    host.ports.clear()
    host.mac, host.mac_vendor = "00:50:56:00:00:01", "VMware"
    text = render_text(result)
    assert "Not shown: 997 closed tcp ports (reset)\nMAC Address: 00:50:56:00:00:01 (VMware)\n" in text
    result.scan_type = "ping"
    assert "MAC Address: 00:50:56:00:00:01 (VMware)" in render_text(result)
    host.mac_vendor = ""
    assert "MAC Address: 00:50:56:00:00:01 (Unknown)" in render_text(result)


def test_xml_rates_a_soft_match_as_nmap_does() -> None:
    """JSON keeps portkit's 7 for a name from a soft match; nmap's XML says 10 for any probed
    name (8 for tcpwrapped, 3 for the table)."""
    result = sample()
    host = result.hosts[0]
    soft = ServiceRecord("postgresql", "PostgreSQL DB", "9.6.0 or later", method=Method.PROBED, confidence=7)
    host.attach(22, Protocol.TCP, soft)
    root = ET.fromstring(render_xml(result))
    service = root.find(".//port[@portid='22']/service")
    assert service is not None and service.get("conf") == "10"
    assert json.loads(render_json(result))["hosts"][0]["ports"][0]["service"]["confidence"] == 7


def test_open_view_collapses_what_cannot_be_open_and_drops_hosts_without_it() -> None:
    """nmap's --open: closed and filtered ports are "Not shown" however few, hosts with no port
    that may be open are not reported, and the counts still include them."""
    from portkit.scan._results import open_view

    result = sample()
    closed = HostResult(
        "192.0.2.11", ports=[PortResult(22, Protocol.TCP, PortState.CLOSED, Reason.RESET, 64)]
    )
    result.hosts.append(closed)
    result.hosts_total = 2
    view = open_view(result)
    assert [h.address for h in view.hosts] == ["192.0.2.10"] and view.hosts_up == 2
    host = view.hosts[0]
    assert [p.port for p in host.ports] == [22, 443]
    assert [(e.state, e.count, e.ports) for e in host.extraports] == [
        (PortState.CLOSED, 997, ("1-21,23-442,444-1000",)),
        (PortState.FILTERED, 1, ("81",)),
    ]
    assert view.state_counts() == result.state_counts()
    grep = render_grepable(view)
    assert "192.0.2.11" not in grep and "(2 hosts up)" in grep
    assert "Not shown: 997 closed tcp ports (reset), 1 filtered tcp port (no-response)" in render_text(view)
