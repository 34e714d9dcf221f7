"""`portkit registry`: import, update and inspect the service registry's sources."""

from __future__ import annotations

import click

from portkit.cli.output import emit_json, emit_pairs, emit_table, json_option
from portkit.registry import ImportReport, Registry, cache_path, download_iana, import_iana
from portkit.registry.nmap import find_nmap_services


@click.group()
def registry() -> None:
    """Manage the service registry's sources (built-in, /etc/services, IANA, nmap)."""


def _report(report: ImportReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_json())
        return
    emit_pairs(
        [
            ("source", report.source),
            ("records", report.records),
            ("imported", report.imported),
            ("skipped", report.skipped_total),
            ("cache", report.cache),
        ]
    )
    if report.skipped:
        click.echo()
        emit_table(["SKIPPED BECAUSE", "RECORDS"], sorted(report.skipped.items(), key=lambda kv: -kv[1]))


@registry.command("import")
@click.argument("file")
@json_option
def import_(file: str, as_json: bool) -> None:
    """Import IANA's registry (CSV or XML) from FILE into the per-user cache."""
    _report(import_iana(file), as_json)


@registry.command()
@json_option
def update(as_json: bool) -> None:
    """Download IANA's registry and import it (needs network access)."""
    _report(download_iana(), as_json)


@registry.command()
@json_option
def status(as_json: bool) -> None:
    """Which sources are in use and how many entries each holds."""
    counts = Registry().sources()
    nmap = find_nmap_services()
    paths = {
        "builtin": "(part of portkit)",
        "etc-services": "/etc/services",
        "iana": str(cache_path()),
        "nmap-services": str(nmap) if nmap else "(nmap not installed)",
    }
    if as_json:
        emit_json({"sources": [{"source": k, "entries": v, "path": paths[k]} for k, v in counts.items()]})
        return
    emit_table(["SOURCE", "ENTRIES", "PATH"], [(k, v, paths[k]) for k, v in counts.items()])
