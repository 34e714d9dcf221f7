"""Benchmark of `portkit forward` against a direct connection, socat and HAProxy (tcp mode).

Throughput: iperf3 on loopback through each forwarder, -P 1 and -P 8, every case measured
in the same run and interleaved (round-robin), median of the runs. Burst: 5,000 concurrent
connections through portkit (and HAProxy for comparison), all of which must be served.

    .venv/bin/python bench/bench_forward.py [--time 5] [--runs 3] [--burst 5000]

Goals (issue 7): portkit >= 1.2x HAProxy and >= 0.75x direct at -P 8; the burst all served.
Every process started here is stopped at the end, also on failure or Ctrl-C.

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
import json
import os
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


def start_forwarders(
    procs: Processes, target: int, workdir: Path, pids: dict[str, int] | None = None
) -> dict[str, int]:
    """Every forwarder under test, listening on its own port, all forwarding to `target`
    (and the process id of each in `pids`, when given)."""
    ports: dict[str, int] = {"direct": target}
    if congestion_settable("reno"):
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
        config = workdir / "haproxy.cfg"
        config.write_text(
            "global\n  maxconn 9000\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n"
            f"frontend bench\n  bind {HOST}:{ports['haproxy']}\n  default_backend target\n"
            f"backend target\n  server s1 {HOST}:{target}\n"
        )
        pids["haproxy"] = procs.start(["haproxy", "-f", str(config), "-db"]).pid
    env = {**os.environ, "PORTKIT_RUNTIME_DIR": str(workdir / "run")}
    for engine, name, extra in (
        ("splice", "portkit-splice", []),
        ("asyncio", "portkit-asyncio", []),
        ("splice", "portkit-sysCC", ["--congestion", "system"]),
    ):
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
            env=env,
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
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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


# --- report -----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--time", type=float, default=5, help="seconds per iperf3 run")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--burst", type=int, default=5000, help="concurrent connections in the burst")
    args = parser.parse_args()
    for tool in ("iperf3",):
        if not shutil.which(tool):
            print(f"bench_forward: {tool} is not installed", file=sys.stderr)
            return 2
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
    print()
    for verdict in verdicts:
        print(verdict)
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--echo-server":
        with contextlib.suppress(KeyboardInterrupt):
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
            echo_server_main(int(sys.argv[2]))
        sys.exit(0)
    sys.exit(main())
