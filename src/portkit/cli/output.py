"""Rendering results for people (a Rich table on a TTY, plain columns otherwise) and as JSON.

Both views are made from the same result objects; JSON is what `to_json()` returns.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from portkit.cli._text import echo, emit_json, emit_pairs, emit_table, is_tty

__all__ = ["ProgressBar", "echo", "emit_json", "emit_pairs", "emit_table", "is_tty", "json_option"]


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
