"""Benchmark: `portkit ls/who` against ss and lsof on socket tables as hosts really hold them.

Run as root: `.venv/bin/python bench/bench_sockets.py [--connections N] [--runs N] [--mix NAME ...]`.

Mixes (each prints its table's make-up, then portkit's median against its anchor's median,
both measured alternately in the same run, and their ratio against the goal from issue 15):

- `established`: N established loopback connections (2N+1 TCP sockets), all alike.
- `timewait`: N/2 established connections plus N connections opened and closed by the client
  first, so that half the table is TIME-WAIT (the kernel interleaves those shorter records with
  the full sockets' ones in its dump).
- `60k`: 30,000 established connections (60,000 sockets, and a listener per holder pair).
- `udp`: N established connections plus N/2 UDP sockets (half of them connected); portkit lists
  TCP and UDP, so it is compared with `ss -tuan` as well as `ss -tan`.
- `host`: the host's own namespace (what other programs hold there included), plus
  `--host-connections` established loopback connections and as many TIME-WAIT ones that this
  script opens and closes itself; its holders are killed at the end, and the TIME-WAIT sockets
  (which no process holds) leave by themselves within a minute, as the kernel ages them.

Every other mix lives in a private network namespace that this script creates and deletes,
entering it itself (setns), so every command measured sees the same table. There the
ephemeral port range is widened and TIME-WAIT reuse is off (both sysctls are per namespace),
so 30,000 connections and the churn fit. Holder processes keep the sockets open, each under
the hard limit of open files (raised first when this process may, else more holders).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

NETNS = "pk3bench"
ROOT = Path(__file__).resolve().parents[1]
PORTKIT = str(Path(sys.executable).with_name("portkit"))
MIXES = ("established", "timewait", "60k", "udp", "host")
GOAL_SS = 1.0  # `ls --all --json` against `ss -tan` (or -tuan)
GOAL_SS_P = 0.8  # `ls --all --json -p` against `ss -tanp` (or -tuanp)

HOLDER = r"""
import os, resource, socket, sys
role, count = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
keep = []
if role == "server":
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    print(server.getsockname()[1], flush=True)
    while len(keep) < count:
        keep.append(server.accept()[0])
elif role == "client":
    port = int(sys.argv[3])
    while len(keep) < count:
        keep.append(socket.create_connection(("127.0.0.1", port)))
else:  # udp: bound sockets, every other one connected to the one before it
    while len(keep) < count:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        if len(keep) % 2:
            sock.connect(keep[-1].getsockname())
        keep.append(sock)
print("ready", flush=True)
sys.stdin.read()  # hold everything until the benchmark closes our stdin
"""


def _fd_budget() -> int:
    """How many sockets one holder may keep: the hard limit of open files, raised when allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in (70_000, 40_000):
        if hard >= wanted:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, wanted))  # needs CAP_SYS_RESOURCE
            hard = wanted
            break
        except (ValueError, OSError):
            continue
    return hard - 64  # stdio, the interpreter's own files


class Holders:
    """Processes holding `connections` established loopback connections (and `udp` UDP sockets)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []
        self.ports: list[str] = []

    def _start(self, *argv: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, *argv], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.processes.append(process)
        return process

    def open(self, connections: int, udp: int = 0) -> Holders:
        budget = _fd_budget()
        left = connections
        while left > 0:
            chunk = min(left, budget)
            server = self._start("server", str(chunk))
            assert server.stdout is not None
            port = server.stdout.readline().strip()
            self.ports.append(port)
            self._start("client", str(chunk), port)
            left -= chunk
        left = udp
        while left > 0:
            self._start("udp", str(min(left, budget)))
            left -= budget
        for process in self.processes:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise RuntimeError("bench_sockets: the holders could not open their sockets")
        return self

    def close(self) -> None:
        for process in self.processes:
            process.kill()
            process.wait()
        self.processes.clear()


def _churn(count: int) -> None:
    """Open and close `count` loopback connections, the client closing first: each leaves one
    TIME-WAIT socket (the client's side) for the kernel's 60 seconds."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4096)
    address = server.getsockname()
    try:
        for _ in range(count):
            client = socket.create_connection(address)
            accepted = server.accept()[0]
            client.close()
            accepted.close()
    finally:
        server.close()


def _table(netids: str = "-Htuan") -> Counter[str]:
    out = subprocess.run(["ss", netids], capture_output=True, text=True, check=True).stdout
    return Counter(f"{line.split()[0]} {line.split()[1]}" for line in out.splitlines())


def _describe(table: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in table.most_common())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _time(cmd: list[str]) -> float:
    return _measure(cmd)[0]


def _measure(cmd: list[str]) -> tuple[float, float]:
    """Wall-clock and CPU (user + system) seconds of one run of `cmd`."""
    cpu = _cpu()
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return time.perf_counter() - start, _cpu() - cpu


def _compare(name: str, ours: list[str], theirs: list[str], goal: float | None, runs: int) -> float:
    _time(ours), _time(theirs)  # warm caches
    mine, anchor, mine_cpu, anchor_cpu = [], [], [], []
    for _ in range(runs):
        wall, cpu = _measure(ours)
        mine.append(wall)
        mine_cpu.append(cpu)
        wall, cpu = _measure(theirs)
        anchor.append(wall)
        anchor_cpu.append(cpu)
    a, b = statistics.median(mine), statistics.median(anchor)
    ratio = a / b
    # CPU time: on a shared machine, waiting for a core inflates wall-clock time, not this.
    cpu_ratio = statistics.median(mine_cpu) / max(statistics.median(anchor_cpu), 1e-9)
    verdict = "" if goal is None else (f"goal <= {goal}x: " + ("met" if ratio <= goal else "NOT met"))
    anchor_name = " ".join(theirs[:2]) if theirs[0] == "ss" else theirs[0]
    print(
        f"  {name:<40} portkit {a * 1000:8.1f} ms   {anchor_name:<9} {b * 1000:8.1f} ms   "
        f"ratio {ratio:5.2f}x (cpu {cpu_ratio:5.2f}x)  {verdict}",
        flush=True,
    )
    return ratio


LS = [PORTKIT, "ls", "--all", "--json"]
LS_P = [*LS, "--processes"]


def _ls_cases(runs: int, udp: bool = False) -> None:
    _compare("ls --all --json  vs ss -tan", LS, ["ss", "-tan"], GOAL_SS, runs)
    _compare("ls --all --json -p  vs ss -tanp", LS_P, ["ss", "-tanp"], GOAL_SS_P, runs)
    if udp:
        _compare("ls --all --json  vs ss -tuan", LS, ["ss", "-tuan"], GOAL_SS, runs)
        _compare("ls --all --json -p  vs ss -tuanp", LS_P, ["ss", "-tuanp"], GOAL_SS_P, runs)


LANE_IMPORTS = (
    "import portkit.cli.entry, portkit.cli._lsquery, portkit.sockets._netlink, portkit.sockets._jsonout"
)

LIBRARY = r"""
import statistics, sys, time
from portkit.sockets import SocketQuery, list_sockets
times = []
for _ in range(int(sys.argv[1])):
    start = time.perf_counter()
    inventory = list_sockets(SocketQuery())
    text = "".join(inventory.json_chunks())
    times.append(time.perf_counter() - start)
print(statistics.median(times), len(inventory.sockets))
"""


def _library(runs: int) -> float:
    """In-process time of list_sockets + JSON text: portkit's own work, without interpreter start-up."""
    out = subprocess.run(
        [sys.executable, "-c", LIBRARY, str(runs)], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[0])


def _psutil_reference(runs: int) -> float:
    code = "import psutil; psutil.net_connections('tcp')"
    return statistics.median(_time([sys.executable, "-c", code]) for _ in range(runs))


def _floors(port: str, runs: int) -> None:
    """`who` against lsof, and what portkit costs before it reads a single socket."""
    lsof = ["lsof", "-nP", f"-iTCP:{port}"]
    _compare(f"who {port}  vs lsof -nP -iTCP:{port}", [PORTKIT, "who", port], lsof, 0.5, runs)
    # The floors, with no socket work at all: what `ls --all --json` imports (the console
    # script's Click-free lane), and the Click command line's (--version would also read
    # package metadata).
    lane = [sys.executable, "-c", LANE_IMPORTS]
    _compare("lane imports (ls --json floor)  vs ss -tan", lane, ["ss", "-tan"], None, runs)
    click = [PORTKIT, "ls", "--help"]
    _compare("ls --help (Click start-up floor)  vs ss -tan", click, ["ss", "-tan"], None, runs)
    library = _library(runs)
    ss_time = statistics.median(_time(["ss", "-tan"]) for _ in range(runs))
    print(
        f"  {'library: list_sockets + JSON, in-process':<40} portkit {library * 1000:8.1f} ms   "
        f"ss -tan   {ss_time * 1000:8.1f} ms   ratio {library / ss_time:5.2f}x  (no interpreter start-up)"
    )
    psutil_time = _psutil_reference(max(3, runs // 2))
    label = "psutil.net_connections(tcp), for reference"
    print(f"  {label:<40} {psutil_time * 1000:8.1f} ms (whole process)")


def _private_mix(mix: str, args: argparse.Namespace) -> None:
    """One mix in a namespace of its own, created, entered (this thread) and deleted here."""
    from portkit.testing import LabNamespace, inside

    n = args.connections
    connections, churn, udp = {
        "established": (n, 0, 0),
        "timewait": (n // 2, n, 0),
        "60k": (30_000, 0, 0),
        "udp": (n, 0, n // 2),
    }[mix]
    namespace = LabNamespace(args.netns).open()
    holders = Holders()
    try:
        with inside(namespace.name):
            _measure_private(mix, args, namespace.name, holders, connections, churn, udp)
    finally:
        holders.close()
        namespace.close()


def _measure_private(
    mix: str, args: argparse.Namespace, name: str, holders: Holders, connections: int, churn: int, udp: int
) -> None:
    for key, value in (("ipv4/ip_local_port_range", "1024 65535"), ("ipv4/tcp_tw_reuse", "0")):
        Path("/proc/sys/net", key).write_text(value)  # this namespace's own copy
    holders.open(connections, udp)
    _churn(churn)
    print(f"{mix}: netns {name}: {_describe(_table())}", flush=True)
    _ls_cases(args.runs, udp=bool(udp))
    if churn:
        print(f"  (TIME-WAIT sockets left at the end: {_table()['tcp TIME-WAIT']})")
    if mix == "established":
        _floors(holders.ports[0], args.runs)


def _host_mix(args: argparse.Namespace) -> None:
    """The host's namespace as it is, plus connections and TIME-WAIT sockets this script makes."""
    holders = Holders()
    try:
        holders.open(args.host_connections)
        _churn(args.host_connections)
        processes = sum(name.isdigit() for name in os.listdir("/proc"))
        print(f"host: the host namespace: {_describe(_table())}; {processes} processes", flush=True)
        _ls_cases(args.runs, udp=True)
    finally:
        holders.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--host-connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--mix", action="append", choices=MIXES, help="repeatable; default: all")
    parser.add_argument(
        "--netns",
        default=NETNS,
        help=f"prefix of the namespaces to create (default {NETNS}; made unique per run)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_sockets: needs root (it creates network namespaces)", file=sys.stderr)
        return 2
    for tool in ("ss", "lsof", "ip"):
        if shutil.which(tool) is None:
            print(f"bench_sockets: {tool} is not installed", file=sys.stderr)
            return 2
    # Measure portkit as installed: byte-compiled (pip does this; PYTHONDONTWRITEBYTECODE may not).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "portkit")], check=False)
    from portkit.sockets._netlink import ACCELERATED

    accelerator = "built" if ACCELERATED else "NOT built: pure-Python path"
    load = os.getloadavg()[0]
    print(
        f"medians of {args.runs} runs, alternating; load {load:.2f}; "
        f"C accelerator portkit.sockets._diagrows {accelerator}"
    )
    for mix in args.mix or MIXES:
        if mix == "host":
            _host_mix(args)
        else:
            _private_mix(mix, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
