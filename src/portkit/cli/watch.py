"""`portkit watch`: listeners opened and closed, owners changed, accepts per listener, and scans."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

import click

from portkit.cli._params import WholeNumber, parse_duration
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.errors import UsageError, quote

MAX_HOOKS = 8  # --exec commands running at once; events beyond wait in the backlog
HOOK_BACKLOG = 10_000  # events waiting for a hook; beyond this they are not passed (and said)
EXIT_GRACE = 10.0  # seconds the hooks still running or waiting get once the watch ends


class HookRunner:
    """`--exec CMD`: `sh -c CMD` per event, its JSON on stdin, off the watch's own loop.

    The loop only queues the event, so a hook that is slow, hangs or never reads its stdin
    cannot hold back the events after it. At most MAX_HOOKS run at once; each gets its own
    process group, killed whole (sh and what it started) once it has run `timeout` seconds.
    The event is handed over in a temporary file rather than a pipe, so a large one (a scan of
    every port) never waits on a hook that does not read it. Failures are said on stderr: the
    first one at once, the count at the end.
    """

    def __init__(self, command: str, timeout: float, note: Callable[[str], None]) -> None:
        self.command = command
        self.timeout = timeout
        self.note = note
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=HOOK_BACKLOG)
        self.dropped = 0
        self.failed = 0
        self.killed = 0
        self._stop_by = float("inf")
        self._thread = threading.Thread(target=self._run, name="portkit-watch-exec", daemon=True)
        self._thread.start()

    def submit(self, document: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait(document)
        except queue.Full:
            if not self.dropped:
                self.note(f"--exec: {HOOK_BACKLOG} events are waiting for hooks; later ones are not passed")
            self.dropped += 1

    def _start(self, document: dict[str, Any]) -> tuple[subprocess.Popen[bytes], float, str]:
        env = {**os.environ, "PORTKIT_EVENT": document["event"]}
        with tempfile.TemporaryFile() as data:
            data.write(json.dumps(document, default=str).encode() + b"\n")
            data.seek(0)
            proc = subprocess.Popen(["sh", "-c", self.command], stdin=data, env=env, start_new_session=True)
        return proc, time.monotonic() + self.timeout, document["event"]

    def _kill(self, proc: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def _reap(self, running: list[tuple[subprocess.Popen[bytes], float, str]]) -> None:
        now = time.monotonic()
        for entry in list(running):
            proc, deadline, kind = entry
            status = proc.poll()
            if status is None and now < min(deadline, self._stop_by):
                continue
            running.remove(entry)
            if status is None:
                self._kill(proc)
                if not self.killed:
                    self.note(f"--exec: the hook for a {kind} event ran too long and was killed")
                self.killed += 1
            elif status != 0:
                if not self.failed:
                    self.note(f"--exec: the hook for a {kind} event exited with status {status}")
                self.failed += 1

    def _run(self) -> None:
        running: list[tuple[subprocess.Popen[bytes], float, str]] = []
        ending = False
        while True:
            self._reap(running)
            if time.monotonic() >= self._stop_by:  # the grace is over: what waits is not passed
                while True:
                    try:
                        if self.queue.get_nowait() is not None:
                            self.dropped += 1
                    except queue.Empty:
                        return
            if ending and not running:
                return
            if ending or len(running) >= MAX_HOOKS:
                time.sleep(0.02)
                continue
            try:  # idle, it sleeps until the next event; with hooks running, it looks at them too
                document = self.queue.get(timeout=0.05 if running else None)
            except queue.Empty:
                continue
            if document is None:
                ending = True
                continue
            try:
                running.append(self._start(document))
            except OSError as exc:
                self.note(f"--exec: cannot run the hook: {exc.strerror or exc}")
                self.failed += 1

    def close(self, grace: float = EXIT_GRACE) -> None:
        """Let the queued events reach their hooks for `grace` seconds, then kill what still runs."""
        self._stop_by = time.monotonic() + grace
        self.queue.put(None)
        self._thread.join()
        problems = []
        if self.killed:
            problems.append(f"{self.killed} killed (ran over {self.timeout:g} s, or still ran at exit)")
        if self.failed:
            problems.append(f"{self.failed} failed")
        if self.dropped:
            problems.append(f"{self.dropped} events not passed to a hook")
        if problems:
            self.note(f"--exec: {', '.join(problems)}")


def _when(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp))


def _where(document: dict[str, Any]) -> str:
    netns = document.get("netns")
    return f" [{netns}]" if netns else ""


def describe(document: dict[str, Any]) -> str:
    """One line for people per event (its control characters written out: a process name is
    anyone's to choose)."""
    from portkit.cli._text import visible

    return visible(_describe(document))


def _describe(document: dict[str, Any]) -> str:
    kind = document["event"]
    if kind in ("listener-opened", "listener-closed", "owner-changed"):
        owners = ", ".join(f"{o['name']}/{o['pid']}" for o in document["owners"]) or "unknown owner"
        text = f"{document['address']}:{document['port']}/{document['protocol']} {owners}"
        if kind == "owner-changed":
            before = ", ".join(f"{o['name']}/{o['pid']}" for o in document["before"])
            text += f" (was {before})"
        return f"{_when(document['time'])} {kind:16}{_where(document)} {text}"
    if kind == "accepts":
        return (
            f"{_when(document['time'])} {kind:16}{_where(document)} {document['port']}/tcp "
            f"{document['count']} connections ({document['per_second']}/s)"
        )
    if kind in ("scan", "scan-ended"):
        ports = document["ports"]
        shown = ",".join(map(str, ports[:12])) + (f",... ({len(ports)} ports)" if len(ports) > 12 else "")
        text = (
            f"{document['scan_type']} scan from {document['source']} of {', '.join(document['addresses'])} "
            f"ports {shown}: {document['reason']}"
        )
        if document.get("blocked"):
            text += f"; blocked in {document['blocked']}"
        return f"{_when(document['time'])} {kind:16}{_where(document)} {text}"
    if kind == "watch-started":
        packets = "listeners and packets" if document["packets"] else "listeners only"
        return f"{_when(document['time'])} {kind:16} {len(document['namespaces'])} namespaces, {packets}"
    return f"{_when(document.get('time', time.time()))} {kind}"


@click.command()
@click.option("--scans", is_flag=True, help="Detect port scans from the packets the kernel exchanges (root).")
@click.option(
    "--block",
    metavar="DURATION",
    help="With --scans: drop a detected scanner for DURATION (e.g. 10m) in a portkit-owned nft table.",
)
@click.option(
    "--netns", "namespaces", multiple=True, metavar="NAME", help="Only this namespace (repeatable)."
)
@click.option(
    "--interval", default="1s", show_default=True, metavar="DURATION", help="How often listeners are read."
)
@click.option(
    "--accept-interval",
    default="10s",
    show_default=True,
    metavar="DURATION",
    help="How often accepted connections are reported per listener.",
)
@click.option(
    "--scan-ports",
    type=WholeNumber(1, 65535),
    default=15,
    show_default=True,
    help="Failed ports that make a scan.",
)
@click.option(
    "--scan-hosts",
    type=WholeNumber(1, 1 << 24),
    default=25,
    show_default=True,
    help="Hosts on one port that make a scan.",
)
@click.option(
    "--scan-window",
    default="5m",
    show_default=True,
    metavar="DURATION",
    help="How long attempts are remembered.",
)
@click.option(
    "--ignore", multiple=True, metavar="ADDRESS", help="A source never judged a scanner (repeatable)."
)
@click.option(
    "--exec", "hook", metavar="CMD", help="Run CMD per event (sh -c), the event's JSON on its stdin."
)
@click.option(
    "--exec-timeout",
    "exec_timeout",
    default="30s",
    show_default=True,
    metavar="DURATION",
    help="Kill an --exec hook (its whole process group) that runs longer than this.",
)
@click.option("--duration", metavar="DURATION", help="Stop after this long.")
@click.option("--count", type=WholeNumber(1, 1 << 31), help="Stop after this many events.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line per event (docs/json.md).")
@record_options
def watch(
    scans: bool,
    block: str | None,
    namespaces: tuple[str, ...],
    interval: str,
    accept_interval: str,
    scan_ports: int,
    scan_hosts: int,
    scan_window: str,
    ignore: tuple[str, ...],
    hook: str | None,
    exec_timeout: str,
    duration: str | None,
    count: int | None,
    as_json: bool,
    record: bool | None,
    db: str | None,
) -> None:
    """Live events of this host and its namespaces, as they happen.

    \b
    listener-opened, listener-closed, owner-changed (another executable, unit or container;
    not a new PID of the same one), accepts (connections per listener per interval) and, with
    --scans, scan / scan-ended: a source probing many ports or hosts. Ctrl-C stops (exit 130).
    """
    import ipaddress

    from portkit.sockets import named_namespace
    from portkit.watch import Thresholds, WatchOptions, run_watch

    if block is not None and not scans:
        raise UsageError("--block needs --scans: it drops the scanners --scans detects")
    for name in namespaces:
        named_namespace(name)
    for address in ignore:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise UsageError(f"invalid --ignore {quote(address)}: expected an IPv4 or IPv6 address") from None
    if hook is not None and not hook.strip():
        raise UsageError("invalid --exec '': expected a command for sh -c, e.g. 'logger -t portkit'")
    options = WatchOptions(
        interval=parse_duration(interval, "--interval", minimum=0.05),
        scans=scans,
        accept_interval=parse_duration(accept_interval, "--accept-interval", minimum=0.1),
        thresholds=Thresholds(
            ports=scan_ports, hosts=scan_hosts, window=parse_duration(scan_window, "--scan-window", minimum=1)
        ),
        namespaces=namespaces,
        block=parse_duration(block, "--block", minimum=1) if block is not None else None,
        duration=parse_duration(duration, "--duration", minimum=0) if duration is not None else None,
        max_events=count,
        # As the packet reader writes addresses (inet_ntop): 2001:DB8:0::1 must match 2001:db8::1.
        ignore=tuple(str(ipaddress.ip_address(address)) for address in ignore),
    )
    hook_timeout = parse_duration(exec_timeout, "--exec-timeout", minimum=0.1)
    ledger = recording_ledger(record, db)
    host = this_host()
    def emit(document: dict[str, Any]) -> None:
        if as_json:
            click.echo(json.dumps(document, default=str))
        else:
            click.echo(describe(document))
        if ledger is not None:
            ledger.record_event(
                document["event"],
                document,
                port=document.get("port"),
                protocol=document.get("protocol"),
                host=host,
                time=document.get("time"),
            )
        if hooks is not None:
            hooks.submit(document)

    def note(text: str) -> None:
        click.echo(f"note: {text}", err=True)

    hooks = HookRunner(hook, hook_timeout, note) if hook is not None else None
    try:
        run_watch(options, emit, notes=note)
    finally:
        if hooks is not None:
            hooks.close()
        if ledger is not None:
            ledger.close()
