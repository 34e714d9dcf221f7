"""Service detection against real servers from Debian packages, on unusual loopback ports.

One lab for the module: nginx (plain and TLS), OpenSSH, Redis, PostgreSQL, vsftpd, dnsmasq
(DNS over UDP and TCP), Mosquitto, Memcached, Python's http.server, a silent listener and an
accept-then-close listener. Versions are checked against what each binary says about itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from fixtures_nmapxml import assert_valid_nmap_xml
from fixtures_services import LOOPBACK, ServiceLab, service_lab
from portkit.model import Protocol
from portkit.services import Method, ServiceRecord, detect_services

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("nginx"),
    reason="needs root and the lab's Debian packages (scripts/install.sh --test)",
)


@pytest.fixture(scope="module")
def lab() -> Iterator[ServiceLab]:
    with service_lab() as running:
        yield running


@pytest.fixture(scope="module")
def detected(lab: ServiceLab) -> tuple[dict[tuple[str, int, Protocol], ServiceRecord], float]:
    start = time.monotonic()
    results = detect_services(lab.targets())
    return results, time.monotonic() - start


def _match(
    detected: tuple[dict[tuple[str, int, Protocol], ServiceRecord], float], lab: ServiceLab, key: str
) -> ServiceRecord:
    server = lab[key]
    results, _ = detected
    found = results.get((LOOPBACK, server.port, Protocol(server.protocol)))
    assert found is not None, f"{key} on {server.port}: nothing detected"
    return found


@pytest.mark.parametrize(
    "key",
    [
        "nginx",
        "nginx-tls",
        "ssh-tls",
        "sshd",
        "redis",
        "postgres",
        "vsftpd",
        "dnsmasq",
        "dnsmasq-udp",
        "mosquitto",
        "pyhttp",
    ],
)
def test_each_server_is_named_with_product_and_version(detected, lab, key) -> None:  # type: ignore[no-untyped-def]
    server = lab[key]
    found = _match(detected, lab, key)
    assert found.name == server.expect_name, str(found)
    assert found.method is Method.PROBED
    assert found.confidence == 10
    assert server.expect_product.lower() in found.product.lower(), str(found)
    if server.expect_version:
        # OpenSSH says 9.2p1 where `sshd -V` says 9.2: the server's own word is the longer one.
        assert found.version.startswith(server.expect_version), str(found)
    assert found.tunnel == server.tunnel


def test_memcached_is_named_with_its_version(detected, lab) -> None:  # type: ignore[no-untyped-def]
    if "memcached" not in lab.servers:
        pytest.skip("memcached is not installed (scripts/install.sh --test installs it)")
    server = lab["memcached"]
    assert server.port != 11211 and server.expect_version  # `memcached -V`, the oracle
    found = _match(detected, lab, "memcached")
    # Silent until spoken to: only the `version` command's reply can name it, never the port.
    assert (found.name, found.product, found.version) == ("memcached", "Memcached", server.expect_version)
    assert (found.method, found.confidence, found.probe) == (Method.PROBED, 10, "memcached-version")
    assert found.cpe == (f"cpe:/a:memcached:memcached:{server.expect_version}",)


def test_tls_port_reports_the_certificate_as_openssl_reads_it(detected, lab) -> None:  # type: ignore[no-untyped-def]
    found = _match(detected, lab, "nginx-tls")
    assert found.tls is not None
    cert = lab.root / "nginx" / "tls.crt"
    out = subprocess.run(
        ["openssl", "x509", "-in", str(cert), "-noout", "-enddate", "-subject", "-nameopt", "RFC2253"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    subject = next(line for line in out.splitlines() if line.startswith("subject="))[len("subject=") :]
    assert found.tls.subject == subject.strip()
    assert found.tls.issuer == found.tls.subject  # self-signed
    assert set(found.tls.sans) == {"DNS:portkit.test", "DNS:www.portkit.test", "IP:127.0.0.1"}
    end = next(line for line in out.splitlines() if line.startswith("notAfter="))[len("notAfter=") :]
    expected = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.strptime(end.strip(), "%b %d %H:%M:%S %Y %Z"))
    assert found.tls.not_after == expected
    assert found.tls.version in ("TLSv1.2", "TLSv1.3")
    assert found.tls.cipher
    assert found.tls.alpn in ("h2", "http/1.1")
    # The service inside the tunnel, read over TLS: the real page, not nginx's plain-HTTP error.
    assert found.http is not None and found.http.status == 200
    assert found.http.title == "portkit lab page"
    assert found.display_name == "ssl/http"


def test_http_facts(detected, lab) -> None:  # type: ignore[no-untyped-def]
    nginx = _match(detected, lab, "nginx")
    assert nginx.http is not None
    assert (nginx.http.status, nginx.http.title) == (200, "portkit lab page")
    assert nginx.http.server.startswith("nginx/")
    assert nginx.tls is None
    py = _match(detected, lab, "pyhttp")
    assert py.http is not None and py.http.title == "python lab"
    assert "cpe:/a:python:python:" in py.cpe[0]


def test_silent_listener_says_so_without_stalling(detected, lab) -> None:  # type: ignore[no-untyped-def]
    found = _match(detected, lab, "silent")
    assert found.method is Method.TABLE
    assert found.extrainfo == "silent"
    assert found.notes and found.notes[0].startswith("silent")
    _, elapsed = detected
    # nmap spends minutes on a silent port; every server here, silent one included, in seconds.
    # (The bound leaves room for SYN retransmits, 1 s and 3 s, when a small server such as
    # http.server, backlog 5, overflows its listen queue on a loaded machine.)
    assert elapsed < 20, elapsed


def test_accept_then_close_is_tcpwrapped(detected, lab) -> None:  # type: ignore[no-untyped-def]
    found = _match(detected, lab, "closer")
    assert found.name == "tcpwrapped"
    assert found.method is Method.PROBED


def test_closed_port_is_left_out() -> None:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        assert detect_services([(LOOPBACK, port, "tcp")]) == {}


def test_json_shape(detected, lab) -> None:  # type: ignore[no-untyped-def]
    doc = _match(detected, lab, "nginx-tls").port_fields()
    assert set(doc["service"]) >= {
        "name",
        "product",
        "version",
        "extrainfo",
        "tunnel",
        "cpe",
        "method",
        "confidence",
    }
    assert doc["service"]["tunnel"] == "ssl"
    assert set(doc["tls"]) >= {"version", "cipher", "alpn", "subject", "sans", "issuer", "not_after"}
    plain = _match(detected, lab, "sshd").port_fields()
    assert plain["tls"] is None
    assert plain["service"]["cpe"][0].startswith("cpe:/a:openbsd:openssh:")


def test_intensity_zero_still_names_banner_services(lab) -> None:  # type: ignore[no-untyped-def]
    targets = [(LOOPBACK, lab[k].port, "tcp") for k in ("sshd", "vsftpd", "nginx")]
    results = detect_services(targets, intensity=0)
    by_port = {port: m for (_, port, _), m in results.items()}
    assert by_port[lab["sshd"].port].name == "ssh"
    assert by_port[lab["vsftpd"].port].name == "ftp"
    # GET is rarity 1, above intensity 0, and nginx sits on no HTTP port: not identified.
    assert by_port[lab["nginx"].port].method is Method.TABLE


@pytest.mark.skipif(not os.path.exists("/usr/share/nmap/nmap-service-probes"), reason="nmap not installed")
def test_nmap_probe_file_identifies_the_same_servers(lab) -> None:  # type: ignore[no-untyped-def]
    keys = ["nginx", "nginx-tls", "sshd", "vsftpd", "dnsmasq", "dnsmasq-udp", "pyhttp", "redis"]
    targets = [(LOOPBACK, lab[k].port, lab[k].protocol) for k in keys]
    results = detect_services(targets, probes="nmap")
    for key in keys:
        server = lab[key]
        found = results[(LOOPBACK, server.port, Protocol(server.protocol))]
        assert found.name == server.expect_name, (key, str(found))
        assert found.tunnel == server.tunnel
        assert found.probe  # the nmap probe that matched, e.g. GetRequest


# --- `portkit scan --sv`: the same servers through the scanner's outputs ------------------


def _tcp_ports(lab: ServiceLab) -> str:
    return ",".join(str(s.port) for s in lab.servers.values() if s.protocol == "tcp")


def test_cli_scan_sv_table(cli, lab) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", LOOPBACK, "-p", _tcp_ports(lab), "--sv")
    assert result.status == 0, result.stderr
    lines = {line.split("/")[0]: line for line in result.stdout.splitlines() if "/tcp" in line}
    assert "SERVICE" in result.stdout and "VERSION" in result.stdout
    for key in (
        "nginx",
        "nginx-tls",
        "sshd",
        "redis",
        "postgres",
        "vsftpd",
        "dnsmasq",
        "mosquitto",
        "pyhttp",
    ):
        server = lab[key]
        words = lines[str(server.port)].split()
        assert words[1] == "open"
        expected = f"ssl/{server.expect_name}" if server.tunnel else server.expect_name
        assert words[2] == expected, lines[str(server.port)]
        assert server.expect_product.split()[0].lower() in lines[str(server.port)].lower()
        if server.expect_version:
            assert server.expect_version in lines[str(server.port)]
    assert lines[str(lab["silent"].port)].split()[2:] == ["unknown", "(silent)"]
    # Under the TLS port, nmap-style detail lines: the page inside the tunnel, the session.
    after = result.stdout.split(lines[str(lab["nginx-tls"].port)], 1)[1].splitlines()
    assert after[1] == '|  http: 200 "portkit lab page"'
    assert (
        after[2].startswith("|_ tls: TLSv1.")
        and "subject O=portkit lab,CN=portkit.test; self-signed" in after[2]
    )
    assert lines[str(lab["closer"].port)].split()[2] == "tcpwrapped"


def test_cli_scan_sv_json(cli, lab) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", LOOPBACK, "-p", _tcp_ports(lab), "--sv", "--json", "--sv-intensity", "light")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["scan"]["sv"] is True and doc["scan"]["sv_intensity"] == 2
    ports = {p["port"]: p for p in doc["hosts"][0]["ports"]}
    tls_port = ports[lab["nginx-tls"].port]
    assert tls_port["service"]["tunnel"] == "ssl"
    assert tls_port["tls"]["subject"] == "O=portkit lab,CN=portkit.test"
    assert "DNS:portkit.test" in tls_port["tls"]["sans"]
    ssh = ports[lab["sshd"].port]["service"]
    assert (ssh["name"], ssh["product"], ssh["method"], ssh["confidence"]) == ("ssh", "OpenSSH", "probed", 10)
    assert ports[lab["sshd"].port]["tls"] is None
    assert tls_port["service"]["http"] == {
        "status": 200, "server": ports[lab["nginx-tls"].port]["service"]["http"]["server"],
        "title": "portkit lab page", "location": None,
    }  # fmt: skip
    assert tls_port["service"]["http"]["server"].startswith("nginx/")


@pytest.mark.skipif(not shutil.which("xmllint"), reason="xmllint (libxml2-utils) not installed")
def test_cli_scan_sv_xml_follows_nmaps_dtd(cli, lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    xml = tmp_path / "scan.xml"
    # -sT: a connect scan, what a user without root gets; detection needs no privilege either.
    result = cli("scan", LOOPBACK, "-sT", "-p", _tcp_ports(lab), "--sv", "-oX", str(xml))
    assert result.status == 0, result.stderr
    assert_valid_nmap_xml(xml, tmp_path)
    text = xml.read_text()
    assert f'<port protocol="tcp" portid="{lab["sshd"].port}">' in text
    assert '<service name="ssh" product="OpenSSH"' in text
    assert 'tunnel="ssl"' in text and "<cpe>cpe:/a:igor_sysoev:nginx:" in text


def test_cli_udp_scan_sv(cli, lab) -> None:  # type: ignore[no-untyped-def]
    port = lab["dnsmasq-udp"].port
    result = cli("scan", LOOPBACK, "-sU", "-p", str(port), "--sv", "--json")
    assert result.status == 0, result.stderr
    found = result.json()["hosts"][0]["ports"][0]
    assert found["state"] == "open"
    assert (found["service"]["name"], found["service"]["product"]) == ("domain", "dnsmasq")


def test_cli_bad_service_options_are_usage_errors(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", LOOPBACK, "-p", "1", "--sv", "--probes", "nosuch")
    assert result.status == 2
    assert result.stderr.strip().count("\n") == 0 and "nosuch" in result.stderr
    result = cli("scan", LOOPBACK, "-p", "1", "--sv", "--sv-intensity", "12")
    assert result.status == 2 and "Traceback" not in result.stderr


def test_postgres_version_range_from_its_protocol_refusal(detected, lab) -> None:  # type: ignore[no-untyped-def]
    from fixtures_services import PG_BIN, tool_version

    major = int(tool_version([str(PG_BIN / "postgres"), "--version"], r"\(PostgreSQL\) (\d+)"))
    found = _match(detected, lab, "postgres")
    ranges = {"7.4 - 13": range(7, 14), "14 - 17": range(14, 18), "18 or later": range(18, 100)}
    assert found.version in ranges, str(found)
    assert major in ranges[found.version]


def test_one_connection_at_a_time_still_gets_there(lab) -> None:  # type: ignore[no-untyped-def]
    # nmap's -T0/-T1 budgets: one probe connection per port, one connection overall.
    keys = ("nginx-tls", "redis", "closer")
    targets = [(LOOPBACK, lab[k].port, "tcp") for k in keys]
    results = detect_services(targets, concurrency=1, per_port=1)
    names = {port: m.display_name for (_, port, _), m in results.items()}
    assert names == {
        lab["nginx-tls"].port: "ssl/http",
        lab["redis"].port: "redis",
        lab["closer"].port: "tcpwrapped",
    }


def test_a_probe_file_of_ones_own(lab, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The database is data: a site can describe its own service in a few lines.
    custom = tmp_path / "site.toml"
    custom.write_text(
        '[[probe]]\nname = "null"\nprotocol = "tcp"\npayload = ""\nrarity = 1\n'
        "[[probe.match]]\nservice = \"ftp\"\npattern = '^220 \\(vsFTPd (?P<v>[\\d.]+)\\)'\n"
        'product = "site ftp"\nversion = "{v}"\n'
    )
    port = lab["vsftpd"].port
    found = detect_services([(LOOPBACK, port, "tcp")], probes=str(custom))[(LOOPBACK, port, Protocol.TCP)]
    assert (found.name, found.product, found.version) == ("ftp", "site ftp", lab["vsftpd"].expect_version)


def test_printer_ports_are_listened_to_never_sent_to() -> None:
    # A raw printer port prints what it receives: like nmap's Exclude, only the banner is read.
    from portkit.services import DetectOptions, builtin_database, detect_services_async

    received: list[bytes] = []
    stop = threading.Event()
    with socket.socket() as server:
        server.bind((LOOPBACK, 0))
        server.listen(16)
        server.settimeout(0.2)
        port = server.getsockname()[1]

        def collect() -> None:
            conns: list[socket.socket] = []
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    conn, _ = server.accept()
                    conn.settimeout(0.05)
                    conns.append(conn)
                for c in conns:
                    with contextlib.suppress(OSError):
                        received.append(c.recv(100))
            for c in conns:
                c.close()

        thread = threading.Thread(target=collect)
        thread.start()
        try:
            opts = DetectOptions(listen_only=frozenset({port}))
            found = asyncio.run(detect_services_async([(LOOPBACK, port, "tcp")], builtin_database(), opts))
        finally:
            stop.set()
            thread.join(5)
    assert found[(LOOPBACK, port, Protocol.TCP)].method is Method.TABLE
    assert not any(received), received


def test_ipv6_loopback(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket(socket.AF_INET6) as probe_socket:
        probe_socket.bind(("::1", 0))
        port = probe_socket.getsockname()[1]
    (tmp_path / "index.html").write_text("<title>six</title>")
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "::1", "--directory", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("::1", port), timeout=0.5):
                break
            time.sleep(0.05)
        found = detect_services([("::1", port, "tcp")])[("::1", port, Protocol.TCP)]
        assert (found.name, found.product) == ("http", "SimpleHTTPServer")
        assert found.http is not None and found.http.title == "six"
        result = cli("scan", "::1", "-p", str(port), "--sv", "--json")
        assert result.status == 0, result.stderr
        assert result.json()["hosts"][0]["ports"][0]["service"]["product"] == "SimpleHTTPServer"
    finally:
        server.terminate()
        server.wait(10)
