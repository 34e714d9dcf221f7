"""Rendering results for people (a Rich table on a TTY, plain columns otherwise) and as JSON.

Both views are made from the same result objects; JSON is what `to_json()` returns.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import click


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, sort_keys=False, default=str))


def is_tty() -> bool:
    return sys.stdout.isatty()


def emit_table(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    title: str = "",
    empty: str = "(none)",
) -> None:
    """A table: Rich when stdout is a terminal, aligned plain text otherwise."""
    cells = [["" if c is None else str(c) for c in row] for row in rows]
    if is_tty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        # Cells are data (rule text, comments, command lines), never Rich markup: `[/x]` or
        # `[red]` in a firewall comment must print as it is, not be parsed.
        table = Table(title=Text(title) if title else None, title_justify="left", header_style="bold")
        for column in columns:
            table.add_column(Text(str(column)))
        for row in cells:
            table.add_row(*map(Text, row))
        Console().print(table if cells else Text(f"{title}\n{empty}" if title else empty))
        return
    if title:
        click.echo(title)
    if not cells:
        click.echo(empty)
        return
    widths = [max(len(str(col)), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    click.echo("  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def emit_pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    """`key: value` lines, keys aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        click.echo(f"{key + ':':<{width + 1}} {value}")


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (schema: docs/json.md).")


class ProgressBar:
    """A Rich progress bar with ETA on stderr, shown only after a second and only on a terminal.

    Called as `bar(done, total)` (the library's progress hooks have that shape); `close()` when done.
    """

    def __init__(self, verb: str, unit: str) -> None:
        self.verb = verb
        self.unit = unit
        self.started = time.monotonic()
        self.bar: Any = None
        self.task: Any = None
        self.enabled = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or time.monotonic() - self.started < 1.0:
            return
        if self.bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn(self.verb),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} " + self.unit),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.verb, total=total)
        self.bar.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
