"""The result builder: recorded outcomes -> `ScanResult`, with no socket or clock in it.

Drivers record each reply as an outcome code (`OUTCOMES`, from the one state table in
`_states`) in a `Collector`: a byte per port per host, so a /16 of 100 ports costs 6.5 MB
rather than millions of objects. This module turns those bytes into nmap's listing: ports in
states other than open that more than 25 ports share become "Not shown" counts, the others
are listed with the name the port table gives them (a `ServiceRecord` with method "table").
The port numbers of a collapsed state are picked in C (bytes.translate, itertools.compress),
not port by port: a 65,535-port scan lists a handful.
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from collections.abc import Callable, Sequence

from portkit.model import Transport
from portkit.model.intervals import format_intervals, runs
from portkit.model.portstate import PortState, Reason
from portkit.model.services import ServiceRecord
from portkit.scan._hosts import ScanHost
from portkit.scan._plan import ScanPlan
from portkit.scan._results import (
    COLLAPSE_OVER,
    ExtraPorts,
    HostResult,
    PortResult,
    ScanResult,
)
from portkit.scan._states import OUTCOMES, ScanType, outcome_codes
from portkit.scan._targets import TargetSet

# (port, protocol) -> the name nmap's port table gives it, "" for none.
PortNamer = Callable[[int, Transport], str]
# host index -> (srtt, rttvar, timeout), seconds
Rtts = dict[int, tuple[float, float, float]]


def port_ranges(ports: Sequence[int]) -> str:
    """Sorted ports as nmap writes them: `1-1024,8080`."""
    if _consecutive(ports):
        return format_intervals(((ports[0], ports[-1]),))
    return format_intervals(runs(ports))


def _consecutive(ports: Sequence[int]) -> bool:
    """Whether `ports` is first, first + 1, ..., last (a -p- or -p 1-1024 scan's list)."""
    return bool(ports) and list(ports) == list(range(ports[0], ports[0] + len(ports)))


def masked_port_ranges(mask: bytes | bytearray, ports: Sequence[int]) -> str:
    """`port_ranges` of the ports whose mask byte is 1 (a byte per port, 0 or 1).

    Where the ports are consecutive, a run of ports is a run of 1 bytes, found by bytes.find in
    C: a handful of calls for a 65,535-port scan, where listing every port took ~8 ms.
    """
    if not _consecutive(ports):
        return port_ranges(list(itertools.compress(ports, mask)))
    first, out = ports[0], []
    start = mask.find(1)
    while start >= 0:
        stop = mask.find(0, start)
        if stop < 0:
            stop = len(mask)
        out.append((first + start, first + stop - 1))
        start = mask.find(1, stop)
    return format_intervals(out)


class Collector:
    """Where drivers record outcomes: a byte per port per host (an OUTCOMES code, 0 = unknown).

    A probe's key is `host index * nports + port index`; `settled` counts the probes with an
    outcome (the progress bar's figure).
    """

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
        outcomes = rcodes.translate(self.translation)
        if outcomes.count(0):  # some answer settles nothing: the general loop skips it
            self.record_batch(list(zip(keys, rcodes, ttls, strict=True)))
            return
        if host not in self.codes:
            self.codes[host] = bytearray(nports)
            self.ttls[host] = bytearray(nports)
        codes, ttls_of = self.codes[host], self.ttls[host]
        # Scatter into the host's byte arrays in C (map over bound methods), not key by key.
        indexes = keys if not base else list(map(base.__rsub__, keys))
        # Settled: the ports that had no outcome before (a batch may answer one port twice).
        # Looked up for this batch's ports only: counting a 65,535-byte table twice per batch
        # cost more than the scatter itself.
        unknown = bytes(map(codes.__getitem__, indexes))
        if unknown.count(0):
            self.settled += len(set(itertools.compress(indexes, map((0).__eq__, unknown))))
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


def listing(
    codes: bytearray,
    ttls: bytearray,
    ports: Sequence[int],
    protocol: Transport,
    keep_all: bool,
    names: PortNamer,
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
        reason_codes: dict[Reason, set[int]] = {}
        for code, n in by_code.items():
            outcome = OUTCOMES[code]
            if outcome is not None and outcome[0] is state:
                reasons[outcome[1]] += n
                reason_codes.setdefault(outcome[1], set()).add(code)
        common = reasons.most_common()
        # The ports of each reason, picked in C: a mask byte per port (1: one of its codes).
        masks = [codes.translate(bytes(int(i in reason_codes[r]) for i in range(256))) for r, _ in common]
        extras.append(
            ExtraPorts(
                state, by_state[state], tuple(common), tuple(masked_port_ranges(m, ports) for m in masks)
            )
        )
    shown_codes = set()
    for code in by_code:
        outcome = OUTCOMES[code]
        if outcome is not None and outcome[0] not in hidden:
            shown_codes.add(code)
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


def host_results(
    collector: Collector,
    targets: TargetSet,
    ports: Sequence[int],
    protocol: Transport,
    *,
    names: PortNamer,
    keep_all: bool = False,
    timed_out: set[int] | frozenset[int] = frozenset(),
    up_reason: dict[int, str] | None = None,
    rtts: Rtts | None = None,
) -> list[HostResult]:
    """Per-host results, consuming the collector as it goes (a /16 holds both only briefly).

    Hosts with no recorded outcome are not listed; `up_reason` says why discovery found a host
    up ("user-set" when it did not run), `timed_out` holds hosts that hit --host-timeout.
    """
    up_reason = up_reason or {}
    rtts = rtts or {}
    results = []
    for index in sorted(collector.codes):
        codes, ttls = collector.codes.pop(index), collector.ttls.pop(index)
        target = targets.get(index)  # not HostTable.get: no need to cache 65,536 hosts here
        if target is None:
            continue
        shown, extras = listing(codes, ttls, ports, protocol, keep_all, names)
        status = "timeout" if index in timed_out else "up"
        hostnames = (target.hostname,) if target.hostname else ()
        why = up_reason.get(index, "user-set")
        srtt, rttvar, timeout = rtts.get(index, (None, None, None))
        host = HostResult(target.address, hostnames, status, why, shown, extras, rtt=srtt)
        host.rttvar, host.timeout = rttvar, timeout
        results.append(host)
    return results


def new_result(plan: ScanPlan, start: float) -> ScanResult:
    """The scan's header, before any host is known; `start` is the wall-clock start (Unix time).

    `args` records what the scan itself decided (the probe-order key, the -T level); the command
    line and the arguments a user gave belong to the caller (the CLI adds them).
    """
    options = plan.options
    return ScanResult(
        scan_type="ping" if options.ping_only else plan.scan_type.value,
        protocol=plan.protocol,
        ports_spec=options.ports,
        nports=len(plan.ports),
        args={"seed": plan.seed, "timing": options.timing},
        command="",
        start=start,
        hosts_total=len(plan.targets),
        notes=list(plan.notes),
        services=port_ranges(plan.ports),
    )


def ping_hosts(live: Sequence[tuple[ScanHost, str]]) -> list[HostResult]:
    """-sn's listing: each host discovery found up, with why."""
    return [HostResult(h.address, (h.hostname,) if h.hostname else (), "up", why) for h, why in live]
