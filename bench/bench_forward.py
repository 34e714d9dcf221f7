"""Benchmark of `portkit forward` against a direct connection, socat and HAProxy (tcp mode).

Throughput: iperf3 on loopback through each forwarder, -P 1 and -P 8, every case measured
in the same run and interleaved (round-robin), median of the runs. Burst: 5,000 concurrent
connections through portkit (and HAProxy for comparison), all of which must be served.

Request/response: redis-benchmark (SET and GET, 1 and 50 clients) against a redis-server
and wrk (2 threads, 50 keep-alive connections) against an nginx, both started here on
loopback with their own port and directory; requests/s, p50 and p99 latency, and the
forwarder's CPU per request, medians of interleaved runs. portkit runs as `portkit-auto`
(the default engine), `portkit-1loop` (the same with PORTKIT_FORWARD_LOOPS=1: one splice
loop), `portkit-splice` (the splice engine with PORTKIT_SPLICE_COPY=never: every byte
through a pipe) and `portkit-asyncio`.

    .venv/bin/python bench/bench_forward.py [--time 5] [--runs 3] [--burst 5000]
        [--only bulk|rr] [--rr-runs 3] [--rr-requests 20000] [--wrk-time 3]

Goals (issue 7): portkit >= 1.2x HAProxy and >= 0.75x direct at -P 8; the burst all served.
Issue 15: with the default engine >= 1.2x HAProxy's requests/s at 50 clients, and p50 no
worse than HAProxy's at 1 and 50 clients. Every process started here is stopped at the end
(by pid), also on failure or Ctrl-C.

CPU lines: for each case, the CPU time the iperf3 client and server used (together) and the
CPU time of the forwarder process, each per GB received, summed over the runs. Unlike
Gbit/s these barely move when other jobs share the machine, and they show where a
forwarded byte costs more than a direct one. (HAProxy's and socat's figures include their
worker threads and the forked children socat has reaped; the kernel work a forwarder causes
in other processes' softirq context is counted where it runs.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

HOST = "127.0.0.1"
# Reference cases besides the anchors: `direct-reno` is a direct connection whose client runs
# reno (what portkit's default gives its own legs within this host); `portkit-sysCC` is the
# splice engine with `--congestion system`, i.e. every leg on the kernel's default algorithm.
CLIENT_ARGS = {"direct-reno": ["-C", "reno"]}
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {HOST}:{port} after {timeout}s")


class Processes:
    """Every process the benchmark starts, stopped (TERM, then KILL) on the way out."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
        proc: subprocess.Popen[bytes] = subprocess.Popen(  # type: ignore[call-overload]
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs
        )
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    procs = Processes()
    try:
        yield procs
    finally:
        procs.stop_all()


# portkit's cases: name, --engine, extra arguments, extra environment.
PortkitCase = tuple[str, str, list[str], dict[str, str]]
BULK_CASES: tuple[PortkitCase, ...] = (
    ("portkit-splice", "splice", [], {}),
    ("portkit-asyncio", "asyncio", [], {}),
    ("portkit-sysCC", "splice", ["--congestion", "system"], {}),
)
# Request/response: the default engine (auto, one splice loop per CPU up to two, each loop
# turn in C), the same with its loop turns in Python (PORTKIT_SPLICE_TURN=python, as before
# the C turn), with one loop (PORTKIT_FORWARD_LOOPS=1), the splice engine with every byte
# through a pipe (PORTKIT_SPLICE_COPY=never, how its loop moved small messages before it
# copied them), and the asyncio engine.
RR_CASES: tuple[PortkitCase, ...] = (
    ("portkit-auto", "auto", [], {}),
    ("portkit-pyturn", "auto", [], {"PORTKIT_SPLICE_TURN": "python"}),
    ("portkit-1loop", "auto", [], {"PORTKIT_FORWARD_LOOPS": "1"}),
    ("portkit-splice", "splice", [], {"PORTKIT_SPLICE_COPY": "never"}),
    ("portkit-asyncio", "asyncio", [], {}),
)


def start_forwarders(
    procs: Processes,
    target: int,
    workdir: Path,
    pids: dict[str, int] | None = None,
    cases: tuple[PortkitCase, ...] = BULK_CASES,
    reno: bool = True,
) -> dict[str, int]:
    """Every forwarder under test, listening on its own port, all forwarding to `target`
    (and the process id of each in `pids`, when given); `reno`: the direct-reno case too."""
    ports: dict[str, int] = {"direct": target}
    if reno and congestion_settable("reno"):
        ports["direct-reno"] = target  # the same, with the client on reno (CLIENT_ARGS)
    pids = {} if pids is None else pids
    if shutil.which("socat"):
        ports["socat"] = free_port()
        pids["socat"] = procs.start(
            [
                "socat",
                f"TCP-LISTEN:{ports['socat']},bind={HOST},reuseaddr,fork,backlog=4096",
                f"TCP:{HOST}:{target}",
            ]
        ).pid
    if shutil.which("haproxy"):
        ports["haproxy"] = free_port()
        config = workdir / f"haproxy-{target}.cfg"
        config.write_text(
            "global\n  maxconn 9000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend bench\n  bind {HOST}:{ports['haproxy']}\n  default_backend target\n"
            f"backend target\n  server s1 {HOST}:{target}\n"
        )
        pids["haproxy"] = procs.start(["haproxy", "-f", str(config), "-db"]).pid
    env = {**os.environ, "PORTKIT_RUNTIME_DIR": str(workdir / "run")}
    for name, engine, extra, extra_env in cases:
        ports[name] = free_port()
        pids[name] = procs.start(
            [
                sys.executable,
                "-m",
                "portkit",
                "forward",
                f"{HOST}:{ports[name]}",
                f"{HOST}:{target}",
                "--engine",
                engine,
                "-q",
                *extra,
            ],
            env={**env, **extra_env},
        ).pid
    for name, port in ports.items():
        try:
            wait_listening(port)
        except RuntimeError as exc:
            raise RuntimeError(f"{name}: {exc}") from None
    return ports


def congestion_settable(name: str) -> bool:
    with socket.socket() as probe:
        try:
            probe.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, name.encode())
        except OSError:
            return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its exited threads and its reaped children."""
    return sum(cpu_split(pid))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, its exited threads and its reaped children."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[13])) / tick, (int(fields[12]) + int(fields[14])) / tick


def children_split() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime, usage.ru_stime


def children_cpu() -> float:
    return sum(children_split())


def iperf(name: str, port: int, streams: int, seconds: float) -> tuple[float, int]:
    """Gbit/s received by the iperf3 server through `port` (omitting the first second), and the
    bytes of the whole run."""
    failures = 0
    for _ in range(20):
        out = subprocess.run(
            [
                "iperf3",
                "-c",
                HOST,
                "-p",
                str(port),
                "-t",
                str(seconds),
                "-P",
                str(streams),
                "-J",
                "-O",
                "1",
                *CLIENT_ARGS.get(name, []),
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        doc = json.loads(out.stdout)
        if "busy" in doc.get("error", ""):
            time.sleep(0.5)  # the server is still closing the previous test
            continue
        if "error" in doc:
            failures += 1
            print(f"  ({name}: iperf3 failed: {doc['error']}; retrying)", file=sys.stderr)
            if failures == 3:
                raise RuntimeError(f"iperf3 through {name} (port {port}): {doc['error']}")
            time.sleep(1)
            continue
        received = doc["end"]["sum_received"]
        # The CPU is measured over the whole run, so count the omitted first second's bytes too.
        omitted = sum(i["sum"]["bytes"] for i in doc.get("intervals", []) if i["sum"].get("omitted"))
        return float(received["bits_per_second"]) / 1e9, int(received["bytes"]) + int(omitted)
    raise RuntimeError(f"iperf3 through port {port}: the server stayed busy")


class CpuCost:
    """CPU seconds and bytes of one case, summed over its runs."""

    def __init__(self) -> None:
        self.iperf = 0.0  # the iperf3 client and server
        self.forwarder = 0.0
        self.bytes = 0

    def __str__(self) -> str:
        gigabytes = self.bytes / 1e9 or 1
        return f"{self.iperf * 1000 / gigabytes:4.0f}+{self.forwarder * 1000 / gigabytes:4.0f}"


def throughput(
    ports: dict[str, int], pids: dict[str, int], streams: int, seconds: float, runs: int
) -> tuple[dict[str, list[float]], dict[str, CpuCost]]:
    """Gbit/s of each case, run by run, and its CPU cost (the iperf3 server is `pids["iperf3"]`)."""
    samples: dict[str, list[float]] = {name: [] for name in ports}
    costs = {name: CpuCost() for name in ports}
    for _ in range(runs):
        for name, port in ports.items():  # interleaved, so drift hits every case alike
            watched = [pids["iperf3"]] + ([pids[name]] if name in pids else [])
            before = [cpu_seconds(pid) for pid in watched] + [children_cpu()]
            gbps, received = iperf(name, port, streams, seconds)
            after = [cpu_seconds(pid) for pid in watched] + [children_cpu()]
            spent = [b - a for a, b in zip(before, after, strict=True)]
            samples[name].append(gbps)
            costs[name].bytes += received
            costs[name].iperf += spent[0] + spent[-1]  # the server, and the client (a reaped child)
            costs[name].forwarder += sum(spent[1:-1])
    return samples, costs


# --- the burst --------------------------------------------------------------------------------


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(4096):
            writer.write(data)
            await writer.drain()
    writer.close()


def echo_server_main(port: int) -> None:
    """Run in a child process: an echo server with a backlog that can take a burst."""
    _raise_nofile()

    async def main() -> None:
        server = await asyncio.start_server(_echo, HOST, port, backlog=65535)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def _burst(port: int, count: int) -> tuple[int, float]:
    """Open `count` connections at once, echo one line on each, hold them all open until every
    one has its reply (so they are truly concurrent); (served, seconds until all answered)."""
    start, hold = asyncio.Event(), asyncio.Event()
    outcome = {"served": 0, "failed": 0}

    async def client(index: int) -> None:
        await start.wait()
        writer = None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), 30)
            message = f"connection {index}\n".encode()
            writer.write(message)
            reply = await asyncio.wait_for(reader.readexactly(len(message)), 30)
            outcome["served" if reply == message else "failed"] += 1
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            outcome["failed"] += 1
        await hold.wait()
        if writer is not None:
            writer.close()

    tasks = [asyncio.create_task(client(i)) for i in range(count)]
    began = time.monotonic()
    start.set()
    while outcome["served"] + outcome["failed"] < count and time.monotonic() - began < 60:
        await asyncio.sleep(0.02)
    elapsed = time.monotonic() - began
    hold.set()
    await asyncio.gather(*tasks)
    return outcome["served"], elapsed


def burst(port: int, count: int) -> tuple[int, float]:
    return asyncio.run(_burst(port, count))


def _raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(hard, 65536) if os.geteuid() == 0 else hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
    except (OSError, ValueError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- request/response ---------------------------------------------------------------------------


def start_redis(procs: Processes, workdir: Path) -> tuple[int, int]:
    """A redis-server on loopback, on its own port and in its own directory; (port, pid)."""
    port = free_port()
    home = workdir / "redis"
    home.mkdir()
    pid = procs.start(
        ["redis-server", *f"--port {port} --bind {HOST} --dir {home} --appendonly no".split(), "--save", ""]
    ).pid
    wait_listening(port)
    return port, pid


def start_nginx(procs: Processes, workdir: Path) -> tuple[int, int]:
    """An nginx on loopback answering every request with a 14-byte body, keep-alive; (port, pid)."""
    port = free_port()
    home = workdir / "nginx"
    home.mkdir()
    temp = "".join(
        f"  {kind}_temp_path {home / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (home / "nginx.conf").write_text(
        f"daemon off;\nmaster_process off;\nworker_processes 1;\npid {home / 'nginx.pid'};\n"
        f"error_log {home / 'error.log'};\nevents {{ worker_connections 1024; }}\n"
        f"http {{\n  access_log off;\n  keepalive_requests 1000000;\n{temp}"
        f"  server {{ listen {HOST}:{port}; location / {{ return 200 'portkit bench\\n'; }} }}\n}}\n"
    )
    pid = procs.start(
        ["nginx", "-p", str(home), "-c", str(home / "nginx.conf"), "-e", str(home / "error.log")]
    ).pid
    wait_listening(port)
    return port, pid


# One sample of one case: requests/s, p50 and p99 latency in ms.
Sample = tuple[float, float, float]


def redis_bench(port: int, clients: int, requests: int) -> dict[str, Sample]:
    """redis-benchmark GET and SET through `port`: {"GET": sample, "SET": sample}."""
    out = subprocess.run(
        ["redis-benchmark", *f"-h {HOST} -p {port} -t set,get -n {requests} -c {clients} --csv".split()],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    rows = list(csv.reader(out.splitlines()))
    header = rows[0]
    rps, p50, p99 = (header.index(k) for k in ("rps", "p50_latency_ms", "p99_latency_ms"))
    return {row[0]: (float(row[rps]), float(row[p50]), float(row[p99])) for row in rows[1:]}


_WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk_bench(port: int, clients: int, seconds: float) -> Sample:
    """wrk (2 threads, keep-alive) against nginx through `port`."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds:g}s", "--latency", f"http://{HOST}:{port}/"],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)", out)
    if errors:
        raise RuntimeError(f"wrk through port {port}: {errors.group(0)}")

    def percentile(p: int) -> float:
        value, unit = re.search(rf"^\s*{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()  # type: ignore[union-attr]
        return float(value) * _WRK_UNITS[unit]

    return rps, percentile(50), percentile(99)


# CPU microseconds per request of one case: the forwarder's user and system time, and (redis
# cases) the client's and the server's user + system time.
Cost = tuple[float, float, float, float]


def request_response(
    ports: dict[str, int], pids: dict[str, int], runs: int, requests: int, seconds: float
) -> tuple[dict[str, dict[str, list[Sample]]], dict[str, dict[str, Cost]]]:
    """Every workload through every case, interleaved round by round: samples[workload][case],
    and the CPU microseconds per request, cost[workload][case] (summed over runs): the
    forwarder's user and system time, the client's and (redis) the server's CPU time."""
    redis_port, nginx_port = ports["redis"], ports["nginx"]
    server_pid = pids.get("redis")
    cases = [name for name in ports if name not in ("redis", "nginx") and "@" not in name]
    samples: dict[str, dict[str, list[Sample]]] = {}
    spent_by: dict[str, dict[str, list[float]]] = {}
    counted: dict[str, dict[str, int]] = {}

    def add(workload: str, name: str, sample: Sample, spent: list[float], count: int) -> None:
        samples.setdefault(workload, {}).setdefault(name, []).append(sample)
        total = spent_by.setdefault(workload, {}).setdefault(name, [0.0, 0.0, 0.0, 0.0])
        counted.setdefault(workload, {}).setdefault(name, 0)
        for i, value in enumerate(spent):
            total[i] += value
        counted[workload][name] += count

    def now(pid: int | None) -> list[float]:
        forwarder = cpu_split(pid) if pid else (0.0, 0.0)
        client = sum(children_split())
        server = sum(cpu_split(server_pid)) if server_pid else 0.0
        return [*forwarder, client, server]

    for _ in range(runs):
        for name in cases:
            pid = pids.get(name)
            for clients, n in ((1, max(1000, requests // 4)), (50, requests)):
                port = redis_port if name == "direct" else ports[name]
                before = now(pid)
                result = redis_bench(port, clients, n)
                spent = [(b - a) / 2 for a, b in zip(before, now(pid), strict=True)]  # GET and SET alike
                for test, sample in sorted(result.items()):
                    add(f"redis {test} -c {clients}", name, sample, spent, n)
            port = nginx_port if name == "direct" else ports[f"{name}@http"]
            http_pid = pids.get(f"{name}@http")
            before = now(http_pid)
            sample = wrk_bench(port, 50, seconds)
            spent = [b - a for a, b in zip(before, now(http_pid), strict=True)]
            spent[3] = 0.0  # the redis-server was idle: nginx's CPU is not counted
            add("http wrk -c 50", name, sample, spent, int(sample[0] * seconds))
    cost = {
        w: {
            n: tuple(v * 1e6 / counted[w][n] if counted[w][n] else 0.0 for v in spent_by[w][n])
            for n in spent_by[w]
        }
        for w in spent_by
    }
    return samples, cost  # type: ignore[return-value]


def report_request_response(
    samples: dict[str, dict[str, list[Sample]]], cost: dict[str, dict[str, Cost]], runs: int
) -> list[str]:
    """Print the medians, the ratios to HAProxy and direct; the goal verdicts.

    With 50 clients the machine's cores are all busy, so requests/s is the cores' time over the
    CPU time one request costs the client, the server and the forwarder together. The bound
    printed for portkit-auto is its requests/s if its own code (user time) cost nothing and its
    system time stayed: what any relay making the same system calls could reach."""
    print(
        f"request/response: {runs} interleaved runs per case, medians; requests/s, p50 / p99 ms; "
        "CPU us per request: forwarder user + system, client, server"
    )
    cores = os.cpu_count() or 1
    medians: dict[str, dict[str, Sample]] = {}
    for workload, by_case in samples.items():
        medians[workload] = {
            name: (
                statistics.median(s[0] for s in values),
                statistics.median(s[1] for s in values),
                statistics.median(s[2] for s in values),
            )
            for name, values in by_case.items()
        }
        print(f"{workload}:")
        for name, (rps, p50, p99) in medians[workload].items():
            user, system, client, server = cost[workload].get(name, (0.0, 0.0, 0.0, 0.0))
            spend = f"  cpu {user:4.1f} + {system:4.1f} us" if user or system else " " * 20
            spend += f"; client {client:4.1f}" + (f", server {server:4.1f}" if server else "")
            total = user + system + client + server
            busy = total * rps / 1e6 / cores
            busy_text = f"{busy:4.0%} of the cores"
            print(f"  {name:16} {rps:9.0f}/s  p50 {p50:6.3f}  p99 {p99:6.3f}{spend}; {busy_text}")
    print()
    verdicts = []
    best = "portkit-auto"
    for workload, m in medians.items():
        if best not in m:
            continue
        line = f"{best} {workload}:"
        for anchor in ("haproxy", "direct", "socat"):
            if anchor in m:
                line += f" {m[best][0] / m[anchor][0]:.2f}x {anchor}"
        if "haproxy" in m:
            line += f"; p50 {m[best][1]:.3f} vs haproxy {m['haproxy'][1]:.3f} ms"
        print(line)
        if "haproxy" not in m or not workload.startswith("redis"):
            continue
        if workload.endswith("-c 50"):
            ratio = m[best][0] / m["haproxy"][0]
            met = "MET" if ratio >= 1.2 else "NOT MET"
            user, system, client, server = cost[workload][best]
            total = user + system + client + server
            bound = m[best][0] * total / (total - user) / m["haproxy"][0] if total > user else 0.0
            verdicts.append(
                f"goal {workload} >= 1.2x haproxy requests/s: {ratio:.2f}x {met} "
                f"(with no user time in the forwarder: at most {bound:.2f}x)"
            )
        p50, p50_haproxy = m[best][1], m["haproxy"][1]
        met = "MET" if p50 <= p50_haproxy else "NOT MET"
        verdicts.append(f"goal {workload} p50 <= haproxy: {p50:.3f} vs {p50_haproxy:.3f} ms {met}")
    return verdicts


def run_request_response(args: argparse.Namespace) -> list[str]:
    """The request/response cases, with their own redis-server, nginx and forwarders."""
    missing = [tool for tool in ("redis-server", "redis-benchmark", "nginx", "wrk") if not shutil.which(tool)]
    if missing:
        print(f"request/response cases skipped: {', '.join(missing)} not installed", file=sys.stderr)
        return []
    with processes() as procs, tempfile.TemporaryDirectory(prefix="pk7-bench-") as tmp:
        workdir = Path(tmp)
        redis_port, redis_pid = start_redis(procs, workdir)
        nginx_port, _ = start_nginx(procs, workdir)
        pids: dict[str, int] = {}
        ports = start_forwarders(procs, redis_port, workdir, pids, RR_CASES, reno=False)
        http_pids: dict[str, int] = {}
        http_ports = start_forwarders(procs, nginx_port, workdir, http_pids, RR_CASES, reno=False)
        for name in http_pids:  # the same cases again, forwarding to nginx: "NAME@http"
            ports[f"{name}@http"], pids[f"{name}@http"] = http_ports[name], http_pids[name]
        ports["redis"], ports["nginx"] = redis_port, nginx_port
        pids["redis"] = redis_pid
        samples, cpu = request_response(ports, pids, args.rr_runs, args.rr_requests, args.wrk_time)
    return report_request_response(samples, cpu, args.rr_runs)


# --- report -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=float, default=5, help="seconds per iperf3 run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--burst", type=int, default=5000, help="concurrent connections in the burst")
    parser.add_argument(
        "--only",
        action="append",
        choices=("bulk", "rr"),
        help="run only these parts (repeatable): bulk = iperf3 and the burst, rr = request/response",
    )
    parser.add_argument("--rr-runs", type=int, default=3, help="request/response runs per case (median)")
    parser.add_argument(
        "--rr-requests", type=int, default=20000, help="redis-benchmark requests at -c 50 (a quarter at -c 1)"
    )
    parser.add_argument("--wrk-time", type=float, default=3, help="seconds per wrk run")
    args = parser.parse_args()
    parts = set(args.only or ("bulk", "rr"))
    verdicts = run_request_response(args) if "rr" in parts else []
    if "bulk" in parts:
        verdicts += run_bulk(args)
    print()
    for verdict in verdicts:
        print(verdict)
    return 0


def run_bulk(args: argparse.Namespace) -> list[str]:
    """iperf3 -P 1 and -P 8 through every forwarder, then the burst; the goal verdicts."""
    if not shutil.which("iperf3"):
        print("bulk cases skipped: iperf3 is not installed", file=sys.stderr)
        return []
    _raise_nofile()
    results: dict[int, dict[str, float]] = {}
    rounds: dict[int, dict[str, list[float]]] = {}
    costs: dict[int, dict[str, CpuCost]] = {}
    with processes() as procs, tempfile.TemporaryDirectory(prefix="pk7-bench-") as tmp:
        iperf_port = free_port()
        pids = {"iperf3": procs.start(["iperf3", "-s", "-B", HOST, "-p", str(iperf_port)]).pid}
        wait_listening(iperf_port)
        ports = start_forwarders(procs, iperf_port, Path(tmp), pids)
        print(f"iperf3 -t {args.time:g}, {args.runs} interleaved runs per case, median Gbit/s")
        for streams in (1, 8):
            rounds[streams], costs[streams] = throughput(ports, pids, streams, args.time, args.runs)
            results[streams] = {name: statistics.median(values) for name, values in rounds[streams].items()}
            row = "  ".join(f"{name} {value:6.2f}" for name, value in results[streams].items())
            print(f"-P {streams}: {row}")
        print("CPU ms per GB received, iperf3 client+server + forwarder:")
        for streams in (1, 8):
            row = "  ".join(f"{name} {cost}" for name, cost in costs[streams].items())
            print(f"-P {streams}: {row}")
    p8 = results[8]
    print()
    verdicts = []
    for name in ("portkit-splice", "portkit-asyncio", "portkit-sysCC"):
        for streams in (1, 8):
            r = results[streams]
            line = f"{name} -P {streams}: {r[name] / r['direct']:.2f}x direct"
            if "direct-reno" in r:
                line += f", {r[name] / r['direct-reno']:.2f}x direct-reno"
            if "haproxy" in r:
                line += f", {r[name] / r['haproxy']:.2f}x haproxy"
            if "socat" in r:
                line += f", {r[name] / r['socat']:.2f}x socat"
            print(line)
    best = "portkit-splice"
    paired = [a / b for a, b in zip(rounds[8][best], rounds[8]["direct"], strict=True)]
    print(
        f"{best} -P 8 / direct, round by round: {' '.join(f'{x:.3f}' for x in paired)} "
        f"(median {statistics.median(paired):.3f}x)"
    )
    ratio = p8[best] / p8["direct"]
    verdicts.append(f"goal -P 8 >= 0.75x direct: {ratio:.3f}x {'MET' if ratio >= 0.75 else 'NOT MET'}")
    if "haproxy" in p8:
        ratio = p8[best] / p8["haproxy"]
        verdicts.append(f"goal -P 8 >= 1.2x haproxy: {ratio:.3f}x {'MET' if ratio >= 1.2 else 'NOT MET'}")

    # The burst: its own echo target, fresh forwarders (so iperf's state is not in the way).
    with processes() as procs, tempfile.TemporaryDirectory(prefix="pk7-bench-") as tmp:
        echo_port = free_port()
        procs.start([sys.executable, __file__, "--echo-server", str(echo_port)])
        wait_listening(echo_port)
        ports = start_forwarders(procs, echo_port, Path(tmp))
        print()
        for name in ("portkit-splice", "portkit-asyncio", "haproxy", "socat"):
            if name not in ports:
                continue
            served, seconds = burst(ports[name], args.burst)
            print(f"burst {name}: {served}/{args.burst} concurrent connections served in {seconds:.2f}s")
            if name == best:
                verdicts.append(
                    f"goal burst of {args.burst} all served: {served}/{args.burst} "
                    f"{'MET' if served == args.burst else 'NOT MET'}"
                )
            time.sleep(1)  # let the previous burst's sockets close
    return verdicts


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo-server":
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            echo_server_main(int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
