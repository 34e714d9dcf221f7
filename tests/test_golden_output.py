"""Golden output: `fw check/show/lint`, `scan` (connect, SYN, --sv) and `ls` print what they printed.

Each case runs the real CLI (`python -m portkit ...`, in a separate process) on a fixed input and
compares its output with a file under tests/golden/. The files pin the JSON of every case, and the
nmap XML (`-oX`) and grepable (`-oG`) files of every scan, so that a change of the code that is
meant to keep behaviour (a refactor) can show it changed nothing a user or a program sees.

Fixed inputs:
- firewall: two rule sets of tests/corpus/firewall (an iptables-save file, a ufw directory) and
  GOLDEN_NFT below (an nft script with a set, a DNAT, a reject, a reset, a shadowed rule and an
  undecidable `limit` match), each flow checked alone and all at once (`--flows`); `fw show` and
  `fw lint` of GOLDEN_NFT. The firewall commands read files only: their output is compared
  exactly, but for the temporary directory the test writes GOLDEN_NFT to.
- scan: a network namespace this test creates (name `pkgold<pid>x<random>`, so parallel runs never
  collide), with TCP servers on 127.0.0.1 (a fixed SSH banner on 22, an HTTP server with fixed
  headers on 80, a server that accepts and closes on 7001), nothing on 7002 (closed), and an nft
  rule dropping 7003 (filtered, its listener never sees a SYN). Scanned with -sT and -sS, and
  22,80,7002 with -sS --sv, with a fixed --seed.
- ls: another namespace with a listener on 127.0.0.1:7101, an established loopback pair whose both
  ends have fixed ports (7102 <- 7202), a UDP socket on 127.0.0.1:7103 and a listener on [::1]:7104;
  `ls`, `ls --all` and `ls --all -p`.

What `normalise_*` replaces, and why (nothing else is touched):
- times: `start`/`elapsed` (JSON), `start`, `startstr`, `starttime`, `endtime`, `time`, `timestr`,
  `elapsed` and the summary's date and seconds (XML), the header/footer dates and seconds (-oG);
- the round-trip estimates of XML `<times srtt rttvar to>`: measured, different every run;
- portkit's version (XML `version`, its comment) and the nmap version the -oG header names;
- the temporary directory of the files the test writes (GOLDEN_NFT, the flows files, the -oX and
  -oG files), as `<tmp>`, also in the recorded command line (the rest of it is fixed by this test
  and stays pinned);
- in `ls`: the namespace's name and inode, socket inodes, pids (numbered in order of first
  appearance, so "the same process holds both" stays pinned), the parents of a process (they are
  whoever ran pytest), the interpreter's path and the server script (SERVERS, below) in a command
  line, and the order of the sockets (the kernel's hash order: sorted by protocol, family, state,
  ports).
JSON documents are compared as values (object key order is not pinned), shown as sorted,
indented JSON; XML and -oG files are compared as text, line by line.

A golden file missing or different fails the test with a diff. After a change that is *meant* to
change output (a new field, say), review the diff, then rewrite the files from the current code:

    PORTKIT_GOLDEN_UPDATE=1 .venv/bin/pytest -q tests/test_golden_output.py

and commit tests/golden/ with the change. The scan and ls cases need root (namespaces, nft, raw
sockets) and skip without it, as do the GOLDEN_NFT cases (nft parses a script in a private
namespace); the iptables and ufw cases run anywhere. Update as root: a skipped case writes nothing.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import needs_root
from portkit.testing import LabNamespace

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
CORPUS = "tests/corpus/firewall"
UPDATE = os.environ.get("PORTKIT_GOLDEN_UPDATE") == "1"


# --- running the CLI and comparing -------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    status: int
    stdout: str
    stderr: str


def portkit(*args: str, netns: str | None = None, timeout: float = 60) -> Run:
    """Run `python -m portkit ARGS` from the repository root (inside `netns` when given)."""
    argv = [sys.executable, "-m", "portkit", *args]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def check_golden(name: str, text: str) -> None:
    """Compare `text` with tests/golden/NAME (or rewrite the file in update mode)."""
    path = GOLDEN / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return
    if not path.is_file():
        pytest.fail(f"no golden file {path.relative_to(ROOT)}: create it with PORTKIT_GOLDEN_UPDATE=1")
    expected = path.read_text()
    if text != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"golden/{name}",
                tofile="now",
            )
        )
        hint = ""
        if name.endswith(".json") and _only_added(json.loads(expected), json.loads(text)):
            hint = " (fields were only added, which docs/json.md allows: review, then update)"
        pytest.fail(f"output differs from golden/{name}{hint}:\n{diff[:6000]}", pytrace=False)


def _only_added(old: Any, new: Any) -> bool:
    """Whether `new` is `old` with object members added (and nothing else changed)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return old.keys() <= new.keys() and all(_only_added(old[key], new[key]) for key in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_only_added(a, b) for a, b in zip(old, new, strict=True))
    return bool(old == new)


def json_golden(run: Run, doc: Any | None = None) -> str:
    """The golden text of a JSON-printing run: its exit status and its document, keys sorted."""
    body = json.loads(run.stdout) if doc is None else doc
    return json.dumps({"exit_status": run.status, "output": body}, indent=2, sort_keys=True) + "\n"


# --- firewall: files in, text out; compared exactly ---------------------------------------------

GOLDEN_NFT = """\
table inet golden {
\tset trusted {
\t\ttype ipv4_addr
\t\telements = { 192.0.2.10 }
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy drop;
\t\tct state established,related accept
\t\tiifname "lo" accept
\t\ttcp dport 22 ip saddr @trusted accept
\t\ttcp dport { 80, 443 } accept
\t\ttcp dport 8080 limit rate 5/second accept
\t\tudp dport 53 reject
\t\ttcp dport 25 reject with tcp reset
\t\ttcp dport 23 accept
\t\ttcp dport 23 drop
\t}
\tchain forward {
\t\ttype filter hook forward priority filter; policy drop;
\t}
}
table ip nat {
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat;
\t\ttcp dport 2222 dnat to 10.0.0.2:22
\t}
}
"""

NFT_FLOWS = [
    "tcp 192.0.2.10:50000 -> 10.0.0.1:22 in eth0 state new",  # accepted by the set
    "tcp 198.51.100.7:50000 -> 10.0.0.1:22 in eth0 state new",  # not in the set: policy drop
    "tcp 198.51.100.7:50000 -> 10.0.0.1:8080 in eth0 state new",  # limit: uncertain
    "udp 198.51.100.7:50000 -> 10.0.0.1:53 in eth0 state new",  # reject (port unreachable)
    "tcp 198.51.100.7:50000 -> 10.0.0.1:25 in eth0 state new",  # reject with tcp reset
    "tcp 198.51.100.7:50000 -> 10.0.0.1:443 in eth0 state established",
    "tcp 198.51.100.7:50000 -> 10.0.0.1:2222 in eth0 state new",  # DNAT to another host
]

# (golden name, rules file relative to ROOT, flows): the iptables and ufw sets are real ones
# (sources in tests/corpus/firewall/README.md).
FW_CASES = [
    (
        "moby",
        f"{CORPUS}/moby-usernet-portmap.rules",
        [
            "tcp 203.0.113.5:51000 -> 192.0.2.2:80 in eth0 out bridge1 state new",
            "tcp 203.0.113.5:51000 -> 172.17.0.2:5432 in eth0 out docker0 state new",
            "tcp 172.17.0.2:40000 -> 198.51.100.9:443 in docker0 out eth0 state new",
            "tcp 203.0.113.5:51000 -> 192.0.2.2:80 in eth0 out bridge1 state established",
        ],
    ),
    (
        "ufw",
        f"{CORPUS}/ufw-default",
        [
            "tcp 203.0.113.5:51000 -> 10.0.0.2:22 in eth0 state new",
            "udp 203.0.113.5:5353 -> 224.0.0.251:5353 in eth0 state new",
            "tcp 203.0.113.5:51000 -> 10.0.0.2:22 in eth0 state established",
            "tcp 127.0.0.1:51000 -> 127.0.0.1:8080 in lo state new",
        ],
    ),
]


@pytest.fixture(scope="module")
def nft_rules(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("golden") / "golden.nft"
    path.write_text(GOLDEN_NFT)
    return path


def _flows_file(tmp_path: Path, flows: list[str]) -> Path:
    path = tmp_path / "flows"
    path.write_text("".join(f"{flow}\n" for flow in flows))
    return path


def _stable_paths(text: str, tmp: Path) -> str:
    """The temporary directory of a rules or flows file, as `<tmp>`."""
    return text.replace(str(tmp), "<tmp>")


@pytest.mark.parametrize(("name", "rules", "flows"), FW_CASES, ids=[case[0] for case in FW_CASES])
def test_fw_check_corpus(name: str, rules: str, flows: list[str], tmp_path: Path) -> None:
    for index, flow in enumerate(flows):
        run = portkit("fw", "check", "--rules", rules, flow, "--json")
        check_golden(f"fw-check-{name}-{index}.json", json_golden(run))
    batch = portkit("fw", "check", "--rules", rules, "--flows", str(_flows_file(tmp_path, flows)), "--json")
    doc = json.loads(_stable_paths(batch.stdout, tmp_path))
    check_golden(f"fw-check-{name}-flows.json", json_golden(batch, doc))


# portkit has nft parse a script inside a private network namespace: CAP_NET_ADMIN.
@needs_root
def test_fw_check_nft(nft_rules: Path, tmp_path: Path) -> None:
    tmp = nft_rules.parent
    for index, flow in enumerate(NFT_FLOWS):
        run = portkit("fw", "check", "--rules", str(nft_rules), flow, "--json")
        check_golden(
            f"fw-check-nft-{index}.json", json_golden(run, json.loads(_stable_paths(run.stdout, tmp)))
        )
    batch = portkit(
        "fw", "check", "--rules", str(nft_rules), "--flows", str(_flows_file(tmp_path, NFT_FLOWS)), "--json"
    )
    doc = json.loads(_stable_paths(_stable_paths(batch.stdout, tmp), tmp_path))
    check_golden("fw-check-nft-flows.json", json_golden(batch, doc))


# portkit has nft parse a script inside a private network namespace: CAP_NET_ADMIN.
@needs_root
def test_fw_show_and_lint_nft(nft_rules: Path) -> None:
    tmp = nft_rules.parent
    show = portkit("fw", "show", str(nft_rules), "--json")
    check_golden("fw-show-nft.json", json_golden(show, json.loads(_stable_paths(show.stdout, tmp))))
    lint = portkit("fw", "lint", str(nft_rules), "--no-ssh", "--fail-on", "never", "--json")
    check_golden("fw-lint-nft.json", json_golden(lint, json.loads(_stable_paths(lint.stdout, tmp))))


# --- namespaces and the servers inside them -----------------------------------------------------

# One process serving every listener of a lab; prints "ready" once all are bound, runs until its
# stdin closes. MODE "scan": the scan lab's servers; MODE "ls": the ls lab's fixed sockets.
SERVERS = r"""
import socket, sys, threading

SSH = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
HTTP = (b"HTTP/1.1 200 OK\r\nServer: Apache/2.4.57 (Debian)\r\nContent-Type: text/html\r\n"
        b"Content-Length: 48\r\nConnection: close\r\n\r\n"
        b"<html><head><title>golden</title></head></html>")

def ssh(conn):
    with conn:
        conn.settimeout(10)
        try:
            conn.sendall(SSH)
            while conn.recv(4096):
                pass
        except OSError:
            pass

def http(conn):
    with conn:
        conn.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data and b"\n\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            conn.sendall(HTTP)
        except OSError:
            pass

def close(conn):
    conn.close()

def listen(port):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock

def serve(port, handler):
    sock = listen(port)
    def loop():
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()

held = []
if sys.argv[1] == "scan":
    for port, handler in ((22, ssh), (80, http), (7001, close), (7003, close)):
        serve(port, handler)
else:
    held.append(listen(7101))
    server = listen(7102)
    client = socket.socket()
    client.bind(("127.0.0.1", 7202))
    client.connect(("127.0.0.1", 7102))
    accepted, _ = server.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 7103))
    v6 = socket.socket(socket.AF_INET6)
    v6.bind(("::1", 7104))
    v6.listen(8)
    held += [server, client, accepted, udp, v6]
print("ready", flush=True)
sys.stdin.read()
"""

SCAN_NFT = """\
table inet golden {
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 7003 drop
\t}
}
"""


@dataclass(frozen=True)
class Netns:
    name: str


def _sh(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, input=stdin, timeout=30)


@pytest.fixture(scope="module")
def netns_factory() -> Iterator[Any]:
    """Make namespaces (loopback up, optional nft rules, a server process); all are removed, and
    their servers stopped, when the module ends, pass or fail."""
    made: list[tuple[LabNamespace, subprocess.Popen[str] | None]] = []

    def make(mode: str, nft: str | None = None) -> Netns:
        ns = LabNamespace("pkgold")
        name = ns.name
        made.append((ns, None))
        ns.open()
        if nft is not None:
            ns.nft(nft)
        server = subprocess.Popen(
            ["ip", "netns", "exec", name, sys.executable, "-c", SERVERS, mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        made[-1] = (ns, server)
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line == "ready\n", f"the {mode} servers did not start (said {line!r})"
        return Netns(name)

    try:
        yield make
    finally:
        for ns, server in reversed(made):
            if server is not None:
                assert server.stdin is not None
                server.stdin.close()
                try:
                    server.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait(timeout=5)
            ns.close()


# --- scan ----------------------------------------------------------------------------------------

SCAN_PORTS = "22,80,7001,7002,7003"
# Fixed probe order, few retries and a short timeout so the filtered port costs little time.
SCAN_FIXED = ["--seed", "7", "--max-retries", "1", "--max-rtt-timeout", "500ms", "--reason"]


def normalise_scan_json(doc: dict[str, Any], tmp: Path) -> dict[str, Any]:
    scan = doc["scan"]
    scan["start"] = "<start>"
    scan["elapsed"] = "<elapsed>"
    scan["command"] = scan["command"].replace(str(tmp), "<tmp>")
    return doc


# The attributes that vary between runs, by element (a service's `version` is pinned).
_XML_VARYING = {
    "nmaprun": ("start", "startstr", "version"),
    "host": ("starttime", "endtime"),
    "times": ("srtt", "rttvar", "to"),
    "finished": ("time", "timestr", "elapsed"),
}
_DATE = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"


def _normalise_element(match: re.Match[str]) -> str:
    element = match.group(0)
    for attr in _XML_VARYING[match.group(1)]:
        element = re.sub(rf'(?<= ){attr}="[^"]*"', f'{attr}="<{attr}>"', element)
    return element


def normalise_scan_xml(text: str, tmp: Path) -> str:
    text = re.sub(r"<(" + "|".join(_XML_VARYING) + r")\b[^>]*>", _normalise_element, text)
    text = text.replace(str(tmp), "<tmp>")  # after: `<tmp>` has a `>`
    text = re.sub(
        r"<!-- portkit \S+ scan initiated " + _DATE, "<!-- portkit <version> scan initiated <date>", text
    )
    return re.sub(
        r'summary="Nmap done at ' + _DATE + r"; (.*?) scanned in [\d.]+ seconds",
        r'summary="Nmap done at <date>; \1 scanned in <seconds> seconds',
        text,
    )


def normalise_scan_grepable(text: str, tmp: Path) -> str:
    text = text.replace(str(tmp), "<tmp>")
    text = re.sub(
        r"^# Nmap \S+ scan initiated " + _DATE, "# Nmap <version> scan initiated <date>", text, flags=re.M
    )
    return re.sub(
        r"^# Nmap done at " + _DATE + r" -- (.*) scanned in [\d.]+ seconds",
        r"# Nmap done at <date> -- \1 scanned in <seconds> seconds",
        text,
        flags=re.M,
    )


@pytest.fixture(scope="module")
def scan_lab(netns_factory: Any) -> Netns:
    lab: Netns = netns_factory("scan", SCAN_NFT)
    return lab


SCAN_CASES = [
    ("scan-connect", ["-sT", "-p", SCAN_PORTS]),
    ("scan-syn", ["-sS", "-p", SCAN_PORTS]),
    ("scan-sv", ["-sS", "--sv", "-p", "22,80,7002"]),
]


@needs_root
@pytest.mark.parametrize(("name", "args"), SCAN_CASES, ids=[case[0] for case in SCAN_CASES])
def test_scan(name: str, args: list[str], scan_lab: Netns, tmp_path: Path) -> None:
    xml, grepable = tmp_path / "out.xml", tmp_path / "out.gnmap"
    run = portkit(
        "scan",
        "127.0.0.1",
        *args,
        *SCAN_FIXED,
        "--json",
        "-oX",
        str(xml),
        "-oG",
        str(grepable),
        netns=scan_lab.name,
    )
    assert run.status == 0, run.stderr
    check_golden(f"{name}.json", json_golden(run, normalise_scan_json(json.loads(run.stdout), tmp_path)))
    check_golden(f"{name}.xml", normalise_scan_xml(xml.read_text(), tmp_path))
    check_golden(f"{name}.gnmap", normalise_scan_grepable(grepable.read_text(), tmp_path))


# --- ls ------------------------------------------------------------------------------------------


# The interpreter's path differs between checkouts; the server script is pinned in this file.
_CMDLINE_MARKS = {sys.executable: "<python>", SERVERS: "<SERVERS>"}


def normalise_ls(doc: dict[str, Any], netns: str) -> dict[str, Any]:
    """Pids numbered by first appearance; inodes, the namespace and process ancestry replaced;
    sockets sorted (their order is the kernel's hash-table order, which varies by namespace)."""
    pids: dict[int, str] = {}

    def pid(value: int) -> str:
        return pids.setdefault(value, f"<pid{len(pids) + 1}>")

    for ns in doc["namespaces"]:
        if ns["name"] == netns:
            ns["name"] = "<netns>"
        ns["inode"] = "<inode>"
    doc["sockets"].sort(
        key=lambda s: (s["protocol"], s["family"], s["state"], s["local"]["port"], s["remote"]["port"])
    )
    for sock in doc["sockets"]:
        if sock["netns"] == netns:
            sock["netns"] = "<netns>"
        sock["inode"] = "<inode>" if sock["inode"] else 0
        for proc in sock["processes"]:
            proc["pid"] = pid(proc["pid"])
    processes = {}
    for key, proc in doc.get("processes", {}).items():
        proc["pid"] = pid(proc["pid"])
        proc["parents"] = "<parents>"
        proc["cmdline"] = [_CMDLINE_MARKS.get(arg, arg) for arg in proc["cmdline"]]
        processes[pid(int(key))] = proc
    if "processes" in doc:
        doc["processes"] = processes
    return doc


@pytest.fixture(scope="module")
def ls_lab(netns_factory: Any) -> Netns:
    lab: Netns = netns_factory("ls")
    return lab


@needs_root
@pytest.mark.parametrize("args", [[], ["--all"], ["--all", "-p"]], ids=["listeners", "all", "all-processes"])
def test_ls(args: list[str], ls_lab: Netns) -> None:
    run = portkit("ls", "--netns", ls_lab.name, *args, "--json")
    assert run.status == 0, run.stderr
    name = "ls" + "".join(arg.replace("--", "-") for arg in args) + ".json"
    check_golden(name, json_golden(run, normalise_ls(json.loads(run.stdout), ls_lab.name)))


def test_golden_files_are_all_used() -> None:
    """Every file in tests/golden/ belongs to a case above (a renamed case leaves no stale file)."""
    expected = {f"fw-check-{name}-{i}.json" for name, _, flows in FW_CASES for i in range(len(flows))}
    expected |= {f"fw-check-{name}-flows.json" for name, _, _ in FW_CASES}
    expected |= {f"fw-check-nft-{i}.json" for i in range(len(NFT_FLOWS))} | {"fw-check-nft-flows.json"}
    expected |= {"fw-show-nft.json", "fw-lint-nft.json"}
    expected |= {f"{name}.{ext}" for name, _ in SCAN_CASES for ext in ("json", "xml", "gnmap")}
    expected |= {"ls.json", "ls-all.json", "ls-all-p.json"}
    if UPDATE:
        for stale in {p.name for p in GOLDEN.iterdir()} - expected:
            (GOLDEN / stale).unlink()
        return
    assert {p.name for p in GOLDEN.iterdir()} == expected


def test_normalisers_replace_only_what_varies(tmp_path: Path) -> None:
    """A service's version, a state's TTL and the scan's arguments survive; times and rtts do not."""
    xml = (
        f'<nmaprun scanner="portkit" args="portkit scan -oX {tmp_path}/a.xml" start="1796626919" '
        'startstr="Mon Dec  7 07:01:59 2026" version="0.1.0" xmloutputversion="1.05">\n'
        '<host starttime="1796626919" endtime="1796626920">\n'
        '<state state="open" reason="syn-ack" reason_ttl="64"/>\n'
        '<service name="ssh" product="OpenSSH" version="9.2p1" method="probed" conf="10"/>\n'
        '<times srtt="154" rttvar="5000" to="100000"/>\n'
        '<finished time="1796626920" timestr="Mon Dec  7 07:02:00 2026" summary="Nmap done at '
        'Mon Dec  7 07:02:00 2026; 1 IP address (1 host up) scanned in 0.09 seconds" elapsed="0.09"/>\n'
    )
    assert normalise_scan_xml(xml, tmp_path) == (
        '<nmaprun scanner="portkit" args="portkit scan -oX <tmp>/a.xml" start="<start>" '
        'startstr="<startstr>" version="<version>" xmloutputversion="1.05">\n'
        '<host starttime="<starttime>" endtime="<endtime>">\n'
        '<state state="open" reason="syn-ack" reason_ttl="64"/>\n'
        '<service name="ssh" product="OpenSSH" version="9.2p1" method="probed" conf="10"/>\n'
        '<times srtt="<srtt>" rttvar="<rttvar>" to="<to>"/>\n'
        '<finished time="<time>" timestr="<timestr>" summary="Nmap done at <date>; 1 IP address '
        '(1 host up) scanned in <seconds> seconds" elapsed="<elapsed>"/>\n'
    )
    grepable = (
        "# Nmap 7.93 scan initiated Mon Dec  7 07:01:59 2026 as: portkit scan -p 22\n"
        "Host: 127.0.0.1 ()\tPorts: 22/open/tcp//ssh//OpenSSH 9.2p1/\n"
        "# Nmap done at Mon Dec  7 07:01:59 2026 -- 1 IP address (1 host up) scanned in 0.09 seconds\n"
    )
    assert normalise_scan_grepable(grepable, tmp_path) == (
        "# Nmap <version> scan initiated <date> as: portkit scan -p 22\n"
        "Host: 127.0.0.1 ()\tPorts: 22/open/tcp//ssh//OpenSSH 9.2p1/\n"
        "# Nmap done at <date> -- 1 IP address (1 host up) scanned in <seconds> seconds\n"
    )
    assert _only_added({"a": [{"b": 1}]}, {"a": [{"b": 1, "c": 2}], "d": 3})
    assert not _only_added({"a": [{"b": 1}]}, {"a": [{"b": 2}]})
    assert not _only_added({"a": [1, 2]}, {"a": [1]})
