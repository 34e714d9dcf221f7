"""Putting a scan together: options -> targets, ports, order, schedule, driver -> ScanResult."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import shlex
import signal
import socket
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from portkit.errors import UsageError
from portkit.model import Protocol, parse_port_spec
from portkit.model.services import ServiceRecord
from portkit.scan._hosts import HostTable
from portkit.scan._permutation import Permutation
from portkit.scan._results import (
    COLLAPSE_OVER,
    ExtraPorts,
    HostResult,
    PortResult,
    ScanResult,
)
from portkit.scan._schedule import Schedule
from portkit.scan._states import OUTCOMES, PortState, Reason, ScanType, outcome_codes
from portkit.scan._targets import parse_targets, read_target_file
from portkit.scan._timing import Template, template

if TYPE_CHECKING:
    from portkit.scan._discovery import Live

DEFAULT_PORTS = "top:1000"
MAX_HOSTS = 1 << 24


@dataclass
class ScanOptions:
    targets: Sequence[str] = ()
    ports: str = DEFAULT_PORTS
    scan_type: ScanType | None = None  # None: SYN with CAP_NET_RAW, else connect
    timing: int = 3
    max_retries: int | None = None
    host_timeout: float | None = None
    max_rate: float | None = None
    min_rtt: float | None = None
    max_rtt: float | None = None
    initial_rtt: float | None = None
    scan_delay: float | None = None
    seed: int | None = None
    exclude: Sequence[str] = ()
    exclude_file: str | None = None
    input_file: str | None = None
    first_address: bool = False
    skip_discovery: bool = False  # -Pn
    ping_only: bool = False  # -sn
    all_ports_listed: bool = False
    args: dict[str, object] = field(default_factory=dict)
    command: str = ""


# What an unprivileged scan does instead, and what root would add (see _discovery for -sn).
_UNPRIVILEGED_NOTE = {
    "ports": "no CAP_NET_RAW: connect scan instead of SYN (run as root for -sS, -sU, -sA)",
    "ping": "no CAP_NET_RAW: hosts found by TCP connect() to ports 80 and 443 only "
    "(root adds ICMP echo, SYN to 443 and ACK to 80)",
}
_NEEDS_RAW = {
    ScanType.SYN: "-sS needs raw sockets (root or CAP_NET_RAW): run as root, "
    "or use --connect (-sT) for a TCP connect() scan without privileges",
    ScanType.UDP: "-sU needs raw sockets (root or CAP_NET_RAW): portkit's UDP scan sends its payloads "
    "and reads the ICMP replies raw, and there is no unprivileged UDP scan (--connect covers TCP only); "
    "run as root",
    ScanType.ACK: "-sA needs raw sockets (root or CAP_NET_RAW) to send bare ACKs: run as root "
    "(--connect tells open from closed, not filtered from unfiltered)",
}


def has_raw_sockets() -> bool:
    """Whether this process may open raw sockets (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
        return True
    except PermissionError:
        return False


def resolve_ports(text: str, protocol: Protocol) -> list[int]:
    spec = parse_port_spec(text)
    ports = list(spec.ports(protocol))
    if not ports:
        raise UsageError(f"invalid port spec {text!r}: it names no {protocol} ports")
    return ports


def port_ranges(ports: Sequence[int]) -> str:
    """Sorted ports as nmap writes them: `1-1024,8080`."""
    ordered = sorted(set(ports))
    if not ordered:
        return ""
    if ordered[-1] - ordered[0] == len(ordered) - 1:
        return str(ordered[0]) if len(ordered) == 1 else f"{ordered[0]}-{ordered[-1]}"
    # Where a run of consecutive ports ends: found in C (zip, map), not port by port.
    ends = [i for i, step in enumerate(map(int.__sub__, ordered[1:], ordered), 1) if step != 1]
    parts = []
    for start, stop in zip([0, *ends], [*ends, len(ordered)], strict=True):
        first, last = ordered[start], ordered[stop - 1]
        parts.append(str(first) if first == last else f"{first}-{last}")
    return ",".join(parts)


class _Collector:
    """Where drivers record outcomes: a byte per port per host (an OUTCOMES code, 0 = unknown)."""

    def __init__(self, scan_type: ScanType, nports: int) -> None:
        self.table = outcome_codes(scan_type)
        # The same table for bytes.translate: response code byte -> outcome code byte.
        self.translation = bytes(self.table) + bytes(256 - len(self.table))
        self.nports = nports
        self.codes: dict[int, bytearray] = {}
        self.ttls: dict[int, bytearray] = {}
        self.settled = 0

    def record_batch(self, answers: list[tuple[int, int, int]]) -> None:
        """`record` for many (key, response code, ttl) at once: a driver's receive batch."""
        table, nports, codes_of = self.table, self.nports, self.codes
        host, codes, ttls = -1, bytearray(), bytearray()
        for key, rcode, ttl in answers:
            outcome = table[rcode]
            if not outcome:
                continue
            index = key - host * nports
            if not 0 <= index < nports:  # another host than the last answer's
                host, index = divmod(key, nports)
                if host not in codes_of:
                    codes_of[host] = bytearray(nports)
                    self.ttls[host] = bytearray(nports)
                codes, ttls = codes_of[host], self.ttls[host]
            if not codes[index]:
                self.settled += 1
            codes[index] = outcome
            ttls[index] = ttl if ttl < 256 else 255

    def record_columns(self, keys: list[int], rcodes: bytes, ttls: bytes) -> None:
        """`record_batch` for columns (a C driver's output); one host's answers in one tight loop."""
        if not keys:
            return
        nports = self.nports
        host = keys[0] // nports
        base = host * nports
        if not (min(keys) >= base and max(keys) < base + nports):
            self.record_batch(list(zip(keys, rcodes, ttls, strict=True)))
            return
        if host not in self.codes:
            self.codes[host] = bytearray(nports)
            self.ttls[host] = bytearray(nports)
        codes, ttls_of = self.codes[host], self.ttls[host]
        outcomes = rcodes.translate(self.translation)
        if outcomes.count(0):  # some answer settles nothing: the general loop skips it
            self.record_batch(list(zip(keys, rcodes, ttls, strict=True)))
            return
        # Scatter into the host's byte arrays in C (map over bound methods), not key by key.
        indexes = keys if not base else list(map(base.__rsub__, keys))
        self.settled += bytes(map(codes.__getitem__, indexes)).count(0)
        deque(map(codes.__setitem__, indexes, outcomes), maxlen=0)
        deque(map(ttls_of.__setitem__, indexes, ttls), maxlen=0)

    def record(self, key: int, rcode: int, ttl: int) -> None:
        outcome = self.table[rcode]
        if not outcome:
            return
        host, index = divmod(key, self.nports)
        codes = self.codes.get(host)
        if codes is None:
            codes = self.codes[host] = bytearray(self.nports)
            self.ttls[host] = bytearray(self.nports)
        if not codes[index]:
            self.settled += 1
        codes[index] = outcome
        self.ttls[host][index] = min(ttl, 255)


def _listing(
    codes: bytearray, ttls: bytearray, ports: Sequence[int], protocol: Protocol, keep_all: bool
) -> tuple[list[PortResult], list[ExtraPorts]]:
    """nmap's listing: states other than open with more than 25 ports become "Not shown" counts."""

    by_code = {code: codes.count(code) for code in set(codes) if code}
    by_state: Counter[PortState] = Counter()
    for code, n in by_code.items():
        outcome = OUTCOMES[code]
        assert outcome is not None
        by_state[outcome[0]] += n
    hidden = (
        set()
        if keep_all
        else {s for s, n in by_state.items() if n > COLLAPSE_OVER and s is not PortState.OPEN}
    )
    extras = []
    for state in sorted(hidden, key=lambda st: -by_state[st]):
        reasons: Counter[Reason] = Counter()
        numbers: dict[Reason, list[int]] = {}
        for code, n in by_code.items():
            outcome = OUTCOMES[code]
            if outcome is not None and outcome[0] is state:
                reasons[outcome[1]] += n
                # The ports with this code, picked in C: a mask byte per port, then compress.
                mask = codes.translate(bytes(int(i == code) for i in range(256)))
                numbers.setdefault(outcome[1], []).extend(itertools.compress(ports, mask))
        common = reasons.most_common()
        extras.append(
            ExtraPorts(
                state, by_state[state], tuple(common), tuple(port_ranges(numbers[r]) for r, _ in common)
            )
        )
    shown_codes = set()
    for code in by_code:
        outcome = OUTCOMES[code]
        if outcome is not None and outcome[0] not in hidden:
            shown_codes.add(code)
    from portkit.registry.nmap import table_namer

    names = table_namer()
    shown = []
    for code in shown_codes:
        listed = OUTCOMES[code]
        assert listed is not None
        # The ports with this code, found by bytearray.find in C: a 65,535-port scan lists a few.
        i = codes.find(code)
        while i >= 0:
            name = names(ports[i], protocol)
            service = ServiceRecord(name) if name else None  # like nmap: no <service> without a name
            shown.append(PortResult(ports[i], protocol, listed[0], listed[1], ttls[i], service))
            i = codes.find(code, i + 1)
    shown.sort(key=lambda p: p.port)
    return shown, extras


def _host_results(
    collector: _Collector,
    hosts: HostTable,
    ports: Sequence[int],
    protocol: Protocol,
    timed_out: set[int],
    keep_all: bool,
    up_reason: dict[int, str],
    rtts: dict[int, tuple[float, float, float]],
) -> list[HostResult]:
    """Per-host results, consuming the collector as it goes (a /16 holds both only briefly)."""
    results = []
    for index in sorted(collector.codes):
        codes, ttls = collector.codes.pop(index), collector.ttls.pop(index)
        target = hosts.targets.get(index)  # not hosts.get: no need to cache 65,536 hosts here
        if target is None:
            continue
        shown, extras = _listing(codes, ttls, ports, protocol, keep_all)
        status = "timeout" if index in timed_out else "up"
        hostnames = (target.hostname,) if target.hostname else ()
        why = up_reason.get(index, "user-set")
        srtt, rttvar, timeout = rtts.get(index, (None, None, None))
        host = HostResult(target.address, hostnames, status, why, shown, extras, rtt=srtt)
        host.rttvar, host.timeout = rttvar, timeout
        results.append(host)
    return results


ProgressHook = Callable[[int, int], None]


def run_scan(options: ScanOptions, progress: ProgressHook | None = None) -> ScanResult:
    """Run a scan; Ctrl-C stops it and returns what is known, with `interrupted` set."""
    started_wall, started = time.time(), time.monotonic()
    notes: list[str] = []
    scan_type = options.scan_type
    raw_ok = has_raw_sockets()
    if scan_type is None:
        scan_type = ScanType.SYN if raw_ok else ScanType.CONNECT
        if not raw_ok:
            notes.append(_UNPRIVILEGED_NOTE["ping" if options.ping_only else "ports"])
    elif scan_type.raw and not raw_ok:
        from portkit.errors import PermissionNeeded

        raise PermissionNeeded(_NEEDS_RAW.get(scan_type, f"{scan_type.flag} needs raw sockets: run as root"))
    protocol = Protocol.UDP if scan_type is ScanType.UDP else Protocol.TCP
    target_texts = list(options.targets)
    if options.input_file:
        target_texts += read_target_file(options.input_file)
    if not target_texts:
        raise UsageError("no targets: give addresses, networks or hostnames (or -iL FILE)")
    exclude = list(options.exclude)
    if options.exclude_file:
        exclude += read_target_file(options.exclude_file)
    targets = parse_targets(target_texts, exclude=exclude, first_address=options.first_address)
    if len(targets) > MAX_HOSTS:
        raise UsageError(f"too many targets ({len(targets)}): at most {MAX_HOSTS} hosts per scan")
    ports = [] if options.ping_only else resolve_ports(options.ports, protocol)
    tpl = template(options.timing).with_options(
        max_retries=options.max_retries,
        host_timeout=options.host_timeout,
        min_rtt=options.min_rtt,
        max_rtt=options.max_rtt,
        initial_rtt=options.initial_rtt,
        scan_delay=options.scan_delay,
    )
    hosts = HostTable(targets)
    seed = options.seed if options.seed is not None else int.from_bytes(os.urandom(8), "big")
    result = ScanResult(
        scan_type="ping" if options.ping_only else scan_type.value,
        protocol=protocol,
        ports_spec=options.ports,
        nports=len(ports),
        args={**options.args, "seed": seed, "timing": options.timing},
        command=options.command or shlex.join(["portkit", "scan", *sys.argv[2:]]),
        start=started_wall,
        hosts_total=len(targets),
        notes=notes,
        services=port_ranges(ports),
    )
    live = None
    try:
        if not options.skip_discovery:
            from portkit.scan._discovery import discover

            live = discover(hosts, raw_ok, tpl)
            if options.ping_only:
                result.hosts = [
                    HostResult(h.address, (h.hostname,) if h.hostname else (), "up", why) for h, why in live
                ]
                _attach_macs(result.hosts)
                return result
        _scan_ports(options, scan_type, hosts, ports, protocol, tpl, seed, live, result, progress)
        _attach_macs(result.hosts)
    finally:
        result.elapsed = time.monotonic() - started
    return result


def _attach_macs(hosts: list[HostResult]) -> None:
    """Each on-link host's MAC address (and its vendor), from the kernel's neighbour table."""
    if not hosts:
        return
    from portkit.scan._neighbours import mac_vendor, neighbour_macs

    macs = neighbour_macs()
    for host in hosts:
        mac = macs.get(host.address)
        if mac:
            host.mac, host.mac_vendor = mac, mac_vendor(mac)


@dataclass
class _Share:
    """What one worker found: its outcomes and its schedule's statistics."""

    codes: dict[int, bytearray]
    ttls: dict[int, bytearray]
    rtts: dict[int, tuple[float, float, float]]  # host -> (srtt, rttvar, timeout), seconds
    timed_out: set[int]
    sent: int = 0
    retransmitted: int = 0
    drops: int = 0
    cwnd: float = 0.0
    interrupted: bool = False
    io: str = "python"  # which code moved the packets: "c" (portkit.scan._rawio) or "python"


# Below this many probes a second process costs more than it saves.
PARALLEL_MIN_PROBES = 20000
MAX_WORKERS = 2


def _workers(total: int, options: ScanOptions, scan_type: ScanType) -> int:
    """Processes for a scan: big connect, SYN and ACK scans use two cores (PORTKIT_SCAN_WORKERS overrides).

    Measured on loopback (65,535 ports, 2 cores): two workers beat one for connect() scans, and
    for SYN scans too once each raw worker reads replies in batches and keeps no second socket
    (0.63 s vs 0.89 s, medians of 8); UDP scans, paced by ICMP rate limits, stay in one process.
    """
    override = os.environ.get("PORTKIT_SCAN_WORKERS", "")
    if override.isdigit() and int(override) > 0:
        return min(int(override), 16)
    if scan_type is ScanType.UDP or total < PARALLEL_MIN_PROBES or options.scan_delay or options.timing < 3:
        return 1
    return max(1, min(MAX_WORKERS, os.cpu_count() or 1))


def _run_share(
    share: int,
    shares: int,
    scan_type: ScanType,
    hosts: HostTable,
    ports: list[int],
    tpl: Template,
    perm: Permutation,
    order_hosts: list[int] | None,
    max_rate: float | None,
    progress: Callable[[int], None] | None,
) -> _Share:
    nports = len(ports)

    def order() -> Iterator[int]:
        mine = perm.share(share, shares)
        if order_hosts is None and not hosts.targets.excluded:
            # Every index is a probe: host * nports + port_index is the index itself.
            return mine
        if order_hosts is not None and len(order_hosts) == 1:
            # One live host (discovery ran): its probes are the index shifted, computed in C.
            return map((order_hosts[0] * nports).__add__, mine)
        return filtered(mine)

    def filtered(mine: Iterator[int]) -> Iterator[int]:
        for i in mine:
            h, p = divmod(i, nports)
            host = order_hosts[h] if order_hosts is not None else h
            if hosts.get(host) is not None:
                yield host * nports + p

    if shares > 1:
        # Workers split the congestion window and the rate cap: together they pace as one scan.
        tpl = dataclasses.replace(
            tpl, initial_cwnd=max(1.0, tpl.initial_cwnd / shares), max_cwnd=max(1.0, tpl.max_cwnd / shares)
        )
        max_rate = max_rate / shares if max_rate else None
    collector = _Collector(scan_type, nports)
    schedule = Schedule(order(), nports, tpl, max_rate=max_rate, now=time.monotonic())
    tick = (lambda: progress(collector.settled)) if progress else None
    interrupted = False
    io_path = "python"
    try:
        if scan_type is ScanType.CONNECT:
            from portkit.scan._connect import run_connect

            run_connect(hosts, ports, schedule, collector.record, tick, collector.record_batch)
        else:
            from portkit.scan._raw import RawScanner

            scanner = RawScanner(
                scan_type,
                hosts,
                ports,
                schedule,
                collector.record,
                our_port=_our_port(share),
                record_batch=collector.record_batch,
                record_columns=collector.record_columns,
            )
            io_path = scanner.io_path
            try:
                scanner.run(tick)
            finally:
                scanner.close()
    except KeyboardInterrupt:
        interrupted = True
    rtts = {
        h: (est.srtt, est.rttvar, est.timeout) for h, est in schedule._rtt.items() if est.srtt is not None
    }
    return _Share(
        collector.codes,
        collector.ttls,
        rtts,
        schedule.timed_out_hosts,
        schedule.sent,
        schedule.retransmitted,
        schedule.drops,
        schedule.window.cwnd,
        interrupted,
        io_path,
    )


def _our_port(share: int) -> int:
    """Distinct source-port blocks per worker, so each one's BPF filter sees only its replies."""
    return 40000 + (int.from_bytes(os.urandom(2), "big") % 1000 * 16 + share * 16 * 1000) % 20000


def _forked_shares(shares: int, run: Callable[[int], _Share]) -> list[_Share]:
    """Run `run(i)` for each share in its own forked process; collect the pickled results."""
    import pickle

    sys.stdout.flush()
    sys.stderr.flush()
    children: list[tuple[int, int]] = []
    for index in range(shares):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            os.close(read_end)
            status = 0
            try:
                data = pickle.dumps(run(index))
                with os.fdopen(write_end, "wb") as pipe:
                    pipe.write(data)
            except BaseException:
                status = 1
            os._exit(status)
        os.close(write_end)
        children.append((pid, read_end))
    results: list[_Share] = []
    interrupted = False
    for pid, read_end in children:
        chunks = []
        while True:
            try:
                chunk = os.read(read_end, 1 << 20)
            except KeyboardInterrupt:
                # A terminal's Ctrl-C reaches the workers too, a kill of this process alone does
                # not: pass it on, then keep reading what each worker has so far.
                interrupted = True
                for child, _ in children:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(child, signal.SIGINT)
                continue
            if not chunk:
                break
            chunks.append(chunk)
        os.close(read_end)
        while True:
            try:
                os.waitpid(pid, 0)
                break
            except KeyboardInterrupt:
                interrupted = True
        if chunks:
            results.append(pickle.loads(b"".join(chunks)))
    if interrupted and results:
        results[0].interrupted = True
    if len(results) != shares and not interrupted:
        from portkit.errors import PortkitError

        raise PortkitError("a scan worker process failed")
    return results


def _scan_ports(
    options: ScanOptions,
    scan_type: ScanType,
    hosts: HostTable,
    ports: list[int],
    protocol: Protocol,
    tpl: Template,
    seed: int,
    live: Live | None,
    result: ScanResult,
    progress: ProgressHook | None,
) -> None:
    nports = len(ports)
    up_reason: dict[int, str] = {}
    order_hosts: list[int] | None = None
    if live is not None:
        order_hosts = [h.index for h, _ in live]
        up_reason = {h.index: why for h, why in live}
    nhosts = len(order_hosts) if order_hosts is not None else len(hosts)
    total = nhosts * nports
    perm = Permutation(total, seed)
    shares = _workers(total, options, scan_type)

    def run(share: int) -> _Share:
        # Worker 0 drives the progress bar, extrapolating from its own share.
        hook = (lambda done: progress(min(total, done * shares), total)) if progress and share == 0 else None
        return _run_share(
            share, shares, scan_type, hosts, ports, tpl, perm, order_hosts, options.max_rate, hook
        )

    parts = [run(0)] if shares == 1 else _forked_shares(shares, run)
    collector = _Collector(scan_type, nports)
    timed_out: set[int] = set()
    rtts: dict[int, tuple[float, float, float]] = {}
    debug = [
        f"workers={shares} io={p.io} sent={p.sent} retrans={p.retransmitted} drops={p.drops} "
        f"cwnd={p.cwnd:.0f}"
        for p in parts
    ]
    while parts:
        part = parts.pop()
        for host, codes in part.codes.items():
            mine = collector.codes.get(host)
            if mine is None:
                collector.codes[host], collector.ttls[host] = codes, part.ttls[host]
                continue
            # Workers probe disjoint ports: where one has a code the other has zero, so OR merges.
            collector.codes[host] = _merge(mine, codes)
            collector.ttls[host] = _merge(collector.ttls[host], part.ttls[host])
        timed_out |= part.timed_out
        rtts.update(part.rtts)
        result.probes_sent += part.sent
        result.interrupted |= part.interrupted
        del part
    result.hosts = _host_results(
        collector, hosts, ports, protocol, timed_out, options.all_ports_listed, up_reason, rtts
    )
    if os.environ.get("PORTKIT_SCAN_DEBUG"):
        print("\n".join(debug), file=sys.stderr)


def _merge(a: bytearray, b: bytearray) -> bytearray:
    return bytearray((int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(len(a), "big"))
