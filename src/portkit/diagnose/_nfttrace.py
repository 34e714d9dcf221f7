"""The firewall's verdict on one flow, as the kernel traced it (`meta nftrace set 1` + `nft monitor trace`).

API (what the reach diagnosis calls):

    with trace_flow("10.0.0.2", 8080, Transport.TCP, netns="server") as trace:
        ...                         # probe 10.0.0.2:8080 (from anywhere)
    trace.check                     # Check("nft trace", passed=None|True, detail)
    trace.steps()                   # TraceSteps in the user's tables, in the order met
    trace.dropped_by()              # the step whose verdict dropped it (rule or policy), or None
    trace.evidence()                # the steps as Evidence(source=Source.NFT_TRACE)

`netns` is an `ip netns` name or a /proc/PID/ns/net path (None: this namespace); the table,
the monitor and the trace are all that namespace's, which must be where the packets arrive
or leave (the server's for its input firewall, the client's for its output, a router's for
forwarding). When tracing cannot be done (not root, no nft) the block still runs and the
trace is empty: `trace.available` is False and `check.passed` is None with the reason.

How. A table portkit owns (`inet portkit_trace_PID_RANDOM`) gets two base chains at priority
-1000, before raw (-300), conntrack (-200), DNAT (-100) and filter (0) and before defrag
(-400), on prerouting (packets arriving: a server, a router) and output (packets this
namespace sends: a client). Each holds one rule matching the flow (daddr, dport, protocol)
that sets `meta nftrace`; the kernel then reports every rule and chain policy the packet meets
in every nftables table of the namespace, iptables-nft's included (their `ip filter` table is
an nftables table). iptables-legacy rules are not nftables and do not appear. `nft -a monitor
trace` prints those reports with rule handles; this module parses them into steps. The
monitor is known to listen before the block runs (its netlink socket is seen joined to the
trace group); after the block, lines are read until the monitor has been quiet a moment.
The table is deleted and the monitor stopped on exit, on an exception, and on SIGTERM; the
table of a process killed outright (SIGKILL) is deleted by the next trace in that namespace
(`sweep_stale`), since its rule would otherwise mark matching packets for tracing forever.

The verdict of an iptables-nft REJECT shows as `drop` (the reject target drops the packet
after sending its answer); the step's `rule` text still says `reject`, and `rejected` tells.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ipaddress
import os
import re
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence

from portkit.diagnose._model import Check, Evidence, Source
from portkit.errors import UsageError
from portkit.model.protocols import Transport

CHECK_NAME = "nft trace"
PRIORITY = -1000
NETLINK_NETFILTER = 12
NFNLGRP_NFTRACE = 9
READY_SECONDS = 2.0
QUIET_SECONDS = 0.05
SETTLE_SECONDS = 1.0

_LINE = re.compile(
    r"^trace id (?P<id>\w+) (?P<family>\w+) (?P<table>\S+) (?P<chain>\S+) "
    r"(?P<kind>packet|rule|policy|verdict|unknown rule)\b:?\s*(?P<rest>.*?)\s*$"
)
_RULE = re.compile(r"^(?P<text>.*?)(?:\s+# handle (?P<handle>\d+))?\s+\(verdict (?P<verdict>[^)]*)\)$")


@dataclasses.dataclass(frozen=True, slots=True)
class TraceStep:
    """One report of the trace: a rule that matched, a chain's policy, or the packet entering."""

    trace_id: str
    family: str  # ip, ip6, inet, arp, bridge, netdev
    table: str
    chain: str
    kind: str  # "packet" (entering a base chain), "rule", "policy", "verdict"
    verdict: str = ""  # continue, accept, drop, jump CHAIN, goto CHAIN, return, queue ...
    handle: int | None = None  # the rule's handle (`nft -a list ruleset`), rules only
    rule: str = ""  # the rule as nft prints it
    packet: str = ""  # for "packet": the packet's fields as nft prints them

    @property
    def rejected(self) -> bool:
        """A drop that answered (REJECT / `reject`): the client sees an RST or ICMP error."""
        return self.verdict == "drop" and bool(re.search(r"\breject\b|\bREJECT\b", self.rule))

    @property
    def where(self) -> str:
        return f"{self.family} {self.table} {self.chain}"

    def __str__(self) -> str:
        if self.kind == "rule":
            handle = f" handle {self.handle}" if self.handle is not None else ""
            return f"{self.where}{handle}: {self.rule} -> {self.verdict}"
        if self.kind == "packet":
            return f"{self.where}: packet {self.packet}"
        return f"{self.where}: {self.kind} {self.verdict}"


def parse_trace_lines(lines: Sequence[str]) -> list[TraceStep]:
    """`nft -a monitor trace` output as steps (lines that are not trace reports are skipped)."""
    steps = []
    for line in lines:
        found = _LINE.match(line.strip())
        if found is None:
            continue
        kind, rest = found["kind"], found["rest"]
        trace_id, family, table, chain = found["id"], found["family"], found["table"], found["chain"]
        if kind == "packet":
            steps.append(TraceStep(trace_id, family, table, chain, kind="packet", packet=rest))
        elif kind in ("rule", "unknown rule"):
            rule = _RULE.match(rest)
            if rule is None:
                steps.append(TraceStep(trace_id, family, table, chain, kind="rule", rule=rest))
            else:
                handle = int(rule["handle"]) if rule["handle"] else None
                steps.append(
                    TraceStep(
                        trace_id,
                        family,
                        table,
                        chain,
                        kind="rule",
                        verdict=rule["verdict"],
                        handle=handle,
                        rule=rule["text"],
                    )
                )
        else:
            steps.append(
                TraceStep(trace_id, family, table, chain, kind=kind, verdict=rest.split()[0] if rest else "")
            )
    return steps


def flow_match(daddr: str | None, dport: int, protocol: Transport, *, reverse: bool = False) -> str:
    """The nft match for the flow's packets toward the service (`reverse`: its replies, from
    `daddr`:`dport`)."""
    if protocol not in (Transport.TCP, Transport.UDP, Transport.SCTP):
        raise UsageError(f"invalid protocol {protocol.value!r} to trace: expected tcp, udp or sctp")
    if not 0 < dport <= 65535:
        raise UsageError(f"invalid port {dport}: ports are 1-65535")
    parts = []
    if daddr is not None:
        try:
            address = ipaddress.ip_address(daddr)
        except ValueError:
            raise UsageError(f"invalid address {daddr[:60]!r} to trace: expected an IP address") from None
        parts.append(f"{'ip' if address.version == 4 else 'ip6'} {'saddr' if reverse else 'daddr'} {address}")
    parts.append(f"{protocol.value} {'sport' if reverse else 'dport'} {dport}")
    return " ".join(parts)


def _in_namespace(netns: str | None, argv: list[str]) -> list[str]:
    if netns is None:
        return argv
    if netns.startswith("/"):
        return ["nsenter", f"--net={netns}", *argv]
    return ["ip", "netns", "exec", netns, *argv]


class FlowTrace:
    """The trace recorded while a `trace_flow` block ran (see the module docstring)."""

    def __init__(self, table: str, check: Check, available: bool) -> None:
        self.table = table
        self.check = check
        self.available = available
        self._lines: list[str] = []  # appended by the reader thread
        self._last = 0.0  # when the last line arrived (time.monotonic)

    def lines(self) -> tuple[str, ...]:
        """The monitor's raw lines, portkit's own table included."""
        return tuple(self._lines)

    def steps(self) -> tuple[TraceStep, ...]:
        """The steps in the namespace's own tables (portkit's tracing table left out)."""
        return tuple(s for s in parse_trace_lines(self._lines) if s.table != self.table)

    def dropped_by(self) -> TraceStep | None:
        """The first rule or policy whose verdict dropped a traced packet."""
        for step in self.steps():
            if step.kind in ("rule", "policy", "verdict") and step.verdict == "drop":
                return step
        return None

    def evidence(self) -> list[Evidence]:
        interesting = [s for s in self.steps() if s.kind != "packet" and s.verdict != "continue"]
        return [Evidence("nft monitor trace", Source.NFT_TRACE, str(step)) for step in interesting[:12]]


def _joined_trace_group(pid: int) -> bool:
    """Whether process `pid` has a NETLINK_NETFILTER socket subscribed to NFNLGRP_NFTRACE."""
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        with open(f"/proc/{pid}/net/netlink") as table:
            rows = table.read().splitlines()[1:]
    except OSError:
        return False
    for row in rows:
        cols = row.split()
        ours = len(cols) >= 10 and cols[1] == str(NETLINK_NETFILTER) and cols[9] in inodes
        if ours and int(cols[3], 16) >> (NFNLGRP_NFTRACE - 1) & 1:
            return True
    return False


def _unavailable(table: str, detail: str) -> FlowTrace:
    return FlowTrace(table, Check(CHECK_NAME, None, detail), available=False)


@contextlib.contextmanager
def trace_flow(
    daddr: str | None,
    dport: int,
    protocol: Transport = Transport.TCP,
    *,
    netns: str | None = None,
    reverse: bool = False,
) -> Iterator[FlowTrace]:
    """Trace, in `netns`, the packets toward `daddr`:`dport` sent while the block runs
    (`reverse`: the replies from `daddr`:`dport`)."""
    match = flow_match(daddr, dport, protocol, reverse=reverse)
    table = f"portkit_trace_{os.getpid()}_{secrets.token_hex(3)}"
    if os.geteuid() != 0:
        yield _unavailable(table, "needs root (nftables tables and the trace monitor)")
        return
    if shutil.which("nft") is None:
        yield _unavailable(table, "nft is not installed")
        return
    from portkit.firewall._live import _terminate_raises

    chain = f"priority {PRIORITY}; policy accept; {match} meta nftrace set 1; }}"
    script = (
        f"table inet {table} {{\n"
        f"  chain pre {{ type filter hook prerouting {chain}\n"
        f"  chain out {{ type filter hook output {chain}\n"
        "}\n"
    )
    sweep_stale(netns)
    with _terminate_raises():
        monitor: subprocess.Popen[str] | None = None
        added = False
        try:
            trace, monitor, added = _start(table, script, netns)
            yield trace
            if monitor is not None and trace.available:
                _settle(trace, monitor)
        finally:
            if monitor is not None and monitor.poll() is None:
                monitor.terminate()
                try:
                    monitor.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    monitor.kill()
                    monitor.wait(timeout=2)
            if added:
                subprocess.run(
                    _in_namespace(netns, ["nft", "delete", "table", "inet", table]),
                    capture_output=True,
                    check=False,
                    timeout=10,
                )


_TABLE = re.compile(r"^table inet (portkit_trace_(\d+)_[0-9a-f]+)$")


def sweep_stale(netns: str | None) -> list[str]:
    """Delete, in `netns`, the tracing tables of portkit processes that no longer exist;
    returns their names. Best effort: a namespace that cannot be listed is left as it is."""
    try:
        listing = subprocess.run(
            _in_namespace(netns, ["nft", "list", "tables"]),
            capture_output=True, text=True, check=False, timeout=10,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    removed = []
    for line in listing.stdout.splitlines():
        found = _TABLE.match(line.strip())
        if found is None or os.path.exists(f"/proc/{found[2]}"):
            continue
        deleted = subprocess.run(
            _in_namespace(netns, ["nft", "delete", "table", "inet", found[1]]),
            capture_output=True, check=False, timeout=10,
        )  # fmt: skip
        if deleted.returncode == 0:
            removed.append(found[1])
    return removed


def _start(
    table: str, script: str, netns: str | None
) -> tuple[FlowTrace, subprocess.Popen[str] | None, bool]:
    """Start the monitor (and see it listen), then add the tracing table."""
    argv = _in_namespace(netns, ["stdbuf", "-oL", "nft", "-a", "monitor", "trace"])
    try:
        monitor = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1
        )
    except OSError as exc:
        return _unavailable(table, f"cannot run nft monitor: {exc.strerror}"), None, False
    trace = FlowTrace(table, Check(CHECK_NAME, None, "the trace did not finish"), available=True)
    deadline = time.monotonic() + READY_SECONDS
    # `ip netns exec` and `stdbuf` exec nft in place: the pid stays the monitor's.
    while not _joined_trace_group(monitor.pid):
        if monitor.poll() is not None or time.monotonic() > deadline:
            return _unavailable(table, "nft monitor trace did not start listening"), monitor, False
        time.sleep(0.005)
    threading.Thread(target=_read, args=(monitor, trace), daemon=True).start()
    added = subprocess.run(
        _in_namespace(netns, ["nft", "-f", "-"]),
        input=script,
        capture_output=True,
        text=True,
        check=False,
        timeout=10,
    )
    if added.returncode != 0:
        return (
            _unavailable(table, f"cannot add the tracing table: {added.stderr.strip()[:200]}"),
            monitor,
            False,
        )
    return trace, monitor, True


def _read(monitor: subprocess.Popen[str], trace: FlowTrace) -> None:
    assert monitor.stdout is not None
    for line in monitor.stdout:
        trace._lines.append(line.rstrip("\n"))
        trace._last = time.monotonic()


def _settle(trace: FlowTrace, monitor: subprocess.Popen[str]) -> None:
    """Wait until the monitor has been quiet for QUIET_SECONDS (at most SETTLE_SECONDS)."""
    started = time.monotonic()
    while time.monotonic() - started < SETTLE_SECONDS:
        if time.monotonic() - max(trace._last, started) >= QUIET_SECONDS:
            break
        time.sleep(0.01)
    steps = trace.steps()
    dropped = trace.dropped_by()
    if dropped is not None:
        detail = f"the kernel traced the drop: {dropped}"
    elif steps:
        detail = f"{len(steps)} trace step(s), none dropping"
    else:
        detail = "no traced packet reached this namespace's tables during the probe"
    trace.check = Check(CHECK_NAME, True, detail)
