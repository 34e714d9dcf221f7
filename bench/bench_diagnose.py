"""`portkit diagnose` against the manual checklist it replaces, case by case, in one run.

    flock /tmp/portkit-bench.lock .venv/bin/python bench/bench_diagnose.py [--runs 5] [--only bind|reach]

Needs root: everything happens in one lab namespace (loopback, with 192.0.2.1/24 added), with
each fault made there. For every case the wall time of a fresh `portkit diagnose ... --json`
process (as a user runs it, entered with `ip netns exec`) is timed next to the checklist a
person would walk instead, run in the same namespace in one shell:

- reach (`diagnose HOST:PORT`): `ss -tlnp; nft list ruleset; nc -zv -w 2 HOST PORT; ip route get HOST`
- bind (`diagnose --bind`): `ss -tanp 'sport = :PORT'; sysctl` of the four port sysctls; `ip -br addr`

Medians of `--runs` runs each, their ratio, and the issue's targets: a healthy target answers
in <= 0.3 s, a fault in <= 1.5 s. The checklist only gathers; reading its output is the
person's work and is not counted, so the ratio flatters the checklist. Each case also checks
that the code portkit gives is the expected one. The reach cases run when the reach
diagnosis (`portkit.diagnose.diagnose_reach`) is present.
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
    args: list[str]  # after `portkit diagnose`
    expect: str
    checklist: str  # the shell line of the manual checklist
    before: Callable[[], None] | None = None  # run before each timing (a TIME-WAIT expires)
    portkit_times: list[float] = field(default_factory=list)
    checklist_times: list[float] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)

    @property
    def healthy(self) -> bool:
        return self.expect == "OK"


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

    try:
        portkit.diagnose.diagnose_reach  # noqa: B018
    except AttributeError:
        return False
    return True


def make_cases(lab: Lab, only: str | None) -> list[Case]:
    cases: list[Case] = []
    if only in (None, "bind"):
        lab.hold("0.0.0.0", 8081)
        lab.hold("0.0.0.0", 8082)
        cases += [
            Case("bind", "healthy", ["--bind", f"{LAB4}:8080"], "OK", bind_checklist(8080)),
            Case("bind", "PORT_IN_USE", ["--bind", "8081"], "PORT_IN_USE", bind_checklist(8081)),
            Case(
                "bind",
                "ADDRESS_CONFLICT",
                ["--bind", f"{LAB4}:8082"],
                "ADDRESS_CONFLICT",
                bind_checklist(8082),
            ),
            Case(
                "bind",
                "TIME_WAIT_ONLY",
                ["--bind", f"{LAB4}:8083"],
                "TIME_WAIT_ONLY",
                bind_checklist(8083),
                before=lambda: lab.time_wait(LAB4, 8083),
            ),
            Case(
                "bind",
                "PRIVILEGED_PORT",
                ["--bind", "80", "--user", "nobody"],
                "PRIVILEGED_PORT",
                bind_checklist(80),
            ),
            Case("bind", "EPHEMERAL_RANGE", ["--bind", "40000"], "EPHEMERAL_RANGE", bind_checklist(40000)),
            Case(
                "bind",
                "ADDRESS_NOT_LOCAL",
                ["--bind", "198.51.100.7:8084"],
                "ADDRESS_NOT_LOCAL",
                bind_checklist(8084),
            ),
        ]
    if only in (None, "reach"):
        if not has_reach():
            print("reach: portkit.diagnose.diagnose_reach is not on this branch; reach cases skipped")
        else:
            lab.hold("127.0.0.1", 9000)
            lab.hold(LAB4, 9002)
            lab.hold(LAB4, 9003)
            lab.ns.nft(
                "table inet benchfw {\n  chain input { type filter hook input priority 0;\n"
                "    tcp dport 9002 drop\n    tcp dport 9003 reject with tcp reset\n  }\n}\n"
            )
            cases += [
                Case("reach", "healthy", ["127.0.0.1:9000"], "OK", reach_checklist("127.0.0.1", 9000)),
                Case(
                    "reach",
                    "NO_LISTENER",
                    ["127.0.0.1:9001"],
                    "NO_LISTENER",
                    reach_checklist("127.0.0.1", 9001),
                ),
                Case(
                    "reach", "FW_INPUT_DROP", [f"{LAB4}:9002"], "FW_INPUT_DROP", reach_checklist(LAB4, 9002)
                ),
                Case(
                    "reach",
                    "FW_INPUT_REJECT",
                    [f"{LAB4}:9003"],
                    "FW_INPUT_REJECT",
                    reach_checklist(LAB4, 9003),
                ),
            ]
    return cases


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)
    return time.perf_counter() - started, done


def run_case(lab: Lab, case: Case, runs: int) -> None:
    portkit = lab.ns.command([sys.executable, "-m", "portkit", "diagnose", *case.args, "--json"])
    checklist = lab.ns.command(["sh", "-c", case.checklist])
    for _ in range(runs):
        # Interleaved, so both see the same machine load.
        if case.before is not None:
            case.before()
        seconds, done = timed(portkit)
        case.portkit_times.append(seconds)
        try:
            case.codes.append(json.loads(done.stdout)["code"])
        except (ValueError, KeyError):
            case.codes.append(f"error: {done.stderr.strip()[:80]}")
        if case.before is not None:
            case.before()
        seconds, _ = timed(checklist)
        case.checklist_times.append(seconds)


def report(cases: list[Case]) -> bool:
    print(f"{'case':<24} {'code':<18} {'portkit':>9} {'checklist':>10} {'ratio':>6}  target")
    good = True
    for case in cases:
        ours = statistics.median(case.portkit_times)
        theirs = statistics.median(case.checklist_times)
        target = HEALTHY_TARGET if case.healthy else FAULT_TARGET
        right = all(code == case.expect for code in case.codes)
        fast = ours <= target
        good = good and right and fast
        code = case.codes[0] if right else f"WRONG {sorted(set(case.codes))}"
        label = f"{case.kind} {case.name}"
        print(
            f"{label:<24} {code:<18} {ours:>8.3f}s {theirs:>9.3f}s {ours / theirs:>6.2f}  "
            f"<= {target} s {'ok' if fast else 'MISSED'}"
        )
    return good


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", choices=("bind", "reach"))
    options = parser.parse_args()
    with LabNamespace("pkbd") as ns:
        ns.ip("addr", "add", f"{LAB4}/24", "dev", "lo")
        lab = Lab(ns)
        try:
            cases = make_cases(lab, options.only)
            for case in cases:
                run_case(lab, case, options.runs)
            good = report(cases)
        finally:
            lab.close()
    print(f"runs per case: {options.runs} (medians); all codes right and within target: {good}")
    sys.exit(0 if good else 1)


if __name__ == "__main__":
    main()
