"""Start-up cost of the one-shot commands: wall time of the whole command, median of runs.

Cases: `portkit explain 22`, `portkit who PORT` (a loopback listener this script opens, so
there is a holder to report), `portkit ls` (this host's listeners with their processes), each
also with --json, and `portkit --version` (Click's own floor). The anchor is the bare
interpreter (`python -c pass`) measured in the same run, alternating with each case, so the
ratio shows what portkit adds on this machine at this moment; the goal (issue 15) is at most
60 ms wall for each of explain, who and ls on a quiet machine. CPU time (user + system of the
child) is printed beside it: waiting for a shared core inflates wall time, not CPU time.
Usage: .venv/bin/python bench/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORTKIT = ROOT / ".venv" / "bin" / "portkit"
GOAL_MS = 60.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(argv: list[str]) -> tuple[float, float]:
    cpu = _cpu()
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - start) * 1000, (_cpu() - cpu) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    # Measure portkit as installed: byte-compiled (pip does this; PYTHONDONTWRITEBYTECODE may not).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "src" / "portkit")], check=False)
    listener = socket.create_server(("127.0.0.1", 0))
    port = str(listener.getsockname()[1])
    bare = [sys.executable, "-c", "pass"]
    cases = {
        "portkit explain 22": ([str(PORTKIT), "explain", "22"], True),
        "portkit explain 22 --json": ([str(PORTKIT), "explain", "22", "--json"], False),
        "portkit who PORT": ([str(PORTKIT), "who", port], True),
        "portkit who PORT --json": ([str(PORTKIT), "who", port, "--json"], False),
        "portkit ls": ([str(PORTKIT), "ls"], True),
        "portkit ls --json": ([str(PORTKIT), "ls", "--json"], False),
        "portkit --version": ([str(PORTKIT), "--version"], False),
    }
    for argv, _goal in cases.values():
        _once(argv)  # warm the page cache
    load = os.getloadavg()[0]
    print(f"medians of {args.runs} runs, each case alternating with python -c pass; load {load:.2f}")
    print(f"{'case':28} {'wall ms':>8} {'cpu ms':>7} {'pass ms':>8} {'vs pass':>8}  goal")
    for name, (argv, goal) in cases.items():
        walls, cpus, anchors = [], [], []
        for _ in range(args.runs):
            wall, cpu = _once(argv)
            walls.append(wall)
            cpus.append(cpu)
            anchors.append(_once(bare)[0])
        ms, anchor = statistics.median(walls), statistics.median(anchors)
        verdict = (f"<= {GOAL_MS:.0f} ms: " + ("ok" if ms <= GOAL_MS else "OVER")) if goal else ""
        cpu = statistics.median(cpus)
        print(f"{name:28} {ms:8.1f} {cpu:7.1f} {anchor:8.1f} {ms / anchor:7.2f}x  {verdict}")
    listener.close()


if __name__ == "__main__":
    main()
