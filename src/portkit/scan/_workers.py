"""Worker processes of a big scan: which probes each sends, forking, pickling, merging.

A scan's probes are split into `shares` disjoint parts of one permutation (`Permutation.share`);
each part runs in its own forked process, which sends its result (a `Share`: outcome bytes,
RTTs, counters) back through a pipe, pickled. The workers split the congestion window and the
rate cap, so together they pace as one scan, and use distinct source-port blocks, so each
raw worker's BPF filter passes only its own replies. Workers probe disjoint ports, so where
one has an outcome the other has none: their byte tables merge by OR.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from portkit.errors import PortkitError
from portkit.scan._assemble import Collector, Rtts
from portkit.scan._hosts import HostTable
from portkit.scan._permutation import Permutation
from portkit.scan._timing import Template


@dataclass
class Share:
    """What one worker found: its outcomes and its schedule's statistics."""

    codes: dict[int, bytearray]
    ttls: dict[int, bytearray]
    rtts: Rtts  # host -> (srtt, rttvar, timeout), seconds
    timed_out: set[int]
    sent: int = 0
    retransmitted: int = 0
    drops: int = 0
    cwnd: float = 0.0
    interrupted: bool = False
    io: str = "python"  # which code moved the packets: "c" (_rawio, _connectio) or "python"


def share_order(
    perm: Permutation,
    share: int,
    shares: int,
    hosts: HostTable,
    nports: int,
    live_hosts: list[int] | None,
) -> Iterator[int]:
    """The probe keys (host index * nports + port index) one worker sends, in order.

    `live_hosts`: the host indexes discovery found up (None: every target, -Pn); the
    permutation runs over their positions in that list.
    """
    mine = perm.share(share, shares)
    if live_hosts is None and not hosts.targets.excluded:
        # Every index is a probe: host * nports + port_index is the index itself.
        return mine
    if live_hosts is not None and len(live_hosts) == 1:
        # One live host (discovery ran): its probes are the index shifted, computed in C.
        return map((live_hosts[0] * nports).__add__, mine)
    return _present(mine, hosts, nports, live_hosts)


def _present(
    mine: Iterator[int], hosts: HostTable, nports: int, live_hosts: list[int] | None
) -> Iterator[int]:
    for i in mine:
        h, p = divmod(i, nports)
        host = live_hosts[h] if live_hosts is not None else h
        if hosts.get(host) is not None:
            yield host * nports + p


def share_pacing(tpl: Template, max_rate: float | None, shares: int) -> tuple[Template, float | None]:
    """One worker's template and rate cap: the window and the rate split between `shares` workers."""
    if shares == 1:
        return tpl, max_rate
    tpl = dataclasses.replace(
        tpl, initial_cwnd=max(1.0, tpl.initial_cwnd / shares), max_cwnd=max(1.0, tpl.max_cwnd / shares)
    )
    return tpl, (max_rate / shares if max_rate else None)


def our_port(share: int) -> int:
    """Distinct source-port blocks per worker, so each one's BPF filter sees only its replies."""
    return 40000 + (int.from_bytes(os.urandom(2), "big") % 1000 * 16 + share * 16 * 1000) % 20000


PR_SET_PDEATHSIG = 1  # prctl(2)


def _end_with(parent: int) -> None:
    """Have the kernel send this worker SIGTERM when `parent` (the scan's process) ends, however
    it ends (`kill PID` reaches the parent alone): a worker outliving it would go on probing.
    When the parent is already gone, end now."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def forked_shares(shares: int, run: Callable[[int], Share]) -> list[Share]:
    """Run `run(i)` for each share in its own forked process; collect the pickled results.

    Ctrl-C while waiting is passed on to the workers, and what they found so far is kept, with
    `interrupted` set on the first share. A worker that fails otherwise fails the scan.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    children: list[tuple[int, int]] = []
    parent = os.getpid()
    for index in range(shares):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the worker
            _end_with(parent)
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
    results: list[Share] = []
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
        raise PortkitError("a scan worker process failed")
    return results


@dataclass
class Merged:
    """The workers' shares as one: outcomes in `collector`, the rest summed or joined."""

    collector: Collector
    timed_out: set[int]
    rtts: Rtts
    sent: int
    interrupted: bool


def merge_shares(parts: list[Share], collector: Collector) -> Merged:
    """Merge the shares into `collector`, emptying `parts` as it goes (memory: one copy at a time)."""
    timed_out: set[int] = set()
    rtts: Rtts = {}
    sent, interrupted = 0, False
    while parts:
        part = parts.pop()
        for host, codes in part.codes.items():
            mine = collector.codes.get(host)
            if mine is None:
                collector.codes[host], collector.ttls[host] = codes, part.ttls[host]
                continue
            collector.codes[host] = _or(mine, codes)
            collector.ttls[host] = _or(collector.ttls[host], part.ttls[host])
        timed_out |= part.timed_out
        rtts.update(part.rtts)
        sent += part.sent
        interrupted |= part.interrupted
        del part
    return Merged(collector, timed_out, rtts, sent, interrupted)


def describe(parts: list[Share], shares: int) -> list[str]:
    """A line per worker on how it ran: io path, probes sent, retransmissions, drops, final window."""
    return [
        f"workers={shares} io={p.io} sent={p.sent} retrans={p.retransmitted} drops={p.drops} "
        f"cwnd={p.cwnd:.0f}"
        for p in parts
    ]


def _or(a: bytearray, b: bytearray) -> bytearray:
    return bytearray((int.from_bytes(a, "big") | int.from_bytes(b, "big")).to_bytes(len(a), "big"))
