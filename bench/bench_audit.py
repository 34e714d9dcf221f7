"""`portkit audit` on a host with 1,000 listeners spread over network namespaces.

Ten namespaces (portkit.testing, per-run names), each with a LAN and a WAN veth, an nftables
input chain of 30 rules, and one process holding 100 listening TCP sockets. The wall time of
`portkit audit --json --netns ...` (the ten) is compared with the manual look it replaces, run
in the same process: `ss -tlnp` and `nft list ruleset` in every namespace (which reads the
same facts but judges nothing). Goal: the audit under 2 s. Median of --runs.
Usage (root): .venv/bin/python bench/bench_audit.py [--runs N] [--namespaces N] [--per-ns N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from portkit.testing import LabNamespace, connect  # noqa: E402

GOAL_S = 2.0

HOLDER = r"""
import socket, sys
first, count = int(sys.argv[1]), int(sys.argv[2])
held = []
for port in range(first, first + count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("0.0.0.0" if port % 3 else "127.0.0.1", port))
    s.listen(4)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


def ruleset(first: int) -> str:
    rules = "\n".join(f"        tcp dport {first + 3 * n} accept" for n in range(25))
    return f"""
table inet filter {{
    chain input {{
        type filter hook input priority 0; policy drop;
        iif "lo" accept
        ct state established,related accept
        iifname "lan0" tcp dport {{ 22, 80, 443 }} accept
        icmp type echo-request accept
        tcp dport 9999 accept
{rules}
    }}
}}
"""


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
    return time.perf_counter() - start


def manual(names: list[str]) -> float:
    start = time.perf_counter()
    for name in names:
        for argv in (["ss", "-tlnp"], ["nft", "list", "ruleset"]):
            subprocess.run(
                ["ip", "netns", "exec", name, *argv], stdout=subprocess.DEVNULL, check=True, timeout=60
            )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--namespaces", type=int, default=10)
    parser.add_argument("--per-ns", type=int, default=100)
    args = parser.parse_args()
    with ExitStack() as stack:
        names = []
        for index in range(args.namespaces):
            server = stack.enter_context(LabNamespace("pkba"))
            peer = stack.enter_context(LabNamespace("pkbp"))
            connect(server, "lan0", [f"10.78.{index}.1/24"], peer, "eth0", [f"10.78.{index}.2/24"])
            connect(server, "wan0", [f"198.18.{index}.1/24"], peer, "eth1", [f"198.18.{index}.2/24"])
            server.ip("route", "add", "default", "via", f"198.18.{index}.2", "dev", "wan0")
            first = 20000
            server.nft(ruleset(first))
            holder = subprocess.Popen(
                server.command([sys.executable, "-c", HOLDER, str(first), str(args.per_ns)]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            stack.callback(holder.wait, 10)
            stack.callback(holder.kill)
            assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
            names.append(server.name)
        audit = [str(ROOT / ".venv" / "bin" / "portkit"), "audit", "--json"]
        for name in names:
            audit += ["--netns", name]
        timed(audit)  # warm caches (the registry, the page cache)
        audits, manuals = [], []
        for _ in range(args.runs):
            audits.append(timed(audit))
            manuals.append(manual(names))
        listeners = args.namespaces * args.per_ns
        a, m = statistics.median(audits), statistics.median(manuals)
        verdict = "ok" if a <= GOAL_S else "OVER"
        print(f"{listeners} listeners in {args.namespaces} namespaces, median of {args.runs}")
        print(f"{'portkit audit --json':34} {a:7.3f} s  (goal <= {GOAL_S:.0f} s: {verdict})")
        print(f"{'ss -tlnp + nft list ruleset, each':34} {m:7.3f} s")
        print(f"ratio audit / manual look: {a / m:.2f}x")


if __name__ == "__main__":
    main()
