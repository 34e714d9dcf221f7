"""Start-up cost of `portkit explain 22`: wall time of the whole command, median of runs.

Anchor: the bare interpreter (`python -c pass`) measured in the same run, so the ratio
shows what portkit adds; the goal is under 150 ms wall for the whole command.
Usage: .venv/bin/python bench/bench_startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PORTKIT = ROOT / ".venv" / "bin" / "portkit"
GOAL_MS = 150.0


def wall_ms(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    wall_ms([str(PORTKIT), "explain", "22"], 3)  # warm the page cache
    bare = wall_ms([sys.executable, "-c", "pass"], args.runs)
    cases = {
        "portkit explain 22": [str(PORTKIT), "explain", "22"],
        "portkit explain 22 --json": [str(PORTKIT), "explain", "22", "--json"],
        "portkit --version": [str(PORTKIT), "--version"],
    }
    print(f"{'case':32} {'median ms':>10} {'vs python -c pass':>18}  goal")
    print(f"{'python -c pass':32} {bare:10.1f} {1.0:17.2f}x")
    for name, argv in cases.items():
        ms = wall_ms(argv, args.runs)
        verdict = "ok" if ms <= GOAL_MS else "OVER"
        print(f"{name:32} {ms:10.1f} {ms / bare:17.2f}x  <= {GOAL_MS:.0f} ms: {verdict}")


if __name__ == "__main__":
    main()
