"""Putting a scan together: options -> targets, ports, order, schedule, driver -> ScanResult."""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from portkit.errors import UsageError
from portkit.model import Protocol, parse_port_spec
from portkit.scan._hosts import HostTable
from portkit.scan._permutation import Permutation
from portkit.scan._results import HostResult, PortResult, ScanResult, ServiceInfo, collapse
from portkit.scan._schedule import Schedule
from portkit.scan._states import STATES, PortState, Reason, Response, ScanType, classify
from portkit.scan._targets import parse_targets, read_target_file
from portkit.scan._timing import template

DEFAULT_PORTS = "top:1000"
MAX_HOSTS = 1 << 24

# Compact per-port storage: one byte per port, an index into this list (0 = not yet known).
_OUTCOMES: list[tuple[PortState, Reason] | None] = [None, *sorted(set(STATES.values()), key=str)]
_CODE = {outcome: i for i, outcome in enumerate(_OUTCOMES) if outcome is not None}


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


class _Collector:
    """Where drivers record outcomes: a byte per port per host, turned into results at the end."""

    def __init__(self, scan_type: ScanType, nports: int) -> None:
        self.scan_type = scan_type
        self.nports = nports
        self.codes: dict[int, bytearray] = {}
        self.ttls: dict[int, bytearray] = {}
        self.settled = 0

    def record(self, key: int, response: Response, ttl: int) -> None:
        outcome = classify(self.scan_type, response)
        if outcome is None:
            return
        host, index = divmod(key, self.nports)
        codes = self.codes.get(host)
        if codes is None:
            codes = self.codes[host] = bytearray(self.nports)
            self.ttls[host] = bytearray(self.nports)
        if not codes[index]:
            self.settled += 1
        codes[index] = _CODE[outcome]
        self.ttls[host][index] = min(ttl, 255)


def _host_results(
    collector: _Collector,
    hosts: HostTable,
    ports: Sequence[int],
    protocol: Protocol,
    timed_out: set[int],
    keep_all: bool,
) -> list[HostResult]:
    from portkit.registry import default_registry

    registry = default_registry()
    results = []
    for index in sorted(collector.codes):
        host = hosts.get(index)
        if host is None:
            continue
        codes, ttls = collector.codes[index], collector.ttls[index]
        listed: list[PortResult] = []
        for i, code in enumerate(codes):
            outcome = _OUTCOMES[code]
            if outcome is None:
                continue
            state, reason = outcome
            listed.append(PortResult(ports[i], protocol, state, reason, ttls[i]))
        shown, extras = collapse(listed, keep_all)
        shown = [
            PortResult(
                p.port, p.protocol, p.state, p.reason, p.ttl,
                service=ServiceInfo(registry.name_for(p.port, protocol) or "unknown"),
            )
            for p in shown
        ]
        status = "timeout" if index in timed_out else "up"
        results.append(
            HostResult(host.address, (host.hostname,) if host.hostname else (), status, "user-set", shown, extras)
        )
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
            notes.append("no CAP_NET_RAW: connect scan instead of SYN (run as root for -sS, -sU, -sA)")
    elif scan_type.raw and not raw_ok:
        from portkit.errors import PermissionNeeded

        raise PermissionNeeded(f"{scan_type.flag} needs raw sockets: run as root (or use --connect)")
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
    seed = options.seed if options.seed is not None else secrets.randbits(64)
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
    )
    live = None
    try:
        if not options.skip_discovery:
            from portkit.scan._discovery import discover

            live = discover(hosts, raw_ok, tpl)
            if options.ping_only:
                result.hosts = [HostResult(h.address, (h.hostname,) if h.hostname else (), "up", why)
                                for h, why in live]
                return result
        _scan_ports(options, scan_type, hosts, ports, protocol, tpl, seed, live, result, progress)
    finally:
        result.elapsed = time.monotonic() - started
    return result


def _scan_ports(
    options: ScanOptions,
    scan_type: ScanType,
    hosts: HostTable,
    ports: list[int],
    protocol: Protocol,
    tpl: object,
    seed: int,
    live: list[tuple[object, str]] | None,
    result: ScanResult,
    progress: ProgressHook | None,
) -> None:
    from portkit.scan._timing import Template

    assert isinstance(tpl, Template)
    nports = len(ports)
    up_reason: dict[int, str] = {}
    if live is not None:
        host_indices = [h.index for h, _ in live]  # type: ignore[attr-defined]
        up_reason = {h.index: why for h, why in live}  # type: ignore[attr-defined]
        order_hosts = host_indices
    else:
        order_hosts = None
    nhosts = len(order_hosts) if order_hosts is not None else len(hosts)
    total = nhosts * nports
    perm = Permutation(total, seed)

    def order() -> object:
        for i in perm:
            h, p = divmod(i, nports)
            host = order_hosts[h] if order_hosts is not None else h
            if hosts.get(host) is not None:
                yield host * nports + p

    collector = _Collector(scan_type, nports)
    schedule = Schedule(order(), nports, tpl, max_rate=options.max_rate, now=time.monotonic())  # type: ignore[arg-type]
    tick = (lambda: progress(collector.settled, total)) if progress else None
    try:
        if scan_type is ScanType.CONNECT:
            from portkit.scan._connect import run_connect

            run_connect(hosts, ports, schedule, collector.record, tick)
        else:
            from portkit.scan._raw import RawScanner

            scanner = RawScanner(scan_type, hosts, ports, schedule, collector.record)
            try:
                scanner.run(tick)
            finally:
                scanner.close()
    except KeyboardInterrupt:
        result.interrupted = True
    result.probes_sent = schedule.sent
    result.hosts = _host_results(collector, hosts, ports, protocol, schedule.timed_out_hosts,
                                 options.all_ports_listed)
    for host_result in result.hosts:
        index = hosts.by_number.get(_number(host_result.address))
        if index is not None and index in up_reason:
            host_result.status_reason = up_reason[index]
        if index is not None:
            est = schedule._rtt.get(index)
            host_result.rtt = est.srtt if est else None
    if os.environ.get("PORTKIT_SCAN_DEBUG"):
        print(f"sent={schedule.sent} retrans={schedule.retransmitted} drops={schedule.drops} "
              f"cwnd={schedule.window.cwnd:.0f}", file=sys.stderr)


def _number(address: str) -> int:
    import ipaddress

    return int(ipaddress.ip_address(address))
