"""Reading a text file a user names: bounded in size and decoded as strict UTF-8.

Every file portkit reads on a user's behalf (rules files, ufw directories, `--flows`, `-iL`,
`--config`, IANA's CSV) goes through `read_text_file`, so bad input fails the same way
everywhere: one line naming the file and what is wrong, exit status 2.

The size cap (MAX_INPUT_BYTES, 64 MiB) is far above any real input (IANA's registry is about
2 MiB, a large Kubernetes iptables-save a few MiB) and keeps `/dev/zero`, a FIFO that never
ends or a mistaken multi-gigabyte file from exhausting memory: at most cap + 1 bytes are read.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import BinaryIO

from portkit.errors import UsageError, quote

MAX_INPUT_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def _read_capped(stream: BinaryIO, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def decode_text(data: bytes, *, what: str, name: str) -> str:
    """`data` as strict UTF-8 (a leading BOM is dropped), or a UsageError naming the byte offset."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise UsageError(
            f"invalid {what} {quote(name)}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
            f"{exc.start}, line {line}); save it as UTF-8"
        ) from None


def read_text_file(path: str | Path, *, what: str, limit: int = MAX_INPUT_BYTES) -> str:
    """The text of `path` ('-' is stdin), at most `limit` bytes, strict UTF-8.

    `what` names the file's role in messages ("rules file", "target file", ...).
    """
    name = str(path)
    try:
        if name == "-":
            stdin = getattr(sys.stdin, "buffer", None)
            if stdin is None:  # a text stream without bytes underneath (tests' io.StringIO)
                text: str = sys.stdin.read(limit + 1)
                data = text.encode("utf-8", "surrogateescape")
            else:
                data = _read_capped(stdin, limit)
        else:
            with Path(path).open("rb") as stream:
                data = _read_capped(stream, limit)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise UsageError(f"invalid {what} {quote(name)}: cannot read it ({reason})") from None
    if len(data) > limit:
        size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
        raise UsageError(
            f"invalid {what} {quote(name)}: larger than {size}, the most portkit reads from one input"
        )
    return decode_text(data, what=what, name=name)
