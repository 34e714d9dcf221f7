"""`portkit scan` as a user runs it: loopback scans checked against real sockets, bad input, Ctrl-C."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import needs_root

ROOT_CWD = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def listener() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, never listened, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connect_scan_of_loopback_finds_the_listener(cli, listener: int) -> None:  # type: ignore[no-untyped-def]
    closed = closed_port()
    result = cli("scan", "127.0.0.1", "-sT", "-p", f"{listener},{closed}", "--reason", "--json")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["scan"]["type"] == "connect"
    (host,) = doc["hosts"]
    assert host["address"] == "127.0.0.1" and host["status"] == "up"
    states = {p["port"]: (p["state"], p["reason"]) for p in host["ports"]}
    assert states == {listener: ("open", "syn-ack"), closed: ("closed", "conn-refused")}
    port = next(p for p in host["ports"] if p["port"] == listener)
    assert set(port) >= {"port", "protocol", "state", "reason", "service", "ttl"}


def test_text_output_reads_like_nmap(cli, listener: int) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", "127.0.0.1", "-sT", "-p", f"1-200,{listener}", "--reason")
    assert result.status == 0, result.stderr
    out = result.stdout
    assert "Scan report for 127.0.0.1" in out
    assert f"{listener}/tcp open" in out and "syn-ack" in out
    assert "Not shown: 200 closed tcp ports (conn-refused)" in out
    assert out.rstrip().splitlines()[-1].startswith("Done: 1 address (1 host up); ports: 200 closed, 1 open")


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop root")
@needs_root
def test_without_raw_sockets_the_default_is_a_connect_scan_with_a_note(listener: int) -> None:
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT_CWD, "src")}
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
         sys.executable, "-m", "portkit", "scan", "127.0.0.1", "-p", str(listener), "--json"],
        capture_output=True, text=True, timeout=60, env=env, cwd="/",
    )  # fmt: skip
    if proc.returncode != 0 and "Permission denied" in proc.stderr:
        pytest.skip("the worktree is not readable by an unprivileged user")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["scan"]["type"] == "connect"
    assert any("connect scan instead of SYN" in n for n in doc["scan"]["notes"])
    assert doc["hosts"][0]["ports"][0]["state"] == "open"


@needs_root
def test_syn_scan_as_root_is_the_default(cli, listener: int) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", "127.0.0.1", "-p", f"{listener},{closed_port()}", "--json")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["scan"]["type"] == "syn"
    states = sorted((p["state"], p["reason"], p["ttl"]) for p in doc["hosts"][0]["ports"])
    assert states == [("closed", "reset", 64), ("open", "syn-ack", 64)]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["300.1.2.3"], "invalid target '300.1.2.3'"),
        (["127.0.0.1", "-p", "70000"], "port 70000 is out of range"),
        (["127.0.0.1", "-p", "80-20"], "reversed range"),
        (["127.0.0.1", "--host-timeout", "soon"], "invalid --host-timeout 'soon'"),
        (["127.0.0.1", "--max-rate", "0"], "invalid --max-rate"),
        (["-iL", "/nonexistent/targets"], "invalid target file"),
        ([], "no targets"),
        (["127.0.0.1", "-T", "9"], "-T"),
        # nmap scans both; portkit scanned only the last one given, without a word.
        (["127.0.0.1", "-sT", "-sU", "-p", "22"], "-sT and -sU"),
        (["127.0.0.1", "-sS", "--ack", "-p", "22"], "-sS and -sA"),
    ],
)
def test_bad_input_exits_2_with_one_line(cli, args: list[str], fragment: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("scan", *args)
    assert result.status == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    assert fragment in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_prints_partial_results_and_exits_130(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # A slow scan (rate-capped) of every loopback port, interrupted after a second.
    proc = subprocess.Popen(
        [sys.executable, "-m", "portkit", "scan", "127.0.0.1", "-sT", "-p-", "--max-rate", "2000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    assert doc["scan"]["interrupted"] is True
    counted = sum(doc["scan"]["states"].values())
    assert 0 < counted < 65535
    assert "interrupted" in err


def test_ping_scan_without_discovery_lists_every_host_up_as_nmap_does(cli) -> None:  # type: ignore[no-untyped-def]
    """`-sn -Pn` asks for no probe at all: nmap lists every target up (reason user-set); portkit
    said 0 hosts up."""
    result = cli("scan", "-sn", "-Pn", "127.0.0.1", "127.0.0.2", "--json")
    assert result.status == 0, result.stderr
    doc = result.json()
    assert doc["scan"]["hosts_up"] == 2
    assert [(h["address"], h["status"], h["status_reason"]) for h in doc["hosts"]] == [
        ("127.0.0.1", "up", "user-set"),
        ("127.0.0.2", "up", "user-set"),
    ]
    if shutil.which("nmap"):
        xml = subprocess.run(
            ["nmap", "-sn", "-Pn", "-n", "-oX", "-", "127.0.0.1", "127.0.0.2"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        assert '<hosts up="2" down="0" total="2"/>' in xml
        ours = cli("scan", "-sn", "-Pn", "127.0.0.1", "127.0.0.2", "-oX", "-").stdout
        assert '<hosts up="2" down="0" total="2"/>' in ours


def test_a_hostile_service_cannot_write_to_the_terminal(cli) -> None:  # type: ignore[no-untyped-def]
    """A page title or redirect is the scanned host's to choose: an OSC sequence in it retitled the
    terminal of whoever read `scan --sv` (nmap writes such bytes out as \\x1B)."""
    page = b"<html><title>\x1b]0;pwned\x07\x1b[2J</title></html>"
    answer = b"HTTP/1.1 200 OK\r\nLocation: \x1b]8;;http://x\x07\r\nContent-Length: %d\r\n\r\n" % len(page)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]

        def reply(conn: socket.socket) -> None:
            with conn, contextlib.suppress(OSError):
                conn.settimeout(2)
                conn.recv(4096)
                conn.sendall(answer + page)

        def serve() -> None:
            with contextlib.suppress(OSError):
                while True:
                    threading.Thread(target=reply, args=(server.accept()[0],), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()
        result = cli("scan", "-sT", "--sv", "-p", str(port), "127.0.0.1")
    assert result.status == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b]0;pwned\\x07" in result.stdout, result.stdout


def test_a_killed_scan_leaves_no_worker_probing() -> None:
    """`kill PID` of a big scan (two worker processes) ends the workers too: they were left
    scanning, orphaned, for as long as the scan had to run."""
    env = {**os.environ, "PORTKIT_SCAN_WORKERS": "2"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "portkit", "scan", "127.0.0.1", "-sT", "-p-", "--max-rate", "2000", "--json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    workers: list[int] = []
    deadline = time.monotonic() + 20
    while len(workers) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        with contextlib.suppress(OSError):
            workers = [int(w) for w in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(workers) == 2, "the scan did not fork its workers"
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{w}").exists() for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if Path(f"/proc/{w}").exists()]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert alive == [], "workers kept scanning after the scan was killed"


def test_target_file_and_exclusions(cli, tmp_path, listener: int) -> None:  # type: ignore[no-untyped-def]
    targets = tmp_path / "targets"
    targets.write_text("127.0.0.1\n127.0.0.2 # excluded below\n127.0.0.3\n")
    excluded = tmp_path / "exclude"
    excluded.write_text("127.0.0.3\n")
    result = cli(
        "scan", "-iL", str(targets), "--exclude", "127.0.0.2", "--exclude-file", str(excluded),
        "-sT", "-Pn", "-p", str(listener), "--json",
    )  # fmt: skip
    assert result.status == 0, result.stderr
    assert [h["address"] for h in result.json()["hosts"]] == ["127.0.0.1"]


@needs_root
def test_a_subnets_broadcast_address_is_scanned_like_any_silent_host() -> None:
    """Scanning 10.x.0.0/30 from a host on that subnet reaches its broadcast address, to which the
    kernel refuses to send (EACCES without SO_BROADCAST): a SYN scan of any directly attached
    subnet ended in an internal error. nmap finds no such host up (none answers); with -Pn its
    ports are filtered (no probe got an answer)."""
    from portkit.testing import LabNamespace

    with LabNamespace("pkbc") as ns:
        ns.ip("link", "add", "pkbc0", "type", "veth", "peer", "name", "pkbc1")
        ns.ip("addr", "add", "10.250.0.1/30", "dev", "pkbc0")
        for device in ("pkbc0", "pkbc1"):
            ns.ip("link", "set", device, "up")

        def scan(*args: str) -> dict:  # type: ignore[type-arg]
            proc = ns.run([sys.executable, "-m", "portkit", "scan", "-p", "22", "--json", *args], timeout=60)
            assert proc.returncode == 0, proc.stderr
            return json.loads(proc.stdout)  # type: ignore[no-any-return]

        for kind in ("-sS", "-sA", "-sU", "-sT"):
            assert scan(kind, "10.250.0.3")["scan"]["hosts_up"] == 0, kind
            doc = scan(kind, "-Pn", "10.250.0.3")
            (host,) = doc["hosts"]
            states = [p["state"] for p in host["ports"]] + [e["state"] for e in host["extraports"]]
            assert states in (["filtered"], ["open|filtered"]), (kind, states)
            assert scan(kind, "10.250.0.0/30")["scan"]["hosts_up"] == 1, kind  # itself, 10.250.0.1
