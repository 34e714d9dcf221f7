"""`portkit diagnose` against the manual checklist it replaces, case by case, in one run.

    flock /tmp/portkit-bench.lock .venv/bin/python bench/bench_diagnose.py [--runs 5] [--only bind|reach]

Needs root. For every case the wall time of a fresh `portkit diagnose ... --json` process (as
a user runs it) is timed next to the checklist a person would walk instead, interleaved:

- bind (`diagnose --bind`): one lab namespace (loopback, with 192.0.2.1/24 added), each bind
  fault made in it; portkit runs inside it (`ip netns exec`), and so does the checklist, in
  one shell: `ss -tanp 'sport = :PORT'; sysctl` of the four port sysctls; `ip -br addr`.
- reach (`diagnose HOST:PORT --from CLIENT`): every case of the reach fault matrix
  (`portkit.testing.FAULT_CASES` in its client / router / server lab), injected, timed and
  taken out again; the checklist is `ss -tlnp; nft list ruleset` on the server and
  `nc -zv -w 2 HOST PORT; ip route get HOST` on the client, in sequence.

Medians of `--runs` runs each, their ratio, and the issue's targets: a healthy target answers
in <= 0.3 s, a fault in <= 1.5 s (FILTERED_UPSTREAM: plus the probe timeout, which the user
sets). The checklist only gathers; reading its output is the person's work and is not counted,
so the ratio flatters the checklist. Each case also checks that portkit gives the expected code.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from portkit.testing import LabNamespace

LAB4 = "192.0.2.1"
HEALTHY_TARGET = 0.3
FAULT_TARGET = 1.5

_HOLD = """
import socket, sys, time
sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
sock.bind((sys.argv[1], int(sys.argv[2])))
sock.listen(64)
print("ready", flush=True)
time.sleep(600)
"""

_TIME_WAIT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind((host, port))
listener.listen()
client = socket.create_connection((host, port))
served, _ = listener.accept()
served.close()
client.recv(1)
client.close()
listener.close()
"""


@dataclass
class Case:
    kind: str  # "bind" or "reach"
    name: str
    portkit: list[str]  # the whole command line, `--json` included
    expect: str
    checklist: list[str]  # the manual checklist's command line
    target: float  # seconds: HEALTHY_TARGET, FAULT_TARGET, or a probe timeout on top
    before: Callable[[], None] | None = None  # run before each timing (a TIME-WAIT expires)
    portkit_times: list[float] = field(default_factory=list)
    checklist_times: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)


def in_namespace(ns: LabNamespace, args: list[str]) -> list[str]:
    """`portkit diagnose ARGS --json` run inside the namespace (`ip netns exec`)."""
    return ns.command([sys.executable, "-m", "portkit", "diagnose", *args, "--json"])


def bind_case(
    ns: LabNamespace,
    name: str,
    args: list[str],
    expect: str,
    port: int,
    before: Callable[[], None] | None = None,
) -> Case:
    target = HEALTHY_TARGET if expect == "OK" else FAULT_TARGET
    checklist = ns.command(["sh", "-c", bind_checklist(port)])
    return Case("bind", name, in_namespace(ns, args), expect, checklist, target, before)


def bind_checklist(port: int) -> str:
    sysctls = " ".join(
        f"net.ipv4.{name}"
        for name in (
            "ip_unprivileged_port_start",
            "ip_local_port_range",
            "ip_local_reserved_ports",
            "ip_nonlocal_bind",
        )
    )
    return f"ss -tanp 'sport = :{port}'; sysctl {sysctls}; ip -br addr"


def reach_checklist(host: str, port: int) -> str:
    return f"ss -tlnp; nft list ruleset; nc -zv -w 2 {host} {port}; ip route get {host}"


class Lab:
    def __init__(self, ns: LabNamespace) -> None:
        self.ns = ns
        self.holders: list[subprocess.Popen[str]] = []

    def hold(self, host: str, port: int) -> None:
        proc = subprocess.Popen(
            self.ns.command([sys.executable, "-c", _HOLD, host, str(port)]), stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        self.holders.append(proc)

    def time_wait(self, host: str, port: int) -> None:
        self.ns.run(["ss", "-K", "-tn", "state", "time-wait", f"( sport = :{port} )"])
        done = self.ns.run([sys.executable, "-c", _TIME_WAIT, host, str(port)])
        if done.returncode != 0:
            raise SystemExit(f"cannot make a TIME-WAIT socket: {done.stderr.strip()}")

    def close(self) -> None:
        for proc in self.holders:
            proc.kill()
            proc.wait(timeout=10)


def has_reach() -> bool:
    import portkit.diagnose

    return hasattr(portkit.diagnose, "diagnose_reach")


def bind_cases(lab: Lab) -> list[Case]:
    ns = lab.ns
    lab.hold("0.0.0.0", 8081)
    lab.hold("0.0.0.0", 8082)
    return [
        bind_case(ns, "healthy", ["--bind", f"{LAB4}:8080"], "OK", 8080),
        bind_case(ns, "PORT_IN_USE", ["--bind", "8081"], "PORT_IN_USE", 8081),
        bind_case(ns, "ADDRESS_CONFLICT", ["--bind", f"{LAB4}:8082"], "ADDRESS_CONFLICT", 8082),
        bind_case(
            ns,
            "TIME_WAIT_ONLY",
            ["--bind", f"{LAB4}:8083"],
            "TIME_WAIT_ONLY",
            8083,
            lambda: lab.time_wait(LAB4, 8083),
        ),
        bind_case(ns, "PRIVILEGED_PORT", ["--bind", "80", "--user", "nobody"], "PRIVILEGED_PORT", 80),
        bind_case(ns, "EPHEMERAL_RANGE", ["--bind", "40000"], "EPHEMERAL_RANGE", 40000),
        bind_case(ns, "ADDRESS_NOT_LOCAL", ["--bind", "198.51.100.7:8084"], "ADDRESS_NOT_LOCAL", 8084),
    ]


def run_bind(runs: int) -> list[Case]:
    with LabNamespace("pkbd") as ns:
        ns.ip("addr", "add", f"{LAB4}/24", "dev", "lo")
        lab = Lab(ns)
        try:
            cases = bind_cases(lab)
            for case in cases:
                run_case(case, runs)
        finally:
            lab.close()
    return cases


def run_reach(runs: int) -> list[Case]:
    """Each case of the reach fault matrix (portkit.testing), injected, timed, taken out again."""
    import portkit.testing

    # Looked up by name: the reach fault matrix arrives in portkit.testing with the reach diagnosis.
    fault_cases: Any = getattr(portkit.testing, "FAULT_CASES", None)
    reach_lab: Any = getattr(portkit.testing, "reach_lab", None)
    if fault_cases is None or reach_lab is None:
        print("reach: the reach fault matrix (portkit.testing.FAULT_CASES) is not on this branch; skipped")
        return []
    if not has_reach():
        print("reach: portkit.diagnose.diagnose_reach is not on this branch; skipped")
        return []
    import shutil

    cases: list[Case] = []
    with reach_lab() as lab:
        for index, fault in enumerate(fault_cases):
            missing = [tool for tool in getattr(fault, "needs", ()) if shutil.which(tool) is None]
            if missing:
                print(f"reach {fault.name}: skipped, {', '.join(missing)} not installed")
                continue
            port = 23000 + 10 * index
            target = fault.inject(lab, port)
            try:
                origin: LabNamespace = getattr(lab, target.origin)
                host = f"[{target.host}]" if ":" in target.host else target.host
                args = [f"{host}:{target.port}" + ("/udp" if target.udp else ""), "--from", origin.name]
                args += ["--timeout", str(fault.timeout)]
                if target.expect:
                    args += ["--expect", target.expect]
                portkit = [sys.executable, "-m", "portkit", "diagnose", *args, "--json"]
                nc = f"nc -zv{'u' if target.udp else ''} -w 2 {target.host} {target.port}"
                checklist = [
                    "sh",
                    "-c",
                    f"ip netns exec {lab.server.name} sh -c 'ss -tlnp; nft list ruleset'; "
                    f"ip netns exec {origin.name} sh -c '{nc}; ip route get {target.host}'",
                ]
                limit = HEALTHY_TARGET if fault.code == "OK" else FAULT_TARGET
                if fault.code == "FILTERED_UPSTREAM":
                    limit += fault.timeout  # bounded by the probe timeout the user sets
                case = Case("reach", fault.name, portkit, fault.code, checklist, limit)
                run_case(case, runs)
                cases.append(case)
            finally:
                fault.undo(lab, port)
    return cases


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    return time.perf_counter() - started, done


def run_case(case: Case, runs: int) -> None:
    for _ in range(runs):
        # Interleaved, so both see the same machine load.
        if case.before is not None:
            case.before()
        seconds, done = timed(case.portkit)
        case.portkit_times.append(seconds)
        try:
            case.codes.append(json.loads(done.stdout)["code"])
        except (ValueError, KeyError):
            case.codes.append(f"error: {done.stderr.strip()[:80]}")
        if case.before is not None:
            case.before()
        seconds, _ = timed(case.checklist)
        case.checklist_times.append(seconds)


def report(cases: list[Case]) -> bool:
    print(f"{'case':<34} {'code':<18} {'portkit':>9} {'checklist':>10} {'ratio':>6}  target")
    good = True
    for case in cases:
        ours = statistics.median(case.portkit_times)
        theirs = statistics.median(case.checklist_times)
        target = case.target
        right = all(code == case.expect for code in case.codes)
        fast = ours <= target
        good = good and right and fast
        code = case.codes[0] if right else f"WRONG {sorted(set(case.codes))}"
        label = f"{case.kind} {case.name}"
        print(
            f"{label:<34} {code:<18} {ours:>8.3f}s {theirs:>9.3f}s {ours / theirs:>6.2f}  "
            f"<= {target:g} s {'ok' if fast else 'MISSED'}"
        )
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("bind", "reach"))
    options = parser.parse_args()
    cases: list[Case] = []
    if options.only in (None, "bind"):
        cases += run_bind(options.runs)
    if options.only in (None, "reach"):
        cases += run_reach(options.runs)
    good = report(cases)
    print(f"runs per case: {options.runs} (medians); all codes right and within target: {good}")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
