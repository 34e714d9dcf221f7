"""`portkit diff`: its verdicts on pairs of real nmap scans agree with ndiff's, and hand-checked
edge cases of inventories (an owner restarted with a new pid is not a change).

The scans are real `nmap` runs against listeners this test opens on loopback addresses
(127.0.0.1 and 127.0.0.2), closing and opening listeners between the two runs of a pair. The
oracle is `ndiff --xml`: for every port it reports, (host, port, protocol, state before, state
after); portkit's `diff --json` must report the same set.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_root
from fixtures_bad_input import assert_usage_error, run_main
from portkit.diff import compare, parse_ref, read_side_text

needs_nmap = pytest.mark.skipif(
    shutil.which("nmap") is None or shutil.which("ndiff") is None, reason="needs nmap and ndiff"
)

Verdict = tuple[str, int, str, str | None, str | None]


# --- the lab: loopback listeners ------------------------------------------------------------


class Listeners:
    """TCP/UDP sockets bound on loopback addresses; a TCP one may greet with a banner."""

    def __init__(self) -> None:
        self.sockets: dict[tuple[str, int, str], socket.socket] = {}
        self.threads: list[threading.Thread] = []

    def open(self, address: str, port: int, protocol: str = "tcp", banner: bytes = b"") -> None:
        kind = socket.SOCK_STREAM if protocol == "tcp" else socket.SOCK_DGRAM
        sock = socket.socket(socket.AF_INET, kind)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        if protocol == "tcp":
            sock.listen(16)
            if banner:
                thread = threading.Thread(target=self._greet, args=(sock, banner), daemon=True)
                thread.start()
                self.threads.append(thread)
        self.sockets[(address, port, protocol)] = sock

    @staticmethod
    def _greet(sock: socket.socket, banner: bytes) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            try:
                conn.sendall(banner)
                conn.settimeout(2)
                conn.recv(1024)
            except OSError:
                pass
            finally:
                conn.close()

    def close(self, address: str, port: int, protocol: str = "tcp") -> None:
        sock = self.sockets.pop((address, port, protocol))
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def close_all(self) -> None:
        for key in list(self.sockets):
            self.close(*key)


@pytest.fixture
def listeners() -> Iterator[Listeners]:
    lab = Listeners()
    try:
        yield lab
    finally:
        lab.close_all()


def free_base(width: int, addresses: tuple[str, ...] = ("127.0.0.1", "127.0.0.2")) -> int:
    """A port such that base..base+width-1 is free for TCP and UDP on every address."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - width)
        probes: list[socket.socket] = []
        try:
            for port in range(base, base + width):
                for address in addresses:
                    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                        s = socket.socket(socket.AF_INET, kind)
                        probes.append(s)
                        s.bind((address, port))
            return base
        except OSError:
            continue
        finally:
            for s in probes:
                s.close()
    raise RuntimeError("no free port range")


def nmap(out: Path, ports: str, targets: str, *flags: str) -> Path:
    subprocess.run(
        ["nmap", "-n", "-Pn", *flags, "-p", ports, "-oX", str(out), *targets.split()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


# --- the oracle: ndiff --xml ----------------------------------------------------------------


def _state(port: ET.Element | None) -> str | None:
    if port is None:
        return None
    state = port.find("state")
    return None if state is None else state.get("state")


def _address(host: ET.Element) -> str:
    found = [a.get("addr", "") for a in host.findall("address") if a.get("addrtype") in ("ipv4", "ipv6")]
    return found[0]


def ndiff_verdicts(a: Path, b: Path) -> set[Verdict]:
    proc = subprocess.run(["ndiff", "--xml", str(a), str(b)], capture_output=True, text=True, timeout=60)
    assert proc.returncode in (0, 1), proc.stderr
    root = ET.fromstring(proc.stdout)
    found: set[Verdict] = set()
    for hostdiff in root.iter("hostdiff"):
        only_a, only_b = hostdiff.find("a/host"), hostdiff.find("b/host")
        if only_a is not None or only_b is not None:  # a host on one side only: all its ports
            host = only_a if only_a is not None else only_b
            assert host is not None
            collapsed = {e.get("state") for e in host.iter("extraports")}
            for port in host.iter("port"):
                state = _state(port)
                if state in collapsed:
                    continue
                spec = (_address(host), int(port.get("portid", "0")), port.get("protocol", ""))
                found.add((*spec, None, state) if only_b is not None else (*spec, state, None))
            continue
        host = hostdiff.find("host")
        assert host is not None
        for portdiff in host.iter("portdiff"):
            port_a, port_b = portdiff.find("a/port"), portdiff.find("b/port")
            if port_a is None and port_b is None:  # one <port>, state unchanged, <a>/<b> inside it
                port_a = port_b = portdiff.find("port")
            port = port_a if port_a is not None else port_b
            assert port is not None
            found.add(
                (
                    _address(host),
                    int(port.get("portid", "0")),
                    port.get("protocol", ""),
                    _state(port_a),
                    _state(port_b),
                )
            )
    return found


def portkit_verdicts(a: Path, b: Path) -> tuple[set[Verdict], dict[str, Any]]:
    result = run_main("diff", str(a), str(b), "--json")
    assert result.status in (0, 1), result.stderr
    doc = json.loads(result.stdout)
    assert result.status == (1 if doc["changed"] else 0)
    verdicts = {
        (
            p["host"],
            p["port"],
            p["protocol"],
            p["before"]["state"] if p["before"] else None,
            p["after"]["state"] if p["after"] else None,
        )
        for p in doc["ports"]
    }
    return verdicts, doc


def agree(a: Path, b: Path) -> dict[str, Any]:
    ours, doc = portkit_verdicts(a, b)
    theirs = ndiff_verdicts(a, b)
    assert ours == theirs, f"portkit only: {ours - theirs}; ndiff only: {theirs - ours}"
    return doc


# --- agreement with ndiff -------------------------------------------------------------------


@needs_nmap
def test_opened_and_closed_ports_agree_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    # 40 ports: the closed ones collapse into "Not shown", as on a real scan.
    base = free_base(40)
    ports = f"{base}-{base + 39}"
    listeners.open("127.0.0.1", base + 1)
    listeners.open("127.0.0.1", base + 2)
    listeners.open("127.0.0.1", base + 30)
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sT")
    listeners.close("127.0.0.1", base + 2)
    listeners.open("127.0.0.1", base + 3)
    listeners.open("127.0.0.1", base + 39)
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1", "-sT")
    doc = agree(a, b)
    changes = {(p["port"], tuple(p["changes"])) for p in doc["ports"]}
    assert changes == {(base + 2, ("closed",)), (base + 3, ("opened",)), (base + 39, ("opened",))}
    assert agree(a, a)["ports"] == []  # a scan against itself: nothing
    assert agree(b, a) and {p["port"] for p in agree(b, a)["ports"]} == {base + 2, base + 3, base + 39}


@needs_nmap
def test_few_ports_all_listed_agree_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    # 6 ports: nmap lists closed ones too, so closed -> open shows both states.
    base = free_base(6)
    ports = f"{base}-{base + 5}"
    listeners.open("127.0.0.1", base)
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sT")
    listeners.close("127.0.0.1", base)
    listeners.open("127.0.0.1", base + 4)
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1", "-sT")
    doc = agree(a, b)
    assert {(p["port"], p["before"]["state"], p["after"]["state"]) for p in doc["ports"]} == {
        (base, "open", "closed"),
        (base + 4, "closed", "open"),
    }


@needs_nmap
def test_a_host_added_and_removed_agree_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    base = free_base(30)
    ports = f"{base}-{base + 29}"
    listeners.open("127.0.0.1", base + 5)
    listeners.open("127.0.0.2", base + 7)
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sT")
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1 127.0.0.2", "-sT")
    doc = agree(a, b)
    assert doc["hosts"] == [{"host": "127.0.0.2", "before": None, "after": "up"}]
    assert agree(b, a)["hosts"] == [{"host": "127.0.0.2", "before": "up", "after": None}]
    text = run_main("diff", str(a), str(b)).stdout
    assert "+127.0.0.2:" in text and f"+{base + 7}/tcp open" in text.replace("  ", " ")


@needs_nmap
def test_service_version_change_agrees_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    base = free_base(3)
    ports = f"{base}-{base + 2}"
    listeners.open("127.0.0.1", base + 1, banner=b"SSH-2.0-OpenSSH_8.4p1 Debian-5\r\n")
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sT", "-sV", "--version-intensity", "0")
    listeners.close("127.0.0.1", base + 1)
    listeners.open("127.0.0.1", base + 1, banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1", "-sT", "-sV", "--version-intensity", "0")
    doc = agree(a, b)
    (change,) = doc["ports"]
    assert change["changes"] == ["service"]
    assert "8.4p1" in change["before"]["service"] and "9.2p1" in change["after"]["service"]


@needs_nmap
def test_a_changed_script_result_agrees_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    """Same port, state and service, another NSE result (a banner here; a TLS certificate or an
    SSH host key alike): ndiff lists the port, and so must portkit, with the script lines."""
    base = free_base(3)
    ports = f"{base}-{base + 2}"
    listeners.open("127.0.0.1", base + 1, banner=b"220 mail.example.org ESMTP\r\n")
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sT", "--script", "banner")
    listeners.close("127.0.0.1", base + 1)
    listeners.open("127.0.0.1", base + 1, banner=b"220 mail.attacker.example ESMTP\r\n")
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1", "-sT", "--script", "banner")
    doc = agree(a, b)
    (change,) = doc["ports"]
    assert change["port"] == base + 1 and change["changes"] == ["scripts"]
    assert [s["id"] for s in change["after"]["scripts"]] == ["banner"]
    assert "attacker" in change["after"]["scripts"][0]["output"]
    lines = run_main("diff", str(a), str(b)).stdout.splitlines()
    assert any(line.startswith("-|_ banner: 220 mail.example.org") for line in lines), lines
    assert any(line.startswith("+|_ banner: 220 mail.attacker.example") for line in lines), lines
    assert agree(a, a)["ports"] == []


@needs_nmap
@needs_root
def test_udp_changes_agree_with_ndiff(listeners: Listeners, tmp_path: Path) -> None:
    base = free_base(4)
    ports = f"{base}-{base + 3}"
    listeners.open("127.0.0.1", base + 1, "udp")
    a = nmap(tmp_path / "a.xml", ports, "127.0.0.1", "-sU")
    listeners.close("127.0.0.1", base + 1, "udp")
    b = nmap(tmp_path / "b.xml", ports, "127.0.0.1", "-sU")
    doc = agree(a, b)
    assert [(p["port"], p["protocol"]) for p in doc["ports"]] == [(base + 1, "udp")]


@needs_nmap
def test_portkit_xml_and_json_give_the_verdicts_ndiff_gives(listeners: Listeners, tmp_path: Path) -> None:
    base = free_base(30)
    ports = f"{base}-{base + 29}"
    listeners.open("127.0.0.1", base + 1)
    listeners.open("127.0.0.1", base + 2)

    def portkit_scan(name: str) -> tuple[Path, Path]:
        xml, js = tmp_path / f"{name}.xml", tmp_path / f"{name}.json"
        result = run_main("scan", "-sT", "-Pn", "-p", ports, "127.0.0.1", "-oX", str(xml), "-oJ", str(js))
        assert result.status == 0, result.stderr
        return xml, js

    xml_a, json_a = portkit_scan("a")
    listeners.close("127.0.0.1", base + 2)
    listeners.open("127.0.0.1", base + 20)
    xml_b, json_b = portkit_scan("b")
    doc = agree(xml_a, xml_b)
    from_json, _ = portkit_verdicts(json_a, json_b)
    assert doc["ports"] and from_json == portkit_verdicts(xml_a, xml_b)[0]
    # nmap's XML against portkit's of the same ports: they may be compared with each other too
    mixed, _ = portkit_verdicts(nmap(tmp_path / "n.xml", ports, "127.0.0.1", "-sT"), xml_b)
    assert mixed == set()


# --- inventories: hand-checked ----------------------------------------------------------------


def ls_doc(*rows: tuple[int, str, str, int, str, str], netns: str | None = None) -> str:
    """`portkit ls --json` with rows (port, protocol, address, pid, name, unit)."""
    sockets, processes = [], {}
    for port, protocol, address, pid, name, unit in rows:
        state = "LISTEN" if protocol == "tcp" else "UNCONN"
        sockets.append(
            {
                "protocol": protocol,
                "family": 6 if ":" in address else 4,
                "state": state,
                "local": {"address": address, "port": port},
                "remote": {"address": "0.0.0.0", "port": 0},
                "netns": netns,
                "processes": [{"pid": pid, "name": name}] if pid else [],
            }
        )
        if pid:
            processes[str(pid)] = {
                "pid": pid,
                "name": name,
                "cmdline": [f"/usr/sbin/{name}", "-D"],
                "uid": 0,
                "user": "root",
                "unit": unit or None,
                "container": None,
            }
    return json.dumps({"sockets": sockets, "processes": processes})


def diff_docs(a: str, b: str) -> list[dict[str, Any]]:
    doc = compare(read_side_text(a, "a.json"), read_side_text(b, "b.json")).to_json()
    return list(doc["ports"])


def test_the_text_writes_out_control_characters_of_owner_names(tmp_path: Path) -> None:
    """A process name is anyone's to choose: an escape sequence in it is written out, not sent
    to the terminal of whoever reads the diff."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(ls_doc((22, "tcp", "0.0.0.0", 10, "sshd", "")))
    b.write_text(ls_doc((22, "tcp", "0.0.0.0", 11, "\x1b[1A\x1b[2Ksshd", "")))
    result = run_main("diff", str(a), str(b))
    assert result.status == 1 and "\x1b" not in result.stdout, repr(result.stdout)
    assert "\\x1b[1A\\x1b[2Ksshd/11" in result.stdout


def test_a_new_pid_for_the_same_program_and_unit_is_not_a_change() -> None:
    before = ls_doc((22, "tcp", "0.0.0.0", 100, "sshd", "ssh.service"))
    after = ls_doc((22, "tcp", "0.0.0.0", 4242, "sshd", "ssh.service"))
    assert diff_docs(before, after) == []


def test_another_program_or_unit_on_the_port_is_an_owner_change() -> None:
    before = ls_doc((8080, "tcp", "0.0.0.0", 100, "nginx", "nginx.service"))
    after = ls_doc((8080, "tcp", "0.0.0.0", 100, "python3", ""))
    (change,) = diff_docs(before, after)
    assert change["changes"] == ["owner"] and change["host"] == "localhost"
    moved = ls_doc((8080, "tcp", "0.0.0.0", 100, "nginx", "other.service"))
    assert diff_docs(before, moved)[0]["changes"] == ["owner"]


def test_an_owner_one_side_could_not_see_is_unknown_not_changed(tmp_path: Path) -> None:
    """`ls --json` without root names no owner for root's listeners: against a root inventory
    that is not an owner change (nor is the reverse); an owner both sides name still is."""
    known = ls_doc((8080, "tcp", "0.0.0.0", 100, "nginx", "nginx.service"))
    unseen = ls_doc((8080, "tcp", "0.0.0.0", 0, "", ""))
    assert diff_docs(known, unseen) == [] and diff_docs(unseen, known) == []
    other = ls_doc((8080, "tcp", "0.0.0.0", 100, "python3", ""))
    assert diff_docs(known, other)[0]["changes"] == ["owner"]


def test_a_rebind_from_loopback_to_every_interface_is_an_address_change() -> None:
    before = ls_doc((6379, "tcp", "127.0.0.1", 7, "redis-server", ""))
    after = ls_doc((6379, "tcp", "0.0.0.0", 7, "redis-server", ""))
    (change,) = diff_docs(before, after)
    assert change["changes"] == ["address"]
    assert (change["before"]["exposure"], change["after"]["exposure"]) == ("loopback", "all")


def test_opened_and_closed_listeners_and_namespaces() -> None:
    before = ls_doc((22, "tcp", "0.0.0.0", 1, "sshd", ""), (53, "udp", "127.0.0.53", 2, "resolved", ""))
    after = ls_doc((22, "tcp", "0.0.0.0", 1, "sshd", ""), (8000, "tcp", "::", 3, "python3", ""))
    changes = {(c["port"], c["protocol"], tuple(c["changes"])) for c in diff_docs(before, after)}
    assert changes == {(53, "udp", ("closed",)), (8000, "tcp", ("opened",))}
    in_ns = ls_doc((22, "tcp", "0.0.0.0", 1, "sshd", ""), netns="lab")
    # the same port in another namespace is another listener: one closed here, one opened there
    moved = {(c["netns"], c["port"], tuple(c["changes"])) for c in diff_docs(before, in_ns)}
    assert moved == {(None, 22, ("closed",)), (None, 53, ("closed",)), ("lab", 22, ("opened",))}


def test_overview_and_ls_compare_on_the_fields_both_record() -> None:
    ls_text = ls_doc((22, "tcp", "0.0.0.0", 100, "sshd", "ssh.service"))
    overview = json.dumps(
        {
            "listeners": [
                {
                    "protocol": "tcp",
                    "port": 22,
                    "exposure": "all",
                    "addresses": ["0.0.0.0"],
                    "processes": [{"pid": 555, "name": "sshd", "user": "root"}],
                    "units": ["ssh.service"],
                    "containers": [],
                    "netns": None,
                }
            ]
        }
    )
    assert diff_docs(ls_text, overview) == []  # no executable in overview: not compared


def test_a_scan_and_an_inventory_are_not_compared(tmp_path: Path) -> None:
    scan = tmp_path / "scan.json"
    scan.write_text(json.dumps({"scan": {}, "hosts": []}))
    inventory = tmp_path / "ls.json"
    inventory.write_text(ls_doc())
    assert_usage_error(run_main("diff", str(scan), str(inventory)), "cannot compare a scan with an inventory")


@pytest.mark.parametrize(
    "content",
    [
        "",
        "hello",
        "<nmaprun><host><address addr='10.0.0.1' addrtype='ipv4'/><ports><port portid='99999' "
        "protocol='tcp'><state state='open'/></port></ports></host></nmaprun>",
        "<nmaprun><host><ports/></host></nmaprun>",
        "<html></html>",
        "<nmaprun>",
        '{"scan": {}, "hosts": [{"address": "10.0.0.1", "ports": [{"port": "²", "protocol": "tcp"}]}]}',
        '{"scan": {}, "hosts": [{"address": 5}]}',
        '{"sockets": [{"protocol": "tcp", "state": "LISTEN", "local": {"port": 70000}, "remote": {}}]}',
        '{"listeners": [{"port": 22, "protocol": "icmp"}]}',
        '{"other": 1}',
        "[" * 100000,
        "{" + '"a":[' * 50000,
    ],
)
def test_bad_diff_files_are_one_line_and_exit_2(content: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_text(content)
    good = tmp_path / "good.json"
    good.write_text(ls_doc())
    assert_usage_error(run_main("diff", str(bad), str(good)), "invalid diff input")


def test_empty_inputs_and_stdin_twice_are_said_as_such(tmp_path: Path) -> None:
    empty = tmp_path / "empty.xml"
    empty.write_text("")
    good = tmp_path / "good.json"
    good.write_text(ls_doc())
    assert "it is empty" in assert_usage_error(run_main("diff", str(empty), str(good)), "invalid diff input")
    assert_usage_error(run_main("diff", "-", "-"), "standard input is read once")


def test_ledger_references() -> None:
    now = 1_800_000_000.0
    assert parse_ref("@now", now).live
    assert parse_ref("@12", now).id == 12
    assert parse_ref("@yesterday", now).time == now - 86400
    assert parse_ref("@-2h", now).time == now - 7200
    assert parse_ref("@-7d", now).time == now - 7 * 86400
    assert parse_ref("@2026-12-01T10:00+00:00", now).time == 1_796_119_200.0
    for bad in ("@", "@tomorrow", "@-5y", "@2026-13-01", "@²"):
        assert_usage_error(run_main("diff", bad, "@now"), "invalid ledger reference")
    # A local time whose conversion leaves year 1-9999 (the zone moves it over the edge).
    for bad, zone in (("@0001-01-01", "America/Adak"), ("@9999-12-31T23:59", "Pacific/Kiritimati")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TZ", zone)
            time.tzset()
            try:
                assert_usage_error(run_main("diff", bad, "@now"), "invalid ledger reference")
            finally:
                patch.undo()
                time.tzset()


def test_ledger_snapshots_against_the_live_host(tmp_path: Path) -> None:
    """@yesterday finds the newest complete inventory before it; @now is this host now."""

    from portkit.ledger import INVENTORY, Ledger, Owner, PortFact

    db = str(tmp_path / "ledger.db")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        now = time.time()
        with Ledger.open(db) as ledger:
            gone = PortFact(
                1, "tcp", "h", "listening", "127.0.0.9", exposure="loopback", owners=(Owner("old"),)
            )
            ledger.record(INVENTORY, [gone], host="h", time=now - 3 * 86400)
            partial = PortFact(2, "tcp", "h", "listening", "127.0.0.9")
            ledger.record(INVENTORY, [partial], host="h", complete=False, time=now - 2 * 86400)
        result = run_main("diff", "@yesterday", "@now", "--db", db, "--json")
        assert result.status == 1, result.stderr
        doc = json.loads(result.stdout)
        changes = {(p["port"], tuple(p["changes"])) for p in doc["ports"] if p["netns"] is None}
        assert (1, ("closed",)) in changes and (port, ("opened",)) in changes
        assert (2, ("closed",)) not in changes  # the partial record is history, not a snapshot
        assert doc["a"].startswith("ledger #1: inventory of h")
        # @ID of a partial inventory is allowed, with a note on stderr
        note = run_main("diff", "@2", "@now", "--db", db)
        assert note.status == 1 and note.stderr.startswith("note: ledger #2 saw only part")
        missing = run_main("diff", "@-5d", "@now", "--db", db)
        assert missing.status == 1 and "no complete inventory recorded at or before" in missing.stderr
        assert_usage_error(run_main("diff", "@99", "@now", "--db", db), "no observation #99")
    finally:
        listener.close()


def test_a_recorded_scan_compares_with_a_scan_file(tmp_path: Path) -> None:
    db = str(tmp_path / "ledger.db")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    try:
        out = tmp_path / "now.json"
        ports = f"{port}-{port + 29}"
        first = run_main("scan", "-sT", "-Pn", "-p", ports, "127.0.0.1", "--record", "--db", db)
        assert first.status == 0, first.stderr
    finally:
        listener.close()
    second = run_main("scan", "-sT", "-Pn", "-p", ports, "127.0.0.1", "-oJ", str(out))
    assert second.status == 0, second.stderr
    result = run_main("diff", "@1", str(out), "--db", db, "--json")
    assert result.status == 1, result.stderr
    (change,) = json.loads(result.stdout)["ports"]
    assert (change["port"], change["changes"]) == (port, ["closed"])
    assert_usage_error(run_main("diff", str(out), "@now", "--db", db), "compare it with an inventory")


PORT_LINE = re.compile(r"[-+][0-9]+/(tcp|udp) ")


def port_lines(text: str) -> list[str]:
    """The `-`/`+` port lines of an ndiff-style text, whitespace collapsed, in order."""
    return [" ".join(line.split()) for line in text.splitlines() if PORT_LINE.match(line)]


@needs_nmap
@pytest.mark.parametrize("seed", range(12))
def test_random_changes_agree_with_ndiff_verdicts_and_text(
    seed: int, listeners: Listeners, tmp_path: Path
) -> None:
    """Random listeners on two addresses, random ones closed and opened between the scans."""
    import random

    rng = random.Random(seed)
    width = 40
    base = free_base(width)
    ports = f"{base}-{base + width - 1}"
    addresses = ("127.0.0.1", "127.0.0.2")
    opened = {(a, base + rng.randrange(width)) for a in addresses for _ in range(rng.randrange(0, 8))}
    for address, port in opened:
        listeners.open(address, port)
    a = nmap(tmp_path / "a.xml", ports, " ".join(addresses), "-sT")
    for address, port in sorted(opened):
        if rng.random() < 0.4:
            listeners.close(address, port)
    for address in addresses:
        for _ in range(rng.randrange(0, 6)):
            port = base + rng.randrange(width)
            if (address, port, "tcp") not in listeners.sockets:
                listeners.open(address, port)
    targets = " ".join(addresses if rng.random() < 0.7 else addresses[:1])
    b = nmap(tmp_path / "b.xml", ports, targets, "-sT")
    agree(a, b)
    ours = run_main("diff", str(a), str(b)).stdout
    theirs = subprocess.run(["ndiff", str(a), str(b)], capture_output=True, text=True, timeout=60).stdout
    assert port_lines(ours) == port_lines(theirs)
