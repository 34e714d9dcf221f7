"""`portkit watch` in a lab: real scanners are detected, ordinary traffic raises nothing.

A target namespace with real services and a scanner namespace joined by a veth pair. Each case
starts `portkit watch --scans --json --netns TARGET` (it says `watch-started` once its packet
sockets are open), runs one real tool from the scanner, and reads the events.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_root
from portkit.testing import LabNamespace, connect

PORTKIT = [sys.executable, "-m", "portkit"]
TARGET, SCANNER = "10.79.0.1", "10.79.0.2"

SERVICES = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(1024)
    while True:
        c, _ = s.accept(); c.close()
for port in (80, 443, 9000):
    threading.Thread(target=serve, args=(port,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


class Watcher:
    def __init__(self, lab: WatchLab, *args: str) -> None:
        argv = [*PORTKIT, "watch", "--json", "--netns", lab.target.name, *args]
        # A foreground watch: SIGINT at its default even when this test run was started in the
        # background (`cmd &` ignores SIGINT, and a child inherits that), so stop() can use it.
        self.proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        started = self.wait_for(lambda e: e["event"] == "watch-started", 30)
        assert started is not None and started["packets"], "the watch did not start with packet sockets"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def wait_for(self, wanted: Any, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                event = self.events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if wanted(event):
                event["received"] = time.monotonic()
                return event
        return None

    def drain(self) -> list[dict[str, Any]]:
        found = []
        while True:
            try:
                found.append(self.events.get_nowait())
            except queue.Empty:
                return found

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        # stdout is the reader thread's alone (communicate() would race it for the same pipe
        # and could block in a read the thread had already drained).
        self.thread.join(timeout=5)
        assert self.proc.stderr is not None
        return self.proc.stderr.read()


class WatchLab:
    def __init__(self, target: LabNamespace, scanner: LabNamespace) -> None:
        self.target, self.scanner = target, scanner

    def watch(self, *args: str) -> Watcher:
        return Watcher(self, *args)


@pytest.fixture(scope="module")
def watch_lab() -> Iterator[WatchLab]:
    with LabNamespace("pkwt") as target, LabNamespace("pkws") as scanner:
        connect(target, "eth0", [f"{TARGET}/24"], scanner, "eth0", [f"{SCANNER}/24"])
        services = subprocess.Popen(
            target.command([sys.executable, "-c", SERVICES]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert services.stdout is not None and services.stdout.readline().strip() == "ready"
            yield WatchLab(target, scanner)
        finally:
            services.kill()
            services.wait(timeout=10)


def _scan_event(event: dict[str, Any]) -> bool:
    return event["event"] == "scan" and event["source"] == SCANNER


NMAP_CASES = {
    "syn": (["-sS", "-p", "1-200", "-T4"], "SYN"),
    "connect": (["-sT", "-p", "1-200", "-T4"], "connect"),
    "fin": (["-sF", "-p", "1-200", "-T4"], "FIN"),
    "xmas": (["-sX", "-p", "1-200", "-T4"], "Xmas"),
    "null": (["-sN", "-p", "1-200", "-T4"], "NULL"),
    "udp": (["-sU", "-p", "1-60", "-T4"], "UDP"),
    "fast": (["-sS", "-p", "1-1000", "-T5"], "SYN"),
    # The ACK family: probes with ACK set, which the kernel answers with a bare RST from every
    # port it has no connection on. The watcher sees the RSTs, not the probes.
    "ack": (["-sA", "-p", "1-200", "-T4"], "ACK"),
    "window": (["-sW", "-p", "1-200", "-T4"], "ACK"),
    "maimon": (["-sM", "-p", "1-200", "-T4"], "ACK"),
}


@needs_root
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
@pytest.mark.parametrize("case", list(NMAP_CASES))
def test_nmap_scans_are_detected(watch_lab: WatchLab, case: str) -> None:
    args, scan_type = NMAP_CASES[case]
    watcher = watch_lab.watch("--scans")
    try:
        started = time.time()
        nmap = watch_lab.scanner.run(["nmap", "-n", "-Pn", "--max-retries", "1", *args, TARGET], timeout=120)
        assert nmap.returncode == 0, nmap.stderr
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None, f"nmap {' '.join(args)} was not detected"
        assert event["scan_type"] == scan_type
        assert event["addresses"] == [TARGET] and len(event["ports"]) >= 15
        detected_after = event["time"] - started  # the attempt that tipped it, by the kernel's clock
        print(f"nmap {' '.join(args)}: detected after {detected_after:.2f} s ({event['reason']})")
    finally:
        watcher.stop()


@needs_root
def test_portkit_scan_is_detected(watch_lab: WatchLab) -> None:
    watcher = watch_lab.watch("--scans")
    try:
        proc = watch_lab.scanner.run([*PORTKIT, "scan", "-sS", "-Pn", "-p", "1-300", TARGET], timeout=120)
        assert proc.returncode == 0, proc.stderr
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None and event["scan_type"] == "SYN"
        documented = _documented_keys("## `portkit watch --json`", "scan") - {"blocked"}  # --block only
        assert documented <= set(event), sorted(documented - set(event))
    finally:
        watcher.stop()


@needs_root
@pytest.mark.slow
def test_slow_scan_is_detected_with_lower_thresholds(watch_lab: WatchLab) -> None:
    """nmap -T1 waits 15 s between probes: four ports take about a minute."""
    watcher = watch_lab.watch("--scans", "--scan-ports", "3")
    try:
        nmap = watch_lab.scanner.run(["nmap", "-n", "-Pn", "-sS", "-T1", "-p", "1-4", TARGET], timeout=150)
        assert nmap.returncode == 0
        assert watcher.wait_for(_scan_event, 20) is not None
    finally:
        watcher.stop()


BURST = r"""
import socket, sys
for _ in range(int(sys.argv[2])):
    s = socket.create_connection((sys.argv[1], 9000), timeout=5)
    s.close()
"""


@needs_root
def test_ordinary_traffic_raises_nothing(watch_lab: WatchLab, tmp_path: Path) -> None:
    watcher = watch_lab.watch("--scans", "--accept-interval", "1s")
    http = subprocess.Popen(
        watch_lab.target.command([sys.executable, "-m", "http.server", "-b", TARGET, "8080"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(watch_lab, 8080)
        if shutil.which("ab"):  # 1,000 HTTP requests from 50 clients
            ab = watch_lab.scanner.run(
                ["ab", "-q", "-n", "1000", "-c", "50", f"http://{TARGET}:8080/"], timeout=120
            )
            assert ab.returncode == 0, ab.stderr
        # a service restart: refused for a moment, then back
        http.kill()
        http.wait(timeout=10)
        for _ in range(5):
            refused = watch_lab.scanner.run(
                [sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', 8080), 2)"]
            )
            assert refused.returncode != 0
        http = subprocess.Popen(
            watch_lab.target.command([sys.executable, "-m", "http.server", "-b", TARGET, "8080"]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_port(watch_lab, 8080)
        _ssh_login(watch_lab, tmp_path)
        burst = watch_lab.scanner.run([sys.executable, "-c", BURST, TARGET, "5000"], timeout=120)
        assert burst.returncode == 0, burst.stderr
        time.sleep(3)  # past the answer timeout and one accept interval
        events = watcher.drain()
        assert not [e for e in events if e["event"] == "scan"], events
        accepts = sum(e["count"] for e in events if e["event"] == "accepts" and e["port"] == 9000)
        assert 4900 <= accepts <= 5000, accepts
    finally:
        http.kill()
        http.wait(timeout=10)
        watcher.stop()


def _wait_port(lab: WatchLab, port: int) -> None:
    for _ in range(100):
        probe = lab.scanner.run(
            [sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', {port}), 1)"]
        )
        if probe.returncode == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} did not open")


def _ssh_login(lab: WatchLab, tmp_path: Path) -> None:
    """A real sshd in the target and a key login from the scanner (skipped where sshd is missing)."""
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not Path(sshd).exists() or shutil.which("ssh") is None:
        return
    host_key, user_key = tmp_path / "host", tmp_path / "user"
    for key in (host_key, user_key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    authorized = tmp_path / "authorized_keys"
    authorized.write_text((tmp_path / "user.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)
    server = subprocess.Popen(
        lab.target.command(
            [
                sshd,
                "-D",
                "-e",
                "-f",
                "/dev/null",
                "-h",
                str(host_key),
                "-o",
                f"ListenAddress={TARGET}",
                "-o",
                "Port=2222",
                "-o",
                f"AuthorizedKeysFile={authorized}",
                "-o",
                "UsePAM=no",
                "-o",
                "PidFile=none",
                "-o",
                "StrictModes=no",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_port(lab, 2222)
        login = lab.scanner.run(
            [
                "ssh",
                "-p",
                "2222",
                "-i",
                str(user_key),
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                f"root@{TARGET}",
                "true",
            ],
            timeout=30,
        )
        assert login.returncode == 0, login.stderr
    finally:
        server.kill()
        server.wait(timeout=10)


LISTEN = r"""
import socket, sys
s = socket.socket(); s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1)
print("ready", flush=True); sys.stdin.read()
"""


@needs_root
def test_listener_opened_and_closed_within_a_second(watch_lab: WatchLab) -> None:
    watcher = watch_lab.watch()
    try:
        holder = subprocess.Popen(
            watch_lab.target.command([sys.executable, "-c", LISTEN, "7777"]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        opened_at = time.monotonic()
        event = watcher.wait_for(lambda e: e["event"] == "listener-opened" and e["port"] == 7777, 5)
        assert event is not None and event["received"] - opened_at < 1.5
        assert event["owners"][0]["pid"] == holder.pid or event["owners"][0]["name"].startswith("python")
        holder.kill()
        holder.wait(timeout=10)
        closed_at = time.monotonic()
        event = watcher.wait_for(lambda e: e["event"] == "listener-closed" and e["port"] == 7777, 5)
        assert event is not None and event["received"] - closed_at < 1.5
    finally:
        watcher.stop()


@needs_root
def test_block_exec_and_record(watch_lab: WatchLab, tmp_path: Path) -> None:
    hook_out = tmp_path / "hook.jsonl"
    db = tmp_path / "ledger.db"
    watcher = watch_lab.watch(
        "--scans", "--block", "1m", "--exec", f"cat >> {hook_out}", "--record", "--db", str(db)
    )
    try:
        watch_lab.scanner.run(["nmap", "-n", "-Pn", "-sS", "-p", "1-100", "-T4", TARGET], timeout=120)
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None and event["blocked"], event
        # The scanner's packets are now dropped: even the open port does not answer.
        probe = watch_lab.scanner.run(
            [sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', 80), 1)"]
        )
        assert probe.returncode != 0
        tables = watch_lab.target.run(["nft", "list", "tables"]).stdout
        assert "portkit_watch_" in tables
    finally:
        watcher.stop()
    assert "portkit_watch_" not in watch_lab.target.run(["nft", "list", "tables"]).stdout
    assert (
        watch_lab.scanner.run(
            [sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', 80), 2)"]
        ).returncode
        == 0
    )
    hooked = [json.loads(line) for line in hook_out.read_text().splitlines()]
    assert any(h["event"] == "scan" and h["source"] == SCANNER for h in hooked)
    from portkit.ledger import Ledger

    with Ledger.open(db, create=False) as ledger:
        kinds = {e.kind for e in ledger.events()}
    assert "scan" in kinds


def test_bad_input_is_one_line() -> None:
    cases = [["--block", "1m"], ["--interval", "0"], ["--ignore", "not-an-ip"], ["--netns", "no-such-ns-w"]]
    cases += [["--scan-ports", "0"], ["--duration", "forever"]]
    cases += [["--exec", ""], ["--exec", "  "], ["--ignore", "9" * 300]]  # no hook that runs nothing
    cases += [["--exec", "true", "--exec-timeout", "0"], ["--exec", "true", "--exec-timeout", "soon"]]
    for args in cases:
        proc = subprocess.run(
            [*PORTKIT, "watch", *args], capture_output=True, text=True, timeout=60, check=False
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


HOLD_MANY = r"""
import socket, sys
held = {}
for spec in sys.argv[1:]:
    proto, address, port = spec.split(",")
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((address, int(port)))
    if proto == "tcp":
        s.listen(8)
    held[spec] = s
print("ready", flush=True)
for line in sys.stdin:  # a spec per line: close that socket
    held.pop(line.strip()).close()
    print("closed", flush=True)
"""


def _ss_listeners(ns: LabNamespace) -> set[tuple[str, str, int]]:
    """(protocol, address, port) of every TCP listener and bound UDP socket, as ss sees them."""
    out = subprocess.run(
        ns.command(["ss", "-H", "-l", "-n", "-t", "-u"]),
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    found = set()
    for line in out.splitlines():
        fields = line.split()
        address, _, port = fields[4].rpartition(":")
        address = address.strip("[]").split("%")[0]
        found.add(({"tcp": "tcp", "udp": "udp"}[fields[0]], "::" if address == "*" else address, int(port)))
    return found


def _documented_keys(heading: str, first: str) -> set[str]:
    """The keys docs/json.md shows for one event kind: its example line and continuation lines."""
    text = (Path(__file__).parent.parent / "docs" / "json.md").read_text()
    section = text[text.index(heading) :]
    block = section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    lines = block.splitlines()
    start = next(i for i, line in enumerate(lines) if f'"event": "{first}"' in line)
    chunk = [lines[start]]
    for line in lines[start + 1 :]:
        if line.startswith("{"):
            break
        chunk.append(line)
    return set(re.findall(r'"([a-z_]+)":', "\n".join(chunk)))


@needs_root
def test_listener_events_agree_with_ss_and_carry_the_documented_keys(watch_lab: WatchLab) -> None:
    """ss in the namespace is the oracle: every listener it sees appear (TCP and UDP, IPv4 and
    IPv6, wildcard and one address) is one listener-opened event, every one it sees go is one
    listener-closed event, and nothing else is reported."""
    specs = [
        "tcp,0.0.0.0,7101",
        "tcp,::,7102",
        f"tcp,{TARGET},7103",
        "tcp,127.0.0.1,7104",
        "udp,0.0.0.0,7105",
        "udp,::1,7106",
        "tcp,::1,7107",
    ]
    watcher = watch_lab.watch()
    holder = None
    try:
        before = _ss_listeners(watch_lab.target)
        watcher.drain()
        holder = subprocess.Popen(
            watch_lab.target.command([sys.executable, "-c", HOLD_MANY, *specs]),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        time.sleep(2.5)
        during = _ss_listeners(watch_lab.target)
        assert holder.stdin is not None
        for spec in specs[::2]:
            holder.stdin.write(spec + "\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "closed"
        time.sleep(2.5)
        after = _ss_listeners(watch_lab.target)
        events = watcher.drain()
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=10)
        watcher.stop()

    def seen(kind: str) -> set[tuple[str, str, int]]:
        return {(e["protocol"], e["address"], e["port"]) for e in events if e["event"] == kind}

    assert len(during - before) == len(specs), (before, during)  # the oracle saw every one
    assert seen("listener-opened") == during - before, events
    assert seen("listener-closed") == during - after, events
    opened = next(e for e in events if e["event"] == "listener-opened")
    documented = _documented_keys("## `portkit watch --json`", "listener-opened")
    owner_keys = {"pid", "name", "exe", "user", "unit", "container"}
    assert documented - owner_keys <= set(opened), (documented, opened)
    assert owner_keys <= set(opened["owners"][0]), opened


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_without_root_what_was_asked_outright_is_refused(watch_lab: WatchLab) -> None:
    """--scans and --netns NAME cannot be honoured without root: exit 1 with the reason, never a
    watch that silently reports nothing of what was asked (listener events of this namespace
    stay available without either)."""
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp"]
    nobody += ["XDG_CONFIG_HOME=/nonexistent-portkit-config"]
    cases = {
        ("--scans",): "--scans",
        ("--netns", watch_lab.target.name): "needs root",
    }
    for args, words in cases.items():
        proc = subprocess.run(
            [*nobody, *PORTKIT, "watch", "--duration", "1", *args],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode == 1 and last.startswith("portkit: error:") and words in last, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = subprocess.run(
        [*nobody, *PORTKIT, "watch", "--duration", "1", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    started = json.loads(proc.stdout.splitlines()[0])
    # Only what it watches: the namespaces it could not enter are not listed as watched.
    assert started["packets"] is False and started["namespaces"] == ["(this namespace)"], started


@needs_root
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is not installed")
def test_a_config_this_user_cannot_reach_is_no_config(tmp_path: Path) -> None:
    """A config under a directory the user may not search (root's XDG_CONFIG_HOME kept under
    sudo -u) made Path.exists() raise: an internal error. No config of this user's can be
    there: the command runs without one. A config the user names (PORTKIT_CONFIG) that cannot
    be read is one line, exit 2."""
    config = tmp_path / "private" / "portkit" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("record = false\n")
    (tmp_path / "private").chmod(0o700)
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp",
         f"XDG_CONFIG_HOME={tmp_path / 'private'}", *PORTKIT, "watch", "--duration", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "internal error" not in proc.stderr, proc.stderr
    named = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "env", "HOME=/tmp",
         f"PORTKIT_CONFIG={config}", *PORTKIT, "watch", "--duration", "0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert named.returncode == 2 and named.stderr.count("\n") == 1, named.stderr
    assert "permission denied" in named.stderr.lower() and "internal error" not in named.stderr


@needs_root
@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is not installed")
def test_a_restart_is_no_change_and_another_program_is_owner_changed(watch_lab: WatchLab) -> None:
    """The same program back on the port with a new pid is silent; socat taking it over from
    python is `owner-changed` (or, when a reading fell between the two, closed then opened)."""
    watcher = watch_lab.watch("--interval", "5s")

    def python_listener() -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            watch_lab.target.command([sys.executable, "-c", LISTEN, "7200"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    try:
        first = python_listener()
        assert watcher.wait_for(lambda e: e["event"] == "listener-opened" and e["port"] == 7200, 8)
        first.kill()
        first.wait(timeout=10)
        second = python_listener()
        time.sleep(6)
        restart = [e for e in watcher.drain() if e.get("port") == 7200]
        second.kill()
        second.wait(timeout=10)
        socat = subprocess.Popen(
            watch_lab.target.command(["socat", "TCP-LISTEN:7200,reuseaddr", "-"]),
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(6)
            takeover = [e for e in watcher.drain() if e.get("port") == 7200]
        finally:
            socat.kill()
            socat.wait(timeout=10)
    finally:
        watcher.stop()
    assert all(e["event"] in ("listener-closed", "listener-opened") for e in restart), restart
    kinds = [e["event"] for e in takeover]
    if kinds == ["owner-changed"]:
        (changed,) = takeover
        assert changed["owners"][0]["name"] == "socat" and changed["before"][0]["name"].startswith("python")
    else:
        assert kinds == ["listener-closed", "listener-opened"], takeover


@needs_root
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_block_never_drops_the_gateway(watch_lab: WatchLab) -> None:
    """A scan's source address can be forged: --block leaves the namespace's gateway (and its
    own addresses) alone, says so, and the scan is still reported."""
    watch_lab.target.ip("route", "add", "default", "via", SCANNER, "dev", "eth0")
    watcher = watch_lab.watch("--scans", "--block", "1m")
    try:
        watch_lab.scanner.run(["nmap", "-n", "-Pn", "-sS", "-p", "1-100", "-T4", TARGET], timeout=120)
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None and event["blocked"] is None, event
        probe = watch_lab.scanner.run(
            [sys.executable, "-c", f"import socket; socket.create_connection(('{TARGET}', 80), 2)"]
        )
        assert probe.returncode == 0, "the gateway was dropped"
    finally:
        err = watcher.stop()
        watch_lab.target.ip("route", "del", "default")
    assert f"could not block {SCANNER}: it is" in err and "gateway" in err, err


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_root
def test_hooks_that_hang_hold_no_event_back_and_are_killed(watch_lab: WatchLab, tmp_path: Path) -> None:
    """Twelve listeners at once while every --exec hook hangs: all twelve events still come out
    (the hooks run off the watch's loop), each hook is killed whole (sh and its sleep) after
    --exec-timeout, and stderr says so."""
    pids = tmp_path / "pids"
    specs = [f"tcp,0.0.0.0,{port}" for port in range(7300, 7312)]
    watcher = watch_lab.watch(
        "--interval", "0.2s", "--exec", f"echo $$ >> {pids}; sleep 600", "--exec-timeout", "2s"
    )
    holder = None
    try:
        holder = subprocess.Popen(
            watch_lab.target.command([sys.executable, "-c", HOLD_MANY, *specs]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        opened: set[int] = set()
        deadline = time.monotonic() + 15
        while len(opened) < len(specs) and time.monotonic() < deadline:
            event = watcher.wait_for(lambda e: e["event"] == "listener-opened", deadline - time.monotonic())
            if event is not None:
                opened.add(event["port"])
        assert opened == set(range(7300, 7312)), sorted(opened)
        # Every hook (watch-started's and the twelve listeners') ran, and none outlives the timeout.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            groups = [int(line) for line in pids.read_text().split()] if pids.exists() else []
            if len(groups) == 13 and not any(_group_alive(g) for g in groups):
                break
            time.sleep(0.2)
        assert len(groups) == 13 and not any(_group_alive(g) for g in groups), groups
    finally:
        if holder is not None:
            holder.kill()
            holder.wait(timeout=10)
        err = watcher.stop()
    assert "ran too long and was killed" in err and "13 killed" in err, err


@needs_root
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_sigterm_ends_the_scans_and_removes_the_block_table(watch_lab: WatchLab) -> None:
    """A service manager stops a daemon with SIGTERM: the scan still going is ended
    (scan-ended), the drop --block added is removed, and the exit status says terminated."""
    watcher = watch_lab.watch("--scans", "--block", "1m")
    table = f"portkit_watch_{watcher.proc.pid}"
    try:
        watch_lab.scanner.run(["nmap", "-n", "-Pn", "-sS", "-p", "1-100", "-T4", TARGET], timeout=120)
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None and event["blocked"], event
        assert table in watch_lab.target.run(["nft", "list", "tables"]).stdout
        watcher.proc.send_signal(signal.SIGTERM)
        status = watcher.proc.wait(timeout=30)
        ended = watcher.wait_for(lambda e: e["event"] == "scan-ended" and e["source"] == SCANNER, 5)
        left = watch_lab.target.run(["nft", "list", "tables"]).stdout
    finally:
        watcher.stop()
        # Whatever happened above, the scanner must not stay dropped for the tests after this one.
        watch_lab.target.run(["nft", "delete", "table", "inet", table])
    assert status == 143
    assert ended is not None
    assert table not in left, left


@needs_root
def test_a_watched_namespace_that_goes_and_comes_back_is_said() -> None:
    """--netns NAME whose namespace is deleted (a container stopped): its listeners close, and
    stderr says nothing is watched there; when a namespace of that name is back, that is said
    too, and the watch goes on."""
    lab = LabNamespace("pkwg").open()
    name = lab.name
    try:
        holder = subprocess.Popen(
            lab.command([sys.executable, "-c", LISTEN, "7500"]),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        watcher = Watcher(WatchLab(lab, lab), "--interval", "0.2s")
        try:
            holder.kill()
            holder.wait(timeout=10)
            lab.close()
            closed = watcher.wait_for(lambda e: e["event"] == "listener-closed" and e["port"] == 7500, 10)
            assert closed is not None and closed["netns"] == name
            subprocess.run(["ip", "netns", "add", name], check=True, timeout=30)
            time.sleep(1.5)
        finally:
            err = watcher.stop()
    finally:
        lab.close()
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=30, check=False)
    assert f"network namespace {name} is gone" in err, err
    assert f"network namespace {name} is back" in err, err


RESOLVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(512); s.sendto(b"answer " + data, peer)
"""

LOOKUPS = r"""
import socket, sys
for n in range(40):  # each lookup from a new ephemeral port, as a stub resolver does
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); c.settimeout(5)
    c.connect((sys.argv[1], 53)); c.send(b"q%d" % n); c.recv(512); c.close()
print("answered", flush=True)
"""


@needs_root
def test_this_hosts_own_dns_lookups_are_no_udp_scan(watch_lab: WatchLab) -> None:
    """The watched host asks a resolver in the neighbouring namespace 40 times: the answers
    reach 40 ephemeral ports, and that is no scan (with --block, the resolver would be dropped)."""
    resolver = subprocess.Popen(
        watch_lab.scanner.command([sys.executable, "-c", RESOLVER, SCANNER]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    watcher = watch_lab.watch("--scans", "--block", "1m")
    try:
        assert resolver.stdout is not None and resolver.stdout.readline().strip() == "ready"
        lookups = watch_lab.target.run([sys.executable, "-c", LOOKUPS, SCANNER], timeout=60)
        assert lookups.stdout.strip() == "answered", lookups.stderr
        assert watcher.wait_for(_scan_event, 4) is None  # past the 2 s an attempt waits for an answer
    finally:
        err = watcher.stop()
        resolver.kill()
        resolver.wait(timeout=10)
    assert "portkit_watch_" not in watch_lab.target.run(["nft", "list", "tables"]).stdout, err


CONNECT_ALL = r"""
import socket, sys
for address in sys.argv[1:]:
    socket.create_connection((address, 80), 5).close()
print("connected", flush=True)
"""


@needs_root
@pytest.mark.skipif(shutil.which("nmap") is None, reason="nmap is not installed")
def test_many_hosts_reached_on_one_port_is_no_scan_but_many_refused_is(watch_lab: WatchLab) -> None:
    """A client that reaches 26 addresses on their open port 80 (a crawler, or a container
    seen as this host forwards its traffic) raises nothing; nmap probing port 22, closed on
    the same 26 addresses, is a scan of 25 hosts on one port."""
    addresses = [f"10.79.0.{n}" for n in range(100, 126)]
    for address in addresses:
        watch_lab.target.ip("addr", "add", f"{address}/24", "dev", "eth0")
    watcher = watch_lab.watch("--scans")
    try:
        reached = watch_lab.scanner.run([sys.executable, "-c", CONNECT_ALL, *addresses], timeout=60)
        assert reached.stdout.strip() == "connected", reached.stderr
        assert watcher.wait_for(_scan_event, 4) is None  # beyond the 2 s an attempt waits for an answer
        watch_lab.scanner.run(["nmap", "-n", "-Pn", "-sS", "-p", "22", "-T4", *addresses], timeout=120)
        event = watcher.wait_for(_scan_event, 15)
        assert event is not None and "hosts failed on port 22" in event["reason"], event
    finally:
        watcher.stop()
        for address in addresses:
            watch_lab.target.ip("addr", "del", f"{address}/24", "dev", "eth0")


LATE_SENDER = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9100)); s.listen(64)
print("ready", flush=True)
peers = [s.accept()[0] for _ in range(int(sys.argv[2]))]
sys.stdin.readline()  # the client has gone
for c in peers:
    c.send(b"late")
print("sent", flush=True)
sys.stdin.read()
"""

ABORTS = r"""
import socket, struct, sys
held = [socket.create_connection((sys.argv[1], 9100), 5) for _ in range(int(sys.argv[2]))]
for c in held:  # each from its own ephemeral port
    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()
print("aborted", flush=True)
"""


def _out_rsts(ns: LabNamespace) -> int:
    out = ns.run(["nstat", "-az", "TcpOutRsts"]).stdout
    return int(re.search(r"TcpOutRsts\s+(\d+)", out).group(1))  # type: ignore[union-attr]


@needs_root
def test_late_segments_of_connections_this_host_aborted_are_no_ack_scan(watch_lab: WatchLab) -> None:
    """The watched host, a client, aborts 30 connections to the neighbour and its RSTs are lost
    (dropped on the way out): the neighbour's next segments reach 30 ephemeral ports that no
    longer have a socket, and each draws the bare RST an ACK scan draws. The watch saw those
    flows open, so it raises nothing."""
    server = subprocess.Popen(
        watch_lab.scanner.command([sys.executable, "-c", LATE_SENDER, SCANNER, "30"]),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    watcher = watch_lab.watch("--scans")
    table = f"portkit_test_late_{os.getpid()}"
    try:
        assert server.stdin is not None and server.stdout is not None
        assert server.stdout.readline().strip() == "ready"
        rules = f"""
            table inet {table} {{
                chain out {{ type filter hook output priority 0; tcp dport 9100 tcp flags rst drop; }}
            }}
        """
        added = watch_lab.target.run(["nft", "-f", "-"], input=rules)
        assert added.returncode == 0, added.stderr
        aborts = watch_lab.target.run([sys.executable, "-c", ABORTS, SCANNER, "30"], timeout=60)
        assert aborts.stdout.strip() == "aborted", aborts.stderr
        assert watch_lab.target.run(["nft", "delete", "table", "inet", table]).returncode == 0
        before = _out_rsts(watch_lab.target)
        server.stdin.write("go\n")
        server.stdin.flush()
        assert server.stdout.readline().strip() == "sent"
        time.sleep(0.5)
        assert _out_rsts(watch_lab.target) - before >= 30  # the kernel's own count of them
        assert watcher.wait_for(_scan_event, 4) is None
    finally:
        watcher.stop()
        watch_lab.target.run(["nft", "delete", "table", "inet", table])
        server.kill()
        server.wait(timeout=10)
