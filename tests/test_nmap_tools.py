"""nmap's own tools read portkit's output as they read nmap's: the oracle is nmap on the same lab.

One lab for the module, in a private network namespace: real servers (nginx plain and TLS,
sshd plain and behind TLS, vsftpd, Python's http.server, an accept-then-close port), a silent
listener on 8081 (tcp and udp: a port nmap-services names differently per protocol), TLS in
front of it on 8443 (a TLS tunnel with nothing known inside), and a
firewall that drops 100-140 (so two states are collapsed). nmap and portkit scan it with the same
options; then

- the grepable (-oG) host lines must be identical, header and footer in nmap's words;
- ndiff must see no difference but the scanner line (times, scanner and command must differ);
- python-libnmap must read the same ports, states, services and versions from both;
- nmap.xsl (xsltproc) must render portkit's XML, ports and services included.

Service detection runs at light intensity (`--version-light`, `--sv-intensity light`) with nmap's
own probes (`--probes nmap`): nmap waits out every probe on the silent port, and light keeps
that near half a minute.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import needs_root
from fixtures_scan import needs_nmap
from fixtures_services import LOOPBACK, _make_cert, service_lab
from portkit.testing import LabNamespace

pytestmark = [needs_root, needs_nmap, pytest.mark.slow]

NMAP_XSL = Path("/usr/share/nmap/nmap.xsl")
SERVERS = ("nginx", "sshd", "ssh-tls", "vsftpd", "pyhttp", "dnsmasq", "listeners")
NAMED_SILENT = 8081  # nmap-services: blackice-icecap/tcp, sunproxyadmin/udp
TLS_SILENT = 8443  # TLS in front of the silent port; nmap-services: https-alt/tcp
DROPPED = "100-140"
UDP_PORTS = f"1-30,{NAMED_SILENT}"


@dataclass
class Run:
    """One scanner's output files for one scan."""

    xml: Path
    grepable: Path
    text: str


@dataclass
class Scans:
    nmap: dict[str, Run]
    portkit: dict[str, Run]
    tcp_ports: str


def _silent_sockets(lab) -> list[socket.socket]:  # type: ignore[no-untyped-def]
    tcp = lab.new_socket()
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((LOOPBACK, NAMED_SILENT))
    tcp.listen(4096)  # never accepted: every probe connection waits in the queue
    udp = lab.new_socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((LOOPBACK, NAMED_SILENT))
    return [tcp, udp]


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scans]:
    out = tmp_path_factory.mktemp("nmaptools")
    with LabNamespace("pknt") as ns, service_lab(only=SERVERS, netns=ns.name) as lab:
        netns = ns.name
        held = _silent_sockets(lab)
        key, cert = _make_cert(lab.root)
        wrapper = subprocess.Popen(
            ["ip", "netns", "exec", netns, "socat",
             f"OPENSSL-LISTEN:{TLS_SILENT},bind={LOOPBACK},reuseaddr,fork,cert={cert},key={key},verify=0",
             f"TCP:{LOOPBACK}:{NAMED_SILENT}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            _wait_for(lab, TLS_SILENT)
            subprocess.run(
                ["ip", "netns", "exec", netns, "nft", "-f", "-"],
                input="table inet portkit_test {\n  chain input {\n"
                "    type filter hook input priority 0; policy accept;\n"
                f"    tcp dport {DROPPED} drop\n  }}\n}}\n",
                text=True, check=True, capture_output=True, timeout=30,
            )  # fmt: skip
            listed = [s.port for s in lab.servers.values() if s.protocol == "tcp" and s.key != "silent"]
            tcp_ports = ",".join(map(str, [*listed, NAMED_SILENT, TLS_SILENT])) + ",1-140"
            options = {
                "plain": ["-p", tcp_ports],
                "sv": ["-p", tcp_ports, "-sV"],
                "udp": ["-p", UDP_PORTS, "-sU"],
                "udp-sv": ["-p", f"{lab['dnsmasq-udp'].port},{NAMED_SILENT}", "-sU", "-sV"],
                # --open: closed ports go to "Not shown" however few (nmap does so in every format).
                "open": ["-p", f"1-3,{NAMED_SILENT},{DROPPED}", "--open"],
            }
            nmap, portkit = {}, {}
            builtin = [*options["sv"], "--sv-intensity", "light"]
            portkit["sv-builtin"] = _run(
                netns, out / "portkit-sv-builtin", [sys.executable, "-m", "portkit", "scan", "-Pn", *builtin]
            )
            for key, argv in options.items():
                nmap[key] = _run(
                    netns, out / f"nmap-{key}",
                    ["nmap", "-n", "-Pn", *argv, *(["--version-light"] if "sv" in key else [])],
                )  # fmt: skip
                extra = ["--sv-intensity", "light", "--probes", "nmap"] if "sv" in key else []
                ours = [sys.executable, "-m", "portkit", "scan", "-Pn", *argv, *extra]
                portkit[key] = _run(netns, out / f"portkit-{key}", ours)
            yield Scans(nmap, portkit, tcp_ports)
        finally:
            wrapper.terminate()
            wrapper.wait(10)
            for sock in held:
                sock.close()


def _wait_for(lab, port: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(200):
        with contextlib.suppress(OSError), lab.new_socket() as sock:
            sock.settimeout(1)
            sock.connect((LOOPBACK, port))
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} in the lab")


def _run(netns: str, stem: Path, argv: list[str]) -> Run:
    xml, grepable = stem.with_suffix(".xml"), stem.with_suffix(".gnmap")
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, *argv, "-oX", str(xml), "-oG", str(grepable), LOOPBACK],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return Run(xml, grepable, proc.stdout)


def _host_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


@pytest.mark.parametrize("key", ["plain", "sv", "udp", "udp-sv", "open"])
def test_grepable_output_is_nmaps_line_for_line(scans: Scans, key: str) -> None:
    ours, theirs = scans.portkit[key].grepable.read_text(), scans.nmap[key].grepable.read_text()
    assert _host_lines(scans.portkit[key].grepable) == _host_lines(scans.nmap[key].grepable)
    first, last = ours.splitlines()[0], ours.splitlines()[-1]
    assert re.fullmatch(r"# Nmap 7\.93 scan initiated .+ as: portkit scan -Pn .+", first), first
    assert re.fullmatch(
        r"# Nmap done at .+ -- 1 IP address \(1 host up\) scanned in \d+\.\d\d seconds", last
    ), last
    assert theirs.splitlines()[-1].split(" -- ")[1].split(" scanned")[0] == last.split(" -- ")[1].split(
        " scanned"
    )[0]


def test_grepable_regressions_seen_in_the_field(scans: Scans) -> None:
    sv = scans.portkit["sv"].grepable.read_text()
    # A TLS-tunnelled service keeps 7 fields: nmap writes ssl|http, not ssl/http.
    assert re.search(r"\d+/open/tcp//ssl\|http//nginx [\d.]+/", sv), sv
    assert "/ssl/" not in sv
    # Two collapsed states (closed, filtered): nmap's format has room for no Ignored State.
    assert "Ignored State" not in sv
    udp = scans.portkit["udp"].grepable.read_text()
    assert "\tIgnored State: closed (30)" in udp
    opened = scans.portkit["open"].grepable.read_text()
    assert f"Ports: {NAMED_SILENT}/open/tcp//blackice-icecap///\n" in opened  # two states collapsed


def test_port_names_follow_nmap_services_with_and_without_sv(scans: Scans) -> None:
    plain = scans.portkit["plain"].grepable.read_text()
    sv = scans.portkit["sv"].grepable.read_text()
    udp = scans.portkit["udp"].grepable.read_text()
    assert f"{NAMED_SILENT}/open/tcp//blackice-icecap///" in plain  # not /etc/services' tproxy
    # With -sV and nothing answering: the table's name, marked as a guess as nmap marks it.
    assert f"{NAMED_SILENT}/open/tcp//blackice-icecap?///" in sv
    assert f"{NAMED_SILENT}/open|filtered/udp//sunproxyadmin///" in udp
    assert re.search(rf"^{NAMED_SILENT}/tcp +open +blackice-icecap\? ", scans.portkit["sv"].text, re.M)
    # TLS, and nothing known inside: the table's name in a TLS tunnel, still a guess.
    assert f"{TLS_SILENT}/open/tcp//ssl|https-alt?///" in sv
    assert f"{TLS_SILENT}/open/tcp//https-alt///" in plain


needs_ndiff = pytest.mark.skipif(shutil.which("ndiff") is None, reason="needs nmap's ndiff")


@needs_ndiff
@pytest.mark.parametrize("key", ["plain", "sv", "udp", "udp-sv", "open"])
def test_ndiff_sees_no_difference_but_the_scanner_line(scans: Scans, key: str) -> None:
    proc = subprocess.run(
        ["ndiff", str(scans.nmap[key].xml), str(scans.portkit[key].xml)], capture_output=True, text=True
    )
    assert proc.returncode in (0, 1), proc.stderr
    changed = [line for line in proc.stdout.splitlines() if line.strip()]
    # What must differ: when, what ran and with which command line (ndiff's banner pair).
    assert len(changed) == 2, proc.stdout
    assert changed[0].startswith("-Nmap 7.93 scan initiated")
    assert re.match(r"\+portkit \S+ scan initiated .+ as: portkit scan ", changed[1]), changed[1]
    xml = subprocess.run(
        ["ndiff", "--xml", str(scans.nmap[key].xml), str(scans.portkit[key].xml)],
        capture_output=True, text=True,
    )  # fmt: skip
    root = ET.fromstring(xml.stdout)
    assert root.findall(".//hostdiff") == [], xml.stdout


def test_python_libnmap_reads_the_same_ports_services_and_versions(scans: Scans) -> None:
    parser = pytest.importorskip("libnmap.parser", reason="python-libnmap (a dev dependency) is missing")

    def ports(path: Path) -> dict[tuple[int, str], tuple[str, str, str, str]]:
        report = parser.NmapParser.parse_fromfile(str(path))
        (host,) = report.hosts
        return {
            (s.port, s.protocol): (s.state, s.service, s.banner, s.tunnel) for s in host.services
        }

    for key in ("plain", "sv", "udp", "udp-sv", "open"):
        ours, theirs = ports(scans.portkit[key].xml), ports(scans.nmap[key].xml)
        assert ours == theirs, key
    sv = ports(scans.portkit["sv"].xml)
    assert any(tunnel == "ssl" and name == "http" for _, name, _, tunnel in sv.values())
    assert sv[(NAMED_SILENT, "tcp")][:2] == ("open", "blackice-icecap")


needs_xsltproc = pytest.mark.skipif(
    shutil.which("xsltproc") is None or not NMAP_XSL.exists(),
    reason="needs xsltproc (scripts/install.sh --test) and nmap's nmap.xsl",
)


@needs_xsltproc
@pytest.mark.parametrize("key", ["plain", "sv"])
def test_nmap_xsl_renders_portkit_xml(scans: Scans, key: str, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    proc = subprocess.run(
        ["xsltproc", "-o", str(html), str(NMAP_XSL), str(scans.portkit[key].xml)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0 and not proc.stderr, proc.stderr
    page = html.read_text()
    with contextlib.suppress(ValueError):
        page = page[page.index("<body") :]
    for port in scans.tcp_ports.split(",")[:-1]:
        assert f">{port}<" in page, port
    assert "blackice-icecap" in page
    if key == "sv":
        assert "OpenSSH" in page and "nginx" in page and "vsftpd" in page


def _services(path: Path) -> dict[int, tuple[dict[str, str], list[str]]]:
    """Per port: the <service> attributes (but nmap's fingerprint of unknown replies) and CPEs."""
    found = {}
    for port in ET.parse(path).getroot().iter("port"):
        svc = port.find("service")
        if svc is not None:
            attrs = {k: v for k, v in svc.attrib.items() if k != "servicefp"}
            found[int(port.get("portid", "0"))] = (attrs, [c.text or "" for c in svc.findall("cpe")])
    return found


def test_service_fields_are_nmaps_with_nmaps_probes(scans: Scans) -> None:
    """With nmap's own probe file, every <service> says what nmap's does: name, product, version,
    extrainfo, ostype, tunnel, method, confidence and CPEs."""
    ours, theirs = _services(scans.portkit["sv"].xml), _services(scans.nmap["sv"].xml)
    assert ours == theirs


def test_builtin_probes_split_fields_as_nmap_does(scans: Scans) -> None:
    """portkit's own rules name these servers as nmap does (OpenSSH: version `9.2p1 Debian ...`,
    extrainfo `protocol 2.0`, ostype Linux; Python's `SimpleHTTPServer 0.6 (Python 3.11.7)`);
    only the CPEs may differ (portkit names vsftpd's and Python's as NVD does)."""
    ours, theirs = _services(scans.portkit["sv-builtin"].xml), _services(scans.nmap["sv"].xml)
    sshd = [port for port, (attrs, _) in theirs.items() if attrs.get("product") == "OpenSSH"]
    assert len(sshd) == 2  # plain and behind TLS
    for port, (attrs, cpes) in theirs.items():
        if attrs.get("product") in ("OpenSSH", "vsftpd", "nginx", "SimpleHTTPServer"):
            assert ours[port][0] == attrs, port
        if attrs.get("product") == "OpenSSH":
            assert ours[port][1] == cpes
            assert re.fullmatch(r"[\w.]+ Debian \S+", attrs["version"])
            assert attrs["extrainfo"] == "protocol 2.0"


@pytest.mark.parametrize("key", ["sv", "sv-builtin"])
def test_service_info_line_is_nmaps(scans: Scans, key: str) -> None:
    def line(text: str) -> str:
        return next((x for x in text.splitlines() if x.startswith("Service Info:")), "")

    def parts(text: str) -> dict[str, set[str]]:
        """The line's fields as sets: nmap lists OSs in the order its probes happened to
        answer, which changes from run to run."""
        body = text.removeprefix("Service Info: ")
        return {k: set(v.split(", ")) for k, _, v in (f.partition(": ") for f in body.split("; "))}

    theirs = line(scans.nmap["sv"].text)
    assert parts(theirs) == {"OSs": {"Linux", "Unix"}, "CPE": {"cpe:/o:linux:linux_kernel"}}, theirs
    assert parts(line(scans.portkit[key].text)) == parts(theirs)


def test_http_facts_come_from_the_get_root_answer_with_nmaps_probes(scans: Scans) -> None:
    """nmap's probes name nginx from an OPTIONS or bare-line error page; the facts portkit shows
    are still what GET / answered (docs/json.md)."""
    lines = scans.portkit["sv"].text.splitlines()
    facts = [x for x in lines if x.startswith(("|_ http:", "|  http:"))]
    assert facts and all('200 "portkit lab page"' in x or '200 "python lab"' in x for x in facts), facts
