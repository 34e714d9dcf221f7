"""The scan's I/O driver: plan (`_plan`), discover, send probes (`_connect`, `_raw`), build (`_assemble`).

Only what touches the system lives here: whether raw sockets may be opened, the target files,
the random key of the probe order, the clock, the packet drivers, the worker processes
(`_workers`) and the kernel's neighbour table. Every decision is made by the pure modules it
calls.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from portkit.scan._assemble import Collector, PortNamer, host_results, new_result, ping_hosts
from portkit.scan._hosts import HostTable
from portkit.scan._permutation import Permutation
from portkit.scan._plan import ScanOptions, ScanPlan, plan_scan, worker_count
from portkit.scan._results import HostResult, ScanResult
from portkit.scan._schedule import Schedule
from portkit.scan._states import ScanType
from portkit.scan._targets import read_target_file
from portkit.scan._workers import (
    Share,
    describe,
    forked_shares,
    merge_shares,
    our_port,
    share_order,
    share_pacing,
)

if TYPE_CHECKING:
    from portkit.model.portspec import PortNames

ProgressHook = Callable[[int, int], None]


def has_raw_sockets() -> bool:
    """Whether this process may open raw sockets (root or CAP_NET_RAW)."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP).close()
        return True
    except PermissionError:
        return False


def run_scan(
    options: ScanOptions,
    progress: ProgressHook | None = None,
    *,
    registry: PortNames | None = None,
    port_names: PortNamer | None = None,
) -> ScanResult:
    """Run a scan; Ctrl-C stops it and returns what is known, with `interrupted` set.

    `progress(done, total)` is called as probes settle. `registry` resolves service names and
    top:N in `options.ports`; `port_names(port, protocol)` names the listed ports. Without them
    this entry point takes portkit's default registry and nmap's port table
    (`portkit.registry.nmap.table_namer()`); nothing below it chooses a registry.
    """
    started_wall, started = time.time(), time.monotonic()
    if registry is None:
        from portkit.registry import default_registry

        registry = default_registry()
    raw_ok = has_raw_sockets()
    plan = plan_scan(
        options,
        raw_ok=raw_ok,
        random_seed=int.from_bytes(os.urandom(8), "big"),
        names=registry,
        target_texts=read_target_file(options.input_file) if options.input_file else (),
        exclude_texts=read_target_file(options.exclude_file) if options.exclude_file else (),
    )
    if port_names is None:
        port_names = _nmap_port_names(plan)
    result = new_result(plan, started_wall)
    hosts = HostTable(plan.targets)
    try:
        live_hosts: list[int] | None = None
        up_reason: dict[int, str] = {}
        if options.ping_only and options.skip_discovery:
            # -sn -Pn: no probe at all; every target is up because the user said so, as nmap lists it.
            every = (hosts.get(index) for index in range(len(hosts)))
            result.hosts = ping_hosts([(host, "user-set") for host in every if host is not None])
            return result
        if not options.skip_discovery:
            from portkit.scan._discovery import discover

            live = discover(hosts, raw_ok, plan.template)
            if options.ping_only:
                result.hosts = ping_hosts(live)
                _attach_macs(result.hosts)
                return result
            live_hosts = [h.index for h, _ in live]
            up_reason = {h.index: why for h, why in live}
        _scan_ports(plan, hosts, live_hosts, up_reason, port_names, result, progress)
        _attach_macs(result.hosts)
    finally:
        result.elapsed = time.monotonic() - started
    return result


def _nmap_port_names(plan: ScanPlan) -> PortNamer:
    """nmap's port table for the listing; a scan without ports (-sn) lists none and loads nothing."""
    if not plan.ports:
        return lambda port, protocol: ""
    from portkit.registry.nmap import table_namer

    return table_namer()


def _attach_macs(hosts: list[HostResult]) -> None:
    """Each on-link host's MAC address (and its vendor), from the kernel's neighbour table."""
    if not hosts:
        return
    from portkit.scan._neighbours import mac_vendor, neighbour_macs

    macs = neighbour_macs()
    for host in hosts:
        mac = macs.get(host.shown_address)
        if mac:
            host.mac, host.mac_vendor = mac, mac_vendor(mac)


def _scan_ports(
    plan: ScanPlan,
    hosts: HostTable,
    live_hosts: list[int] | None,
    up_reason: dict[int, str],
    port_names: PortNamer,
    result: ScanResult,
    progress: ProgressHook | None,
) -> None:
    """Probe every (live host, port), in one process or several, and list what was found."""
    nports = len(plan.ports)
    nhosts = len(live_hosts) if live_hosts is not None else len(hosts)
    total = nhosts * nports
    perm = Permutation(total, plan.seed)
    shares = worker_count(total, plan, os.cpu_count() or 1)

    def run(share: int) -> Share:
        # Worker 0 drives the progress bar, extrapolating from its own share.
        hook = (lambda done: progress(min(total, done * shares), total)) if progress and share == 0 else None
        return _run_share(plan, share, shares, hosts, perm, live_hosts, hook)

    parts = [run(0)] if shares == 1 else forked_shares(shares, run)
    debug = describe(parts, shares)
    merged = merge_shares(parts, Collector(plan.scan_type, nports))
    result.probes_sent += merged.sent
    result.interrupted |= merged.interrupted
    result.hosts = host_results(
        merged.collector,
        plan.targets,
        plan.ports,
        plan.protocol,
        names=port_names,
        keep_all=plan.options.all_ports_listed,
        timed_out=merged.timed_out,
        up_reason=up_reason,
        rtts=merged.rtts,
    )
    if plan.options.debug is not None:
        for line in debug:
            plan.options.debug(line)


def _run_share(
    plan: ScanPlan,
    share: int,
    shares: int,
    hosts: HostTable,
    perm: Permutation,
    live_hosts: list[int] | None,
    progress: Callable[[int], None] | None,
) -> Share:
    """One worker: drive the connect or raw scanner over its share of the probes."""
    scan_type, ports = plan.scan_type, plan.ports
    tpl, max_rate = share_pacing(plan.template, plan.options.max_rate, shares)
    collector = Collector(scan_type, len(ports))
    order = share_order(perm, share, shares, hosts, len(ports), live_hosts)
    schedule = Schedule(
        order, len(ports), tpl, max_rate=max_rate, now=time.monotonic(), udp_pacing=scan_type is ScanType.UDP
    )
    tick = (lambda: progress(collector.settled)) if progress else None
    interrupted = False
    io_path = "python"
    try:
        if scan_type is ScanType.CONNECT:
            from portkit.scan._connect import run_connect

            io_path = run_connect(
                hosts,
                ports,
                schedule,
                collector.record,
                tick,
                collector.record_batch,
                collector.record_columns,
                pure_python=plan.options.pure_python,
            )
        else:
            from portkit.scan._raw import RawScanner

            scanner = RawScanner(
                scan_type,
                hosts,
                ports,
                schedule,
                collector.record,
                our_port=our_port(share),
                record_batch=collector.record_batch,
                record_columns=collector.record_columns,
                pure_python=plan.options.pure_python,
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
    return Share(
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
