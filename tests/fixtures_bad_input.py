"""Running the CLI in-process on bad input, and what every bad input must produce.

`run_main(args)` calls portkit.cli.main.main() as the console script does (same error
handling, same exit status), capturing stdout and stderr, so hundreds of malformed inputs
run in seconds instead of one interpreter start each. `assert_usage_error` is the contract
of issue 12: exit 2, exactly one short line on stderr, no "internal error", no traceback.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

MAX_LINE = 200


@dataclass
class MainResult:
    status: int
    stdout: str
    stderr: str
    args: tuple[str, ...]


class _Stdin(io.TextIOWrapper):
    """stdin with bytes underneath, as the real one has (read_text_file reads `.buffer`)."""


def run_main(*args: str, stdin: bytes = b"") -> MainResult:
    from portkit.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdin
    sys.stdin = _Stdin(io.BytesIO(stdin), encoding="utf-8")
    status: int | str | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                status = exc.code
    finally:
        sys.stdin = saved
    code = status if isinstance(status, int) else (0 if status is None else 1)
    return MainResult(code, out.getvalue(), err.getvalue(), args)


def assert_usage_error(result: MainResult, *fragments: str) -> str:
    """Exit 2 with one line of at most MAX_LINE characters, not a crash; returns that line."""
    where = f"portkit {' '.join(a[:80] for a in result.args)}"
    lines = result.stderr.splitlines()
    assert "internal error" not in result.stderr, f"{where}: {result.stderr}"
    assert "Traceback" not in result.stderr, f"{where}: {result.stderr}"
    assert result.status == 2, f"{where}: exit {result.status}, stderr {result.stderr!r}"
    assert len(lines) == 1, f"{where}: expected one line on stderr, got {result.stderr!r}"
    assert len(lines[0]) <= MAX_LINE, f"{where}: {len(lines[0])} characters: {lines[0]!r}"
    for fragment in fragments:
        assert fragment in lines[0], f"{where}: {fragment!r} not in {lines[0]!r}"
    return lines[0]
