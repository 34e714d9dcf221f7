"""Rendering results for people (a Rich table on a TTY, plain columns otherwise) and as JSON.

Both views are made from the same result objects; JSON is what `to_json()` returns.
"""

from __future__ import annotations

import click

from portkit.cli._text import echo, emit_json, emit_pairs, emit_table, is_tty

__all__ = ["echo", "emit_json", "emit_pairs", "emit_table", "is_tty", "json_option"]


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (schema: docs/json.md).")
