"""Putting a scan together: options -> targets, ports, order, schedule, driver -> ScanResult."""

from __future__ import annotations

import os
import secrets
import shlex
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from portkit.errors import UsageError
from portkit.model import Protocol, parse_port_spec
from portkit.model.portspec import ranges_from_ports
from portkit.scan._hosts import HostTable
from portkit.scan._permutation import Permutation
from portkit.scan._results import (
    COLLAPSE_OVER,
    ExtraPorts,
    HostResult,
    PortResult,
    ScanResult,
    ServiceInfo,
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
    """Where drivers record outcomes: a byte per port per host (an OUTCOMES code, 0 = unknown)."""

    def __init__(self, scan_type: ScanType, nports: int) -> None:
        self.table = outcome_codes(scan_type)
        self.nports = nports
        self.codes: dict[int, bytearray] = {}
        self.ttls: dict[int, bytearray] = {}
        self.settled = 0

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
    from portkit.registry import default_registry

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
        for code, n in by_code.items():
            outcome = OUTCOMES[code]
            if outcome is not None and outcome[0] is state:
                reasons[outcome[1]] += n
        extras.append(ExtraPorts(state, by_state[state], tuple(reasons.most_common())))
    shown_codes = set()
    for code in by_code:
        outcome = OUTCOMES[code]
        if outcome is not None and outcome[0] not in hidden:
            shown_codes.add(code)
    registry = default_registry()
    shown = []
    for i, code in enumerate(codes):
        if code in shown_codes:
            listed = OUTCOMES[code]
            assert listed is not None
            name = registry.name_for(ports[i], protocol)
            service = ServiceInfo(name) if name else None  # like nmap: no <service> without a name
            shown.append(PortResult(ports[i], protocol, listed[0], listed[1], ttls[i], service))
    shown.sort(key=lambda p: p.port)
    return shown, extras


def _host_results(
    collector: _Collector,
    hosts: HostTable,
    ports: Sequence[int],
    protocol: Protocol,
    timed_out: set[int],
    keep_all: bool,
) -> list[HostResult]:
    results = []
    for index in sorted(collector.codes):
        host = hosts.get(index)
        if host is None:
            continue
        shown, extras = _listing(collector.codes[index], collector.ttls[index], ports, protocol, keep_all)
        status = "timeout" if index in timed_out else "up"
        hostnames = (host.hostname,) if host.hostname else ()
        results.append(HostResult(host.address, hostnames, status, "user-set", shown, extras))
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
        services=",".join(str(r) for r in ranges_from_ports(ports)),
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
    tpl: Template,
    seed: int,
    live: Live | None,
    result: ScanResult,
    progress: ProgressHook | None,
) -> None:
    nports = len(ports)
    up_reason: dict[int, str] = {}
    if live is not None:
        host_indices = [h.index for h, _ in live]
        up_reason = {h.index: why for h, why in live}
        order_hosts = host_indices
    else:
        order_hosts = None
    nhosts = len(order_hosts) if order_hosts is not None else len(hosts)
    total = nhosts * nports
    perm = Permutation(total, seed)

    def order() -> Iterator[int]:
        for i in perm:
            h, p = divmod(i, nports)
            host = order_hosts[h] if order_hosts is not None else h
            if hosts.get(host) is not None:
                yield host * nports + p

    collector = _Collector(scan_type, nports)
    schedule = Schedule(order(), nports, tpl, max_rate=options.max_rate, now=time.monotonic())
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
    result.hosts = _host_results(
        collector, hosts, ports, protocol, schedule.timed_out_hosts, options.all_ports_listed
    )
    for host_result in result.hosts:
        index = hosts.by_number.get(_number(host_result.address))
        if index is not None and index in up_reason:
            host_result.status_reason = up_reason[index]
        if index is not None:
            est = schedule._rtt.get(index)
            host_result.rtt = est.srtt if est else None
    if os.environ.get("PORTKIT_SCAN_DEBUG"):
        print(
            f"sent={schedule.sent} retrans={schedule.retransmitted} drops={schedule.drops} "
            f"cwnd={schedule.window.cwnd:.0f}",
            file=sys.stderr,
        )


def _number(address: str) -> int:
    import ipaddress

    return int(ipaddress.ip_address(address))
