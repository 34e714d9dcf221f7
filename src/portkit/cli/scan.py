"""`portkit scan`: nmap's port states and reasons, with nmap's flags.

The scanner itself reads no environment; this command honours three variables, for tests and
benchmarks: `PORTKIT_SCAN_WORKERS=N` (worker processes), `PORTKIT_SCAN_PURE=1` (the Python
packet path even where the C one could run) and `PORTKIT_SCAN_DEBUG=1` (a line per worker on
stderr: which path moved the packets, probes sent, retransmissions).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import click

from portkit.cli._params import FiniteNumber, WholeNumber, parse_duration
from portkit.cli._record import record_options, recording_ledger, this_host
from portkit.cli._text import visible
from portkit.cli.output import ProgressBar
from portkit.errors import UsageError

MAX_RATE = 10**9  # probes per second; far above what any NIC sends

def _Progress() -> ProgressBar:
    return ProgressBar("scanning", "ports")


def _write(path: str, chunks: Iterable[str]) -> None:
    """Write an output format chunk by chunk to FILE, or to stdout for '-'."""
    if path == "-":
        _echo(chunks)
        return
    try:
        with Path(path).open("w") as out:
            out.writelines(chunks)
    except OSError as exc:
        raise UsageError(f"invalid output file {path!r}: {exc.strerror}") from None


def _environment_options(environ: Mapping[str, str]) -> dict[str, Any]:
    """ScanOptions fields from PORTKIT_SCAN_WORKERS, PORTKIT_SCAN_PURE and PORTKIT_SCAN_DEBUG."""
    workers = environ.get("PORTKIT_SCAN_WORKERS", "")
    return {
        "workers": int(workers) if workers.isdigit() and int(workers) > 0 else None,
        "pure_python": environ.get("PORTKIT_SCAN_PURE", "") not in ("", "0"),
        "debug": _to_stderr if environ.get("PORTKIT_SCAN_DEBUG") else None,
    }


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def _echo(chunks: Iterable[str], sep: str = "") -> None:
    for chunk in chunks:
        click.echo(chunk + sep, nl=False)


_SCAN_FLAGS = {"connect": "-sT", "syn": "-sS", "udp": "-sU", "ack": "-sA"}


def _one_scan_type(given: tuple[str, ...]) -> str:
    """The scan type asked for: one, however often it was given (nmap runs several in one scan,
    portkit one type per run)."""
    kinds = list(dict.fromkeys(given))
    if len(kinds) > 1:
        flags = " and ".join(_SCAN_FLAGS[k] for k in kinds)
        raise UsageError(
            f"invalid scan types {flags}: portkit runs one scan type at a time; run it once for each"
        )
    return kinds[0]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("targets", nargs=-1)
@click.option(
    "-p",
    "--ports",
    "ports",
    default="top:1000",
    show_default=True,
    help="Ports: 22,80,1000-2000, ssh, top:N, - (all), T:/U: prefixes.",
)
@click.option(
    "-sT",
    "--connect",
    "scan_type",
    flag_value="connect",
    multiple=True,
    help="TCP connect() scan (no privileges).",
)
@click.option(
    "-sS",
    "--syn",
    "scan_type",
    flag_value="syn",
    multiple=True,
    help="TCP SYN scan (raw sockets; default as root).",
)
@click.option(
    "-sU",
    "--udp",
    "scan_type",
    flag_value="udp",
    multiple=True,
    help="UDP scan with protocol payloads (root).",
)
@click.option(
    "-sA",
    "--ack",
    "scan_type",
    flag_value="ack",
    multiple=True,
    help="TCP ACK scan: filtered or unfiltered (root).",
)
@click.option("-sn", "--ping-only", "ping_only", is_flag=True, help="Only discover which hosts are up.")
@click.option(
    "-Pn", "--no-ping", "skip_discovery", is_flag=True, help="Skip host discovery: treat all as up."
)
@click.option(
    "-T",
    "timing",
    type=WholeNumber(0, 5),
    default=3,
    show_default=True,
    help="Timing template 0-5, as nmap's (-T4 aggressive).",
)
@click.option("--max-retries", type=WholeNumber(0, 15), help="Retransmissions of a silent probe at most.")
@click.option("--host-timeout", help="Give up on a host after this long (e.g. 30s, 5m).")
@click.option(
    "--max-rate",
    "--rate",
    "max_rate",
    type=FiniteNumber(0, MAX_RATE, above=True),
    help="Send at most this many probes per second.",
)
@click.option("--min-rtt-timeout", help="Lower bound of the probe timeout (e.g. 100ms).")
@click.option("--max-rtt-timeout", help="Upper bound of the probe timeout.")
@click.option("--initial-rtt-timeout", help="Probe timeout before any RTT is measured.")
@click.option("--scan-delay", help="Wait this long between probes.")
@click.option(
    "--seed",
    type=WholeNumber(-(2**63), 2**64 - 1),
    help="Key of the probe order permutation (same seed, same order).",
)
@click.option("-iL", "input_file", help="Read targets from FILE ('-' for stdin).")
@click.option("--exclude", "exclude", multiple=True, help="Targets to skip (comma-separated).")
@click.option("--exclude-file", help="Read targets to skip from FILE.")
@click.option("--first-address", is_flag=True, help="Scan only the first address of each hostname.")
@click.option("--reason", is_flag=True, help="Show why each port has its state.")
@click.option("--open", "open_only", is_flag=True, help="List only open ports.")
@click.option("--all-ports", is_flag=True, help="List every port (no 'Not shown' summary).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema: docs/json.md).")
@click.option("-oJ", "json_file", help="Also write JSON to FILE.")
@click.option("-oX", "xml_file", help="Also write nmap XML to FILE ('-' for stdout).")
@click.option("-oG", "grepable_file", help="Also write grepable output to FILE ('-' for stdout).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV, one row per port.")
@click.option(
    "-sV", "--sv", "service_detection", is_flag=True, help="Detect what really answers on open ports."
)
@click.option(
    "--sv-intensity",
    "--version-intensity",
    "sv_intensity",
    default="7",
    show_default=True,
    help="Service probes to try: 0-9, light (2) or all (9), as nmap's --version-intensity.",
)
@click.option(
    "--probes",
    "probe_db",
    default="builtin",
    show_default=True,
    help="Service probe database: builtin, nmap (the installed nmap-service-probes) or a file.",
)
@record_options
def scan(
    targets: tuple[str, ...],
    ports: str,
    scan_type: tuple[str, ...],
    ping_only: bool,
    skip_discovery: bool,
    timing: int,
    max_retries: int | None,
    host_timeout: str | None,
    max_rate: float | None,
    min_rtt_timeout: str | None,
    max_rtt_timeout: str | None,
    initial_rtt_timeout: str | None,
    scan_delay: str | None,
    seed: int | None,
    input_file: str | None,
    exclude: tuple[str, ...],
    exclude_file: str | None,
    first_address: bool,
    reason: bool,
    open_only: bool,
    all_ports: bool,
    as_json: bool,
    json_file: str | None,
    xml_file: str | None,
    grepable_file: str | None,
    as_csv: bool,
    service_detection: bool,
    sv_intensity: str,
    probe_db: str,
    record: bool | None,
    db: str | None,
) -> None:
    """Scan TARGETS' ports and report nmap's states: open, closed, filtered, unfiltered, open|filtered.

    TARGETS: addresses, CIDR (192.0.2.0/24), ranges (192.0.2.1-20, 10.0.0-3.*), hostnames.
    Exit status: 0 done, 2 bad input, 130 interrupted (partial results are printed).
    """
    from portkit.registry import default_registry
    from portkit.registry.nmap import table_namer
    from portkit.scan import ScanOptions, ScanType, run_scan
    from portkit.scan import output as render

    ledger = recording_ledger(record, db)
    durations = {
        name: parse_duration(value, f"--{name.replace('_', '-')}") if value is not None else None
        for name, value in (
            ("host_timeout", host_timeout),
            ("min_rtt_timeout", min_rtt_timeout),
            ("max_rtt_timeout", max_rtt_timeout),
            ("initial_rtt_timeout", initial_rtt_timeout),
            ("scan_delay", scan_delay),
        )
    }
    intensity = 7
    if service_detection:
        from portkit.services import load_database, parse_intensity

        # Bad --probes or --sv-intensity are usage errors before the scan, not after it.
        intensity = parse_intensity(sv_intensity)
        load_database(probe_db)
    options = ScanOptions(
        targets=targets,
        ports=ports,
        scan_type=ScanType(_one_scan_type(scan_type)) if scan_type else None,
        timing=timing,
        max_retries=max_retries,
        host_timeout=durations["host_timeout"],
        max_rate=max_rate,
        min_rtt=durations["min_rtt_timeout"],
        max_rtt=durations["max_rtt_timeout"],
        initial_rtt=durations["initial_rtt_timeout"],
        scan_delay=durations["scan_delay"],
        seed=seed,
        exclude=exclude,
        exclude_file=exclude_file,
        input_file=input_file,
        first_address=first_address,
        skip_discovery=skip_discovery,
        ping_only=ping_only,
        all_ports_listed=all_ports,
        **_environment_options(os.environ),
    )
    # What the output records of the invocation: the command line and the arguments as given.
    command = " ".join(["portkit", "scan", *sys.argv[2:]]) if len(sys.argv) > 1 else "portkit scan"
    given: dict[str, Any] = {"targets": list(targets), "reason": reason}
    if service_detection:
        given |= {"sv": True, "sv_intensity": intensity, "probes": probe_db}
    progress = _Progress()
    try:
        result = run_scan(
            options,
            progress,
            registry=default_registry(),
            port_names=None if ping_only else table_namer(),  # -sn lists no ports: no table
        )
    finally:
        progress.close()
    result.args = given | result.args
    if service_detection and not result.interrupted:
        from portkit.services import detect_for_scan

        try:
            detect_for_scan(result, intensity=intensity, probes=probe_db, timing=timing, max_rate=max_rate)
        except KeyboardInterrupt:
            result.interrupted = True
    if ledger is not None:
        with ledger:  # every port listed, as scanned (before --open hides some)
            ledger.record_scan(result, host=this_host(), source=command)
    if open_only:
        from portkit.scan import open_view

        result = open_view(result)  # nmap's --open applies to every format
    if json_file:
        _write(json_file, [*render.iter_json(result, command), "\n"])
    if xml_file:
        _write(xml_file, render.iter_xml(result, command))
    if grepable_file:
        _write(grepable_file, [render.render_grepable(result, command)])
    to_stdout = "-" in (xml_file, grepable_file)
    if as_json:
        _echo([*render.iter_json(result, command), "\n"])
    elif as_csv:
        click.echo(render.render_csv(result), nl=False)
    elif not to_stdout:
        # Titles, banners and names are the scanned hosts' to choose: their control characters
        # are written out, never sent to the terminal.
        _echo(map(visible, render.iter_text(result, reason=reason, open_only=open_only)), "\n")
    if result.interrupted:
        click.echo("portkit: interrupted", err=True)
        sys.exit(130)
