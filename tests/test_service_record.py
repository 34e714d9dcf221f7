"""One service record for the scanner and service detection: `portkit.model.ServiceRecord`."""

from __future__ import annotations

import ast
import contextlib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import portkit
import portkit.services
from portkit.model import Method, Protocol, ServiceRecord, TlsInfo
from portkit.model.services import CONFIDENCE_TABLE, HttpInfo
from portkit.scan import HostResult, PortResult, PortState, Reason, ScanOptions, ScanType, run_scan
from portkit.services import detect_for_scan

SRC = Path(portkit.__file__).parent


def test_the_record_module_imports_nothing_else_of_portkit() -> None:
    tree = ast.parse((SRC / "model" / "services.py").read_text())
    imported = [
        name
        for node in ast.walk(tree)
        for name in (
            [a.name for a in node.names] if isinstance(node, ast.Import)
            else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        )
    ]  # fmt: skip
    assert imported and not [n for n in imported if n == "portkit" or n.startswith("portkit.")]


def test_one_service_record_and_one_tls_record_in_the_package() -> None:
    defined: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                defined.setdefault(node.name, []).append(str(path.relative_to(SRC)))
    assert defined["TlsInfo"] == ["model/services.py"]
    assert defined["ServiceRecord"] == ["model/services.py"]
    for gone in ("ServiceInfo", "ServiceMatch"):
        assert gone not in defined
    assert portkit.services.TlsInfo is portkit.TlsInfo is TlsInfo
    assert portkit.services.ServiceRecord is portkit.ServiceRecord is ServiceRecord


def test_a_record_without_a_method_claims_only_the_port_table() -> None:
    guess = ServiceRecord("ssh")
    assert (guess.method, guess.confidence, str(guess)) == (Method.TABLE, CONFIDENCE_TABLE, "ssh?")
    found = ServiceRecord("http", "nginx", "1.22.1", tunnel="ssl", method=Method.PROBED, confidence=10)
    assert str(found) == "ssl/http nginx 1.22.1"


def test_json_keeps_the_documented_keys_and_notes_stay_out_of_the_scan() -> None:
    tls = TlsInfo("TLSv1.3", "TLS_AES_128_GCM_SHA256", "h2", "CN=a", ("DNS:a",), "CN=a", "2030-01-01")
    record = ServiceRecord(
        "http", "nginx", "1.22.1", method=Method.PROBED, confidence=10, tls=tls,
        http=HttpInfo(200, "nginx", "lab"), probe="get-root", ostype="Linux", notes=("seen",),
    )  # fmt: skip
    doc = record.to_json()
    assert list(doc) == [
        "name", "product", "version", "extrainfo", "tunnel", "cpe", "method", "confidence",
        "http", "ostype", "notes",
    ]  # fmt: skip
    assert doc["http"] == {"status": 200, "server": "nginx", "title": "lab", "location": None}
    assert tls.to_json()["self_signed"] is True and TlsInfo().to_json()["self_signed"] is None
    port = PortResult(443, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK, 64, record)
    assert port.tls is tls
    assert port.to_json()["service"] == {k: v for k, v in doc.items() if k != "notes"}
    assert port.to_json()["tls"] == tls.to_json()
    assert record.port_fields() == {"service": doc, "tls": tls.to_json()}


@contextlib.contextmanager
def _banner_server(banner: bytes) -> Iterator[int]:
    """A loopback server that sends `banner` to each client and then waits for it to leave."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        held = []
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with contextlib.suppress(OSError):
                conn.sendall(banner)
            held.append(conn)
        for conn in held:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_a_scan_keeps_everything_detection_found() -> None:
    """The record detection returns is the scanned port's service, host facts and all (the
    scanner used to keep a copy without the probe, the notes or the TLS layer)."""
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    with _banner_server(banner) as port:
        result = run_scan(ScanOptions(["127.0.0.1"], str(port), ScanType.CONNECT, skip_discovery=True))
        (host,) = result.hosts
        assert host.port(port) is not None
        matches = detect_for_scan(result, intensity=2)
    found = host.port(port)
    assert found is not None and found.service is not None
    record = matches[("127.0.0.1", port, Protocol.TCP)]
    assert found.service is record
    assert (record.name, record.product, record.ostype, record.probe) == ("ssh", "OpenSSH", "Linux", "null")
    assert result.to_json()["hosts"][0]["ports"][0]["service"]["ostype"] == "Linux"


def test_attach_needs_a_listed_port() -> None:
    host = HostResult("192.0.2.1", ports=[PortResult(22, Protocol.TCP, PortState.OPEN, Reason.SYN_ACK)])
    assert host.attach(22, Protocol.TCP, ServiceRecord("ssh")).service == ServiceRecord("ssh")
    try:
        host.attach(23, Protocol.TCP, ServiceRecord("telnet"))
    except KeyError as err:
        assert "23/tcp" in str(err)
    else:
        raise AssertionError("attach to an unlisted port must fail")
