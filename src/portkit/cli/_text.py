"""Text output for people and JSON for programs, without Click: what every command prints with.

portkit.cli.output re-exports these for the Click commands; the console script's Click-free
lanes (portkit.cli.entry) print through them too, so both paths write the same bytes.
`echo` writes what `click.echo` writes for the text portkit prints (a str, then a newline;
no ANSI codes are involved, which click.echo would strip off a terminal).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any


def echo(message: str = "", err: bool = False) -> None:
    """One line on stdout (stderr with `err`), flushed."""
    stream = sys.stderr if err else sys.stdout
    stream.write(message + "\n")
    stream.flush()


def emit_json(document: Any) -> None:
    import json

    echo(json.dumps(document, indent=2, sort_keys=False, default=str))


# C0 controls but tab, DEL and C1 controls: shown as \xNN, never sent to the terminal; the
# line separators and bidirectional overrides (which reorder what a line seems to say) as \uNNNN.
_CONTROLS = {n: f"\\x{n:02x}" for n in (*range(0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0))}
_CONTROLS |= {n: f"\\u{n:04x}" for n in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def visible(text: str) -> str:
    """`text` with its control characters written out (`\x1b`), so that data from others (a
    process name any local user may set, a banner) cannot move the cursor, recolour or retitle
    the terminal of whoever reads the output, nor hide a line of it."""
    return text.translate(_CONTROLS)


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
    cells = [["" if c is None else visible(str(c)) for c in row] for row in rows]
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
        echo(title)
    if not cells:
        echo(empty)
        return
    widths = [max(len(str(col)), *(len(r[i]) for r in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    echo("\n".join(lines))


def emit_pairs(pairs: Sequence[tuple[str, Any]]) -> None:
    """`key: value` lines, keys aligned."""
    width = max((len(k) for k, _ in pairs), default=0)
    for key, value in pairs:
        echo(visible(f"{key + ':':<{width + 1}} {value}"))
