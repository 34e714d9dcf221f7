"""CSV rows that a spreadsheet opens as data, never as formulas.

Process names, unit names and namespace names are set by any user, and a CSV export of them is
typically opened in Excel, LibreOffice Calc or Google Sheets. Those programs evaluate a cell that
begins with `=`, `+`, `-` or `@` as a formula (a tab or carriage return in front is skipped
before they look), so a process named `=HYPERLINK(...)` would run in the reader's spreadsheet.
OWASP's advice for CSV injection is followed:

- a text field that begins with one of `= + - @ TAB CR` gets a leading single quote, which the
  spreadsheet shows as text and does not evaluate;
- a field that holds a separator is quoted, so it cannot start a new cell with one of those
  characters. Beside RFC 4180's comma, quote and line breaks, that includes `;`: in locales
  whose list separator is `;`, spreadsheets split an unquoted CSV field there.

Integers are written as they are (a port is never negative). The quote is part of the value
for any program that reads the CSV; a program wanting the raw values reads `--json`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TextIO

FORMULA_STARTS = frozenset("=+-@\t\r")
_NEEDS_QUOTING = frozenset(',";\r\n')


def spreadsheet_text(value: str) -> str:
    """`value` as a spreadsheet shows it as text: a leading `'` before a formula start."""
    return "'" + value if value[:1] in FORMULA_STARTS else value


def csv_field(value: str | int | None) -> str:
    """One CSV field: formula starts neutralised, quoted when it holds a separator."""
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    text = spreadsheet_text(str(value))
    if any(c in _NEEDS_QUOTING for c in text):
        return '"' + text.replace('"', '""') + '"'
    return text


def write_csv_row(out: TextIO, values: Iterable[str | int | None]) -> None:
    """One row, `\\n`-terminated (as the rest of portkit's CSV)."""
    fields = [csv_field(v) for v in values]
    # A lone empty field would be an empty line, which readers take for no row at all.
    out.write(('""' if fields == [""] else ",".join(fields)) + "\n")
