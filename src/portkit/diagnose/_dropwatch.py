"""The kernel's own reasons for dropping packets, read from the `skb:kfree_skb` tracepoint.

API (what the reach diagnosis calls):

    with watch_drops(Transport.TCP, port=8080) as drops:
        ...                      # probe; note the probing thread's id (threading.get_native_id())
    drops.check                  # Check("kernel drop reasons", passed=None|True, detail)
    drops.events()               # every DropEvent seen (all namespaces), in time order
    drops.matching(pids={tid})   # those that can be tied to the flow (port: the watch's)
    drops.reasons(pids={tid})    # their distinct reason names: ("NO_SOCKET",), ...
    drops.evidence(pids={tid})   # the same as Evidence(source=Source.DROP_REASON)
    softirq_pids()               # ksoftirqd threads: add them to `pids` to keep deferred drops

`matching`, `reasons` and `evidence` take `port` (default: the watch's) and `pids`.

When the tracepoint cannot be used (tracefs not mounted, not root, a kernel without drop
reasons) `watch_drops` still yields a watch: `drops.available` is False, `events()` is empty
and `check.passed` is None with the reason in `check.detail`. It never raises for that.

What the tracepoint gives, and what it does not. Since Linux 5.17 kfree_skb carries an
`enum skb_drop_reason`; its format file (events/skb/kfree_skb/format) lists the fields
(`skbaddr`, `location`, `protocol`, `reason`, and `rx_sk` on newer kernels) and, in its print
format, the reason names by number, which is where the names here come from. It carries no
port, no address and no network namespace: tracepoints are global, so a watch sees every
IPv4/IPv6 drop on the machine, in every namespace, during its window. Attribution therefore
rests on three things, each reported honestly:

- the window: only drops between entering and leaving the `with` block are recorded;
- the ethertype (`protocol`, filtered in the kernel: 0x0800 and/or 0x86DD);
- `tcp:tcp_send_reset`, enabled beside it: when TCP answers a segment with a reset
  (NO_SOCKET: nothing listens) the reset event names the segment's addresses and ports and
  the same skb address, so those drops get a `flow`;
- the task the drop ran in (`common_pid`): a packet sent over loopback or a veth is received
  in the sender's own softirq, so a probe's drops usually carry the probe's (thread's) pid;
  under load the work is deferred to a ksoftirqd thread, whose pid it then carries.

Drops with reason NOT_SPECIFIED (ordinary frees the kernel has not labelled) are filtered out
in the kernel. The watch uses a private trace instance (instances/portkit-drops-PID-RANDOM),
so it neither disturbs nor reads anyone else's tracing, and removes it on exit, on an
exception, and on SIGTERM. A process killed outright (SIGKILL, a crash) cannot: its instance
stays, and with it an enabled tracepoint that every freed packet on the machine then pays
for. So each watch first removes the instances of portkit watches whose process is gone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from portkit.diagnose._model import Check, Evidence, Source
from portkit.model.protocols import Transport

TRACEFS_MOUNTS = (Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing"))
ETHERTYPES = {4: 0x0800, 6: 0x86DD}
CHECK_NAME = "kernel drop reasons"
# Per-CPU buffer of the private instance: a probe's window holds a few hundred events at most.
BUFFER_KB = 512

_LINE = re.compile(
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[(?P<cpu>\d+)\]\s+(?:\S+\s+)?"
    r"(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$"
)
_FIELD = re.compile(r"(\w+)[=:]\s?(\S+)")
_SYMBOL = re.compile(r"\{\s*(\d+),\s*\"(\w+)\"\s*\}")


@dataclasses.dataclass(frozen=True, slots=True)
class DropEvent:
    """One packet the kernel freed with a drop reason."""

    timestamp: float  # seconds, the trace clock (local: sched_clock)
    cpu: int
    pid: int  # the task the drop ran in (0: an idle CPU's softirq)
    comm: str
    reason: str  # the kernel's name: NO_SOCKET, NETFILTER_DROP, TCP_LISTEN_OVERFLOW, ...
    ethertype: int  # 0x0800 IPv4, 0x86DD IPv6
    location: str  # the kernel function that freed it: tcp_v4_rcv+0x..., nf_hook_slow+0x...
    skbaddr: str  # hashed pointer, stable within one boot: joins with other skb events
    flow: str = ""  # "SRC:PORT -> DST:PORT" when a TCP reset for the same skb named it

    @property
    def family(self) -> int | None:
        return {0x0800: 4, 0x86DD: 6}.get(self.ethertype)

    @property
    def ports(self) -> tuple[int, int] | None:
        """(source port, destination port) of the dropped packet, when `flow` is known."""
        found = re.match(r".*:(\d+) -> .*:(\d+)$", self.flow)
        return (int(found.group(1)), int(found.group(2))) if found else None

    def __str__(self) -> str:
        where = f" {self.flow}" if self.flow else ""
        return f"{self.reason} at {self.location.split('/')[0]}{where} ({self.comm}/{self.pid})"


def reason_names(format_text: str) -> dict[int, str]:
    """The reason numbers and names in a kfree_skb format file's `__print_symbolic(REC->reason`."""
    start = format_text.find("REC->reason,")
    if start < 0:
        return {}
    return {int(number): name for number, name in _SYMBOL.findall(format_text[start:])}


def parse_trace(text: str) -> list[DropEvent]:
    """kfree_skb lines of a trace buffer as DropEvents, joined with tcp_send_reset lines by skb.

    The reset event of a segment comes before the segment's drop; both name the same skb.
    """
    resets: dict[str, tuple[str, int, float]] = {}  # skb -> (flow, cpu, time) of its reset
    drops: list[DropEvent] = []
    for line in text.splitlines():
        found = _LINE.match(line)
        if found is None:
            continue
        fields = dict(_FIELD.findall(found["body"]))
        if found["event"] == "tcp_send_reset":
            skb = fields.get("skbaddr", "")
            src, dst = fields.get("src", ""), fields.get("dest", "")
            if skb and src and dst:
                # The event names the reset's own direction (src: the port that refused), so
                # the segment that was dropped went the other way.
                resets[skb] = (f"{dst} -> {src}", int(found["cpu"]), float(found["ts"]))
            continue
        if found["event"] != "kfree_skb":
            continue
        reason = fields.get("reason", "")
        try:
            ethertype = int(fields.get("protocol", "0"))
        except ValueError:
            ethertype = 0
        skb = fields.get("skbaddr", "")
        timestamp, cpu = float(found["ts"]), int(found["cpu"])
        # skb addresses are reused: a reset names this drop's packet only when it came just
        # before it, on the same CPU (the same softirq run); each reset names one drop.
        flow = ""
        reset = resets.pop(skb, None)
        if reset is not None and reset[1] == cpu and 0 <= timestamp - reset[2] < 0.01:
            flow = reset[0]
        drops.append(
            DropEvent(
                timestamp=timestamp,
                cpu=cpu,
                pid=int(found["pid"]),
                comm=found["comm"].strip(),
                reason=reason,
                ethertype=ethertype,
                location=fields.get("location", ""),
                skbaddr=skb,
                flow=flow,
            )
        )
    return drops


def _named(event: DropEvent) -> DropEvent:
    """The task's name from /proc when the trace buffer did not keep it (`<...>`)."""
    if event.comm not in ("<...>", "") or event.pid <= 0:
        return event
    try:
        comm = Path(f"/proc/{event.pid}/comm").read_text().strip()
    except OSError:
        return event
    return dataclasses.replace(event, comm=comm)


def softirq_pids() -> frozenset[int]:
    """The ksoftirqd threads' pids. Under load the kernel defers receive work to them, and a
    drop then runs in their context instead of the sender's: pass these to `matching` beside
    the probe's pid to keep such drops (with whatever other deferred traffic they carry)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().startswith("ksoftirqd/"):
                    found.add(int(entry))
    return frozenset(found)


def find_tracefs() -> Path | None:
    for root in TRACEFS_MOUNTS:
        with contextlib.suppress(OSError):  # PermissionError: tracefs is root's only
            if (root / "instances").is_dir():
                return root
    return None


class DropWatch:
    """The drops recorded while a `watch_drops` block ran (see the module docstring)."""

    def __init__(self, check: Check, available: bool, port: int | None = None) -> None:
        self.check = check
        self.available = available
        self.port = port  # the flow's port, `matching()`'s default
        self._events: list[DropEvent] = []

    def _finish(self, events: list[DropEvent]) -> None:
        self._events = sorted((_named(e) for e in events), key=lambda e: e.timestamp)
        if self.available:
            self.check = Check(
                CHECK_NAME,
                True,
                f"{len(self._events)} drop(s) with a reason during the window "
                f"({', '.join(sorted({e.reason for e in self._events})) or 'none'}); kfree_skb "
                "names no port or namespace: TCP resets name the flow, the rest is tied by time "
                "and by the task it ran in",
            )

    def events(self) -> tuple[DropEvent, ...]:
        return tuple(self._events)

    def matching(self, port: int | None = None, pids: Iterable[int] = ()) -> tuple[DropEvent, ...]:
        """The drops that can belong to the flow. A drop whose flow is known belongs when `port`
        is at either end of it; any other drop when it ran in one of `pids` (when given).
        `port` defaults to the watch's; with neither filter, all of them."""
        port = self.port if port is None else port
        wanted_pids = set(pids)
        kept = []
        for event in self._events:
            ports = event.ports
            if port is not None and ports is not None:
                if port in ports:
                    kept.append(event)
            elif not wanted_pids or event.pid in wanted_pids:
                kept.append(event)
        return tuple(kept)

    def reasons(self, port: int | None = None, pids: Iterable[int] = ()) -> tuple[str, ...]:
        """Distinct reason names of `matching(port, pids)`, first seen first."""
        return tuple(dict.fromkeys(e.reason for e in self.matching(port, pids)))

    def evidence(self, port: int | None = None, pids: Iterable[int] = ()) -> list[Evidence]:
        return [
            Evidence("skb:kfree_skb tracepoint", Source.DROP_REASON, str(event))
            for event in self.matching(port, pids)[:8]
        ]


def _unavailable(detail: str, port: int | None = None) -> DropWatch:
    return DropWatch(Check(CHECK_NAME, None, detail), available=False, port=port)


def _write(path: Path, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


@contextlib.contextmanager
def watch_drops(
    protocol: Transport | None = None, *, port: int | None = None, families: tuple[int, ...] = (4, 6)
) -> Iterator[DropWatch]:
    """Record the kernel's packet drops (with their reasons) while the block runs.

    `families` narrows the ethertype in the kernel. `protocol` and `port` cannot be filtered
    there (the tracepoint has neither): `protocol` decides whether TCP resets are watched to
    name flows (TCP or None), and `port` is `matching()`'s default.
    """
    root = find_tracefs()
    if root is None:
        if os.geteuid() != 0:  # tracefs is root's alone: an ordinary user cannot even look
            yield _unavailable("needs root (the kernel's tracing is root's only)", port)
        else:
            yield _unavailable("tracefs is not mounted (mount -t tracefs nodev /sys/kernel/tracing)", port)
        return
    event_dir = root / "events" / "skb" / "kfree_skb"
    try:
        format_text = (event_dir / "format").read_text()
    except OSError as exc:
        detail = "needs root" if isinstance(exc, PermissionError) else "this kernel has no skb:kfree_skb"
        yield _unavailable(f"cannot read the kfree_skb tracepoint: {detail}", port)
        return
    names = reason_names(format_text)
    if not names:
        yield _unavailable("this kernel's kfree_skb carries no drop reason (Linux 5.17 added them)", port)
        return
    sweep_stale(root)
    instance = root / "instances" / f"portkit-drops-{os.getpid()}-{secrets.token_hex(3)}"
    try:
        instance.mkdir()
    except OSError as exc:
        why = "needs root" if isinstance(exc, PermissionError) else exc.strerror
        yield _unavailable(f"cannot create a trace instance under {root}/instances: {why}", port)
        return
    from portkit.firewall._live import _terminate_raises

    watch = DropWatch(Check(CHECK_NAME, None, "the watch did not finish"), available=True, port=port)
    with _terminate_raises():
        try:
            failed = _start(instance, names, families, protocol)
            if failed:
                watch = _unavailable(f"the trace instance could not be set up: {failed}", port)
            # The caller's own errors pass through untouched; only the trace's are caught.
            yield watch
            if not failed:
                try:
                    _write(instance / "tracing_on", "0")
                    watch._finish(parse_trace((instance / "trace").read_text(errors="replace")))
                except OSError as exc:
                    watch.available = False
                    watch.check = Check(CHECK_NAME, None, f"the trace could not be read: {exc.strerror}")
        finally:
            _remove_instance(instance)


def _start(
    instance: Path, names: dict[int, str], families: tuple[int, ...], protocol: Transport | None
) -> str:
    """Size the buffer, filter and enable the events; the error text, or "" when all went well."""
    try:
        _write(instance / "buffer_size_kb", str(BUFFER_KB))
        types = " || ".join(f"protocol == {ETHERTYPES[f]}" for f in families if f in ETHERTYPES)
        unlabelled = [n for n, name in names.items() if name == "NOT_SPECIFIED"]
        drop_filter = f"({types or 'protocol != 0'})"
        if unlabelled:
            drop_filter += f" && reason != {unlabelled[0]}"
        mine = instance / "events" / "skb" / "kfree_skb"
        _write(mine / "filter", drop_filter)
        _write(mine / "enable", "1")
        reset = instance / "events" / "tcp" / "tcp_send_reset" / "enable"
        if reset.exists() and protocol in (None, Transport.TCP):
            with contextlib.suppress(OSError):  # optional: only adds flows to TCP drops
                _write(reset, "1")
    except OSError as exc:
        return exc.strerror or str(exc)
    return ""


_INSTANCE = re.compile(r"^portkit-drops-(\d+)-[0-9a-f]+$")


def sweep_stale(root: Path) -> list[str]:
    """Remove the trace instances of portkit drop watches whose process no longer exists;
    returns their names. Others' instances and live watches' are left alone."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in (root / "instances").iterdir():
            found = _INSTANCE.match(entry.name)
            if found is None or Path(f"/proc/{found[1]}").exists():
                continue
            _remove_instance(entry)
            if not entry.exists():
                removed.append(entry.name)
    return removed


def _remove_instance(instance: Path) -> None:
    """Turn its events off and remove it (the kernel frees its buffers with the directory)."""
    with contextlib.suppress(OSError):
        _write(instance / "tracing_on", "0")
    for enable in ("skb/kfree_skb", "tcp/tcp_send_reset"):
        with contextlib.suppress(OSError):
            _write(instance / "events" / enable / "enable", "0")
    for _ in range(50):
        try:
            instance.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY while a reader still holds its files
            time.sleep(0.02)
