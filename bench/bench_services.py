"""portkit's service detection vs `nmap -sV`, on the same real servers, in the same run.

Starts the test lab (tests/fixtures_services.py: nginx plain and TLS, OpenSSH, Redis,
PostgreSQL, vsftpd, dnsmasq over TCP and UDP, Mosquitto, Memcached, Python's http.server,
a silent listener, an accept-then-close listener) on unusual loopback ports, then runs, several times:

    portkit scan 127.0.0.1 -p PORTS --sv --json          nmap -sV -Pn -n -p PORTS 127.0.0.1 -oX -
    portkit scan 127.0.0.1 -sU -p DNS --sv --json        nmap -sU -sV -Pn -n -p DNS 127.0.0.1 -oX -

Goals (issue 5): portkit names at least every service nmap names (same service name, and the
product too when nmap has one), with wall time <= 0.1x nmap's for the whole set (sum of the
TCP and UDP medians; each case's own ratio is printed too).

    .venv/bin/python bench/bench_services.py [--runs 5] [--nmap-runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fixtures_services import LOOPBACK, ServiceLab, service_lab  # noqa: E402

GOAL = 0.1

Found = dict[int, tuple[str, str, str]]  # port -> (service name with tunnel, product, version)


def _timed(argv: list[str]) -> tuple[float, str]:
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=1800, stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - start
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return elapsed, proc.stdout


def run_portkit(ports: str, udp: bool) -> tuple[float, Found]:
    argv = [sys.executable, "-m", "portkit", "scan", LOOPBACK, "-p", ports, "--sv", "--json"]
    if udp:
        argv.insert(5, "-sU")
    elapsed, out = _timed(argv)
    found: Found = {}
    for host in json.loads(out)["hosts"]:
        for port in host["ports"]:
            svc = port.get("service") or {}
            if svc.get("method") != "probed":
                continue
            name = svc["name"] if not svc.get("tunnel") else f"{svc['tunnel']}/{svc['name']}"
            found[port["port"]] = (name, svc.get("product") or "", svc.get("version") or "")
    return elapsed, found


def run_nmap(ports: str, udp: bool) -> tuple[float, Found]:
    argv = ["nmap", "-sV", "-Pn", "-n", "-p", ports, LOOPBACK, "-oX", "-"]
    if udp:
        argv.insert(1, "-sU")
    elapsed, out = _timed(argv)
    found: Found = {}
    for port in ET.fromstring(out).iter("port"):
        svc = port.find("service")
        if svc is None or svc.get("method") != "probed":
            continue
        name = svc.get("name", "")
        if svc.get("tunnel"):
            name = f"{svc.get('tunnel')}/{name}"
        found[int(port.get("portid", "0"))] = (name, svc.get("product", ""), svc.get("version", ""))
    return elapsed, found


def _same(nmap: tuple[str, str, str], ours: tuple[str, str, str] | None) -> bool:
    """portkit names the service nmap named (and a product when nmap has one)."""
    if ours is None:
        return False
    name_ok = nmap[0] == ours[0] or (nmap[0] == "tcpwrapped" and ours[0] == "tcpwrapped")
    product_ok = not nmap[1] or bool(ours[1])
    return name_ok and product_ok


def bench(lab: ServiceLab, runs: int, nmap_runs: int) -> bool:
    tcp = ",".join(str(s.port) for s in lab.servers.values() if s.protocol == "tcp")
    udp = ",".join(str(s.port) for s in lab.servers.values() if s.protocol == "udp")
    names = {(s.port, s.protocol): s.key for s in lab.servers.values()}
    ok = True
    totals = [0.0, 0.0]
    print(f"lab: {len(lab.servers)} servers on 127.0.0.1; TCP {tcp}; UDP {udp}", flush=True)
    for label, ports, is_udp in (("TCP", tcp, False), ("UDP", udp, True)):
        ours_times, nmap_times = [], []
        ours_found: Found = {}
        nmap_found: Found = {}
        for _ in range(runs):
            elapsed, ours_found = run_portkit(ports, is_udp)
            ours_times.append(elapsed)
        for _ in range(nmap_runs):
            elapsed, nmap_found = run_nmap(ports, is_udp)
            nmap_times.append(elapsed)
        ours_med, nmap_med = statistics.median(ours_times), statistics.median(nmap_times)
        ratio = ours_med / nmap_med
        print(f"\n{label} service detection, {len(ports.split(','))} ports", flush=True)
        print(f"  {'port':>6} {'server':<12} {'nmap -sV':<44} portkit --sv")
        proto = "udp" if is_udp else "tcp"
        for port in sorted({int(p) for p in ports.split(",")}):
            theirs = nmap_found.get(port)
            ours = ours_found.get(port)
            mark = "" if theirs is None or _same(theirs, ours) else "   <-- MISSED"
            if mark:
                ok = False
            t = " ".join(x for x in theirs if x) if theirs else "-"
            o = " ".join(x for x in ours if x) if ours else "-"
            print(f"  {port:>6} {names.get((port, proto), '?'):<12} {t[:44]:<44} {o}{mark}")
        missed = [p for p, t in nmap_found.items() if not _same(t, ours_found.get(p))]
        print(f"  nmap named {len(nmap_found)}, portkit {len(ours_found)}; portkit missed {len(missed)}")
        print(
            f"  wall time, median: portkit {ours_med:.2f} s ({runs} runs), nmap {nmap_med:.2f} s "
            f"({nmap_runs} runs); ratio {ratio:.3f}",
            flush=True,
        )
        totals[0] += ours_med
        totals[1] += nmap_med
    ratio = totals[0] / totals[1]
    verdict = "OK" if ratio <= GOAL else "MISSED"
    print(
        f"\nwhole set: portkit {totals[0]:.2f} s, nmap {totals[1]:.2f} s; "
        f"ratio {ratio:.3f} (goal <= {GOAL}) {verdict}"
    )
    return ok and ratio <= GOAL


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="portkit runs per case (median)")
    parser.add_argument("--nmap-runs", type=int, default=3, help="nmap runs per case (median)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (the lab starts sshd, postgres as its user, ...)", file=sys.stderr)
        return 2
    with service_lab() as lab:
        return 0 if bench(lab, args.runs, args.nmap_runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
