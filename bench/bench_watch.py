"""`portkit watch --scans` at rest on a host with 20,000 sockets: its CPU, and how fast it reports.

The bench opens 10,000 loopback TCP connections (20,000 sockets) in the host namespace, runs
`portkit watch --scans --json` for --seconds, opens and closes a listener now and then, and
reads the watcher's CPU time (user + system, from wait4) and each listener-opened event's delay.
Anchor: the manual way of seeing the same, `ss -tlnp` once a second for the same time, its CPU
measured the same way. Goals: under 2 % of one core, every event within 1 s.
Usage (root): .venv/bin/python bench/bench_watch.py [--seconds S] [--pairs N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOAL_CPU = 0.02
GOAL_DELAY = 1.0


PAIRS = r"""
import socket, sys
count = int(sys.argv[1])
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(4096)
held = []
for _ in range(count):
    held.append(socket.create_connection(listener.getsockname()))
    held.append(listener.accept()[0])
print("ready", flush=True)
sys.stdin.read()
"""


def open_pairs(count: int) -> list[subprocess.Popen[str]]:
    """`count` connections held by child processes (each under the per-process file limit)."""
    per_child = 4000
    children = []
    while count > 0:
        n = min(per_child, count)
        child = subprocess.Popen(
            [sys.executable, "-c", PAIRS, str(n)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        children.append(child)
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        count -= n
    return children


def run_watch(argv: list[str], rest: float, listeners: int) -> tuple[float, list[float]]:
    """The watcher's CPU over `rest` seconds at rest, then the delay of `listeners` listener events."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: list[tuple[float, dict[str, object]]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic(), json.loads(line)))

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 30
    while not any(doc.get("event") == "watch-started" for _t, doc in lines) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # past the first full reading
    before, seen = _cpu(proc.pid), len(lines)
    time.sleep(rest)
    at_rest = _cpu(proc.pid) - before
    busy = len(lines) - seen
    if busy:
        print(f"note: {busy} events arrived while at rest: something else on this machine was active")
    delays: list[float] = []
    for _ in range(listeners):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        probe.listen(1)
        port = probe.getsockname()[1]
        opened = time.monotonic()
        limit = opened + 3
        while time.monotonic() < limit:
            hit = [t for t, doc in lines if doc.get("event") == "listener-opened" and doc.get("port") == port]
            if hit:
                delays.append(hit[0] - opened)
                break
            time.sleep(0.005)
        probe.close()
        time.sleep(0.7)
    proc.send_signal(2)
    proc.wait(timeout=20)
    return at_rest, delays


def _cpu(pid: int) -> float:
    """User + system seconds of a running process (/proc/PID/stat, in clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ss_cpu(seconds: float) -> float:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        subprocess.run(["ss", "-tlnp"], stdout=subprocess.DEVNULL, check=True)
        time.sleep(max(0.0, min(1.0, end - time.monotonic())))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--pairs", type=int, default=10000)
    parser.add_argument("--listeners", type=int, default=10)
    args = parser.parse_args()
    children = open_pairs(args.pairs)
    try:
        argv = [str(ROOT / ".venv" / "bin" / "portkit"), "watch", "--scans", "--json"]
        cpu, delays = run_watch(argv, args.seconds, args.listeners)
        anchor = ss_cpu(args.seconds)
        share = cpu / args.seconds
        print(
            f"{2 * args.pairs + len(children)} sockets held in the host namespace, {args.seconds:.0f} s each"
        )
        verdict = "ok" if share <= GOAL_CPU else "OVER"
        print(f"{'portkit watch --scans':24} CPU {cpu:6.3f} s = {share:6.2%} of a core (<= 2 %: {verdict})")
        print(f"{'ss -tlnp every second':24} CPU {anchor:6.3f} s = {anchor / args.seconds:6.2%} of a core")
        print(f"ratio watch / ss polling: {cpu / anchor:.2f}x" if anchor else "ss used no measurable CPU")
        if delays:
            late = "ok" if max(delays) <= GOAL_DELAY else "OVER"
            print(
                f"listener-opened delay: median {statistics.median(delays) * 1000:.0f} ms, "
                f"max {max(delays) * 1000:.0f} ms over {len(delays)} listeners (goal <= 1 s: {late})"
            )
        else:
            print("listener-opened delay: no event seen (FAIL)")
    finally:
        for child in children:
            child.kill()
            child.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
