"""`portkit watch`: listeners opened and closed, owners changed, accepts per listener, and scans."""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import click

from portkit.cli._params import WholeNumber, parse_duration
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.errors import UsageError, quote

MAX_HOOKS = 8  # --exec commands running at once; events beyond wait for one to end


def _when(stamp: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(stamp))


def _where(document: dict[str, Any]) -> str:
    netns = document.get("netns")
    return f" [{netns}]" if netns else ""


def describe(document: dict[str, Any]) -> str:
    """One line for people per event."""
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
    ledger = recording_ledger(record, db)
    host = this_host()
    hooks: list[subprocess.Popen[bytes]] = []

    def run_hook(document: dict[str, Any]) -> None:
        assert hook is not None
        hooks[:] = [p for p in hooks if p.poll() is None]
        while len(hooks) >= MAX_HOOKS:
            hooks[0].wait()
            hooks[:] = [p for p in hooks if p.poll() is None]
        env = {**os.environ, "PORTKIT_EVENT": document["event"]}
        proc = subprocess.Popen(["sh", "-c", hook], stdin=subprocess.PIPE, env=env)
        assert proc.stdin is not None
        try:
            proc.stdin.write(json.dumps(document).encode() + b"\n")
            proc.stdin.close()
        except BrokenPipeError:
            pass
        hooks.append(proc)

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
        if hook is not None:
            run_hook(document)

    def note(text: str) -> None:
        click.echo(f"note: {text}", err=True)

    try:
        run_watch(options, emit, notes=note)
    finally:
        for proc in hooks:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if ledger is not None:
            ledger.close()
