"""Benchmark: `portkit ls/who` against ss and lsof over 10,000 established loopback connections.

Run as root: `.venv/bin/python bench/bench_sockets.py [--connections N] [--runs N]`.

The connections live in a private network namespace (pk3-bench) that this script creates and
deletes, so the figures do not depend on what else runs on the machine. This process enters
that namespace itself (setns), so every command measured below sees the same socket table.
A holder process (one listener, N client sockets and N accepted sockets) keeps them open.
Each case runs portkit and its anchor tool alternately, several times, and prints the medians
and their ratio against the goal from issue 3.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

NETNS = "pk3bench"
ROOT = Path(__file__).resolve().parents[1]
PORTKIT = str(Path(sys.executable).with_name("portkit"))

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
else:
    port = int(sys.argv[3])
    while len(keep) < count:
        keep.append(socket.create_connection(("127.0.0.1", port)))
print("ready", flush=True)
sys.stdin.read()  # hold everything until the benchmark closes our stdin
"""


def _holder(role: str, count: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, role, str(count), *extra],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


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
    print(
        f"{name:<46} portkit {a * 1000:8.1f} ms   {theirs[0]:<5} {b * 1000:8.1f} ms   "
        f"ratio {ratio:5.2f}x (cpu {cpu_ratio:5.2f}x)  {verdict}"
    )
    return ratio


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument(
        "--netns",
        default=NETNS,
        help=f"prefix of the namespace to create (default {NETNS}; made unique per run)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_sockets: needs root (it creates a network namespace)", file=sys.stderr)
        return 2
    for tool in ("ss", "lsof", "ip"):
        if shutil.which(tool) is None:
            print(f"bench_sockets: {tool} is not installed", file=sys.stderr)
            return 2
    # Measure portkit as installed: byte-compiled (pip does this; PYTHONDONTWRITEBYTECODE may not).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "portkit")], check=False)
    from portkit.testing import LabNamespace, enter_namespace

    namespace = LabNamespace(args.netns).open()
    netns = namespace.name
    holders: list[subprocess.Popen[str]] = []
    try:
        enter_namespace(netns)
        # One process per side: 10,000 sockets each stay under the usual 20,000 fd hard limit.
        server = _holder("server", args.connections)
        holders.append(server)
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        client = _holder("client", args.connections, port)
        holders.append(client)
        for process in holders:
            assert process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                print("bench_sockets: the holders could not open their connections", file=sys.stderr)
                return 1
        rows = subprocess.run(["ss", "-Htan"], capture_output=True, text=True, check=True).stdout.count("\n")
        from portkit.sockets._netlink import ACCELERATED

        accelerator = "built" if ACCELERATED else "NOT built: pure-Python path"
        print(
            f"{rows} TCP sockets in netns {netns} ({args.connections} established connections, "
            f"listener :{port}); "
            f"medians of {args.runs} runs; C accelerator portkit.sockets._diagrows {accelerator}"
        )
        _compare(
            "ls --all --json  vs ss -tan", [PORTKIT, "ls", "--all", "--json"], ["ss", "-tan"], 1.2, args.runs
        )
        _compare(
            "ls --all --json -p  vs ss -tanp",
            [PORTKIT, "ls", "--all", "--json", "--processes"],
            ["ss", "-tanp"],
            1.0,
            args.runs,
        )
        _compare(
            f"who {port}  vs lsof -nP -iTCP:{port}",
            [PORTKIT, "who", port],
            ["lsof", "-nP", f"-iTCP:{port}"],
            0.5,
            args.runs,
        )
        # The floors, with no socket work at all: what `ls --all --json` imports (the console
        # script's Click-free lane), and the Click command line's (--version would also read
        # package metadata).
        _compare(
            "lane imports (ls --json floor)  vs ss -tan",
            [sys.executable, "-c", LANE_IMPORTS],
            ["ss", "-tan"],
            None,
            args.runs,
        )
        _compare(
            "ls --help (Click start-up floor)  vs ss -tan",
            [PORTKIT, "ls", "--help"],
            ["ss", "-tan"],
            None,
            args.runs,
        )
        library = _library(args.runs)
        ss_time = statistics.median(_time(["ss", "-tan"]) for _ in range(args.runs))
        print(
            f"{'library: list_sockets + JSON, in-process':<46} portkit {library * 1000:8.1f} ms   "
            f"ss    {ss_time * 1000:8.1f} ms   ratio {library / ss_time:5.2f}x  (no interpreter start-up)"
        )
        psutil_time = _psutil_reference(max(3, args.runs // 2))
        print(
            f"{'psutil.net_connections(tcp), for reference':<46} {psutil_time * 1000:8.1f} ms (whole process)"
        )
    finally:
        for process in holders:
            process.kill()
            process.wait()
        namespace.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
