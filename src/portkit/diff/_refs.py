"""`@` references to the ledger in `portkit diff`: `@ID`, `@now`, `@yesterday`, `@TIME`.

Pure: `parse_ref` turns the text into a `Ref`; the CLI looks it up (a time names the newest
complete observation at or before it; `@now` is the live host, not the ledger).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from portkit.errors import UsageError, quote

DAY = 86400.0
ACCEPTED = "expected @ID, @now, @yesterday, @-2h/@-7d or @2026-12-01T10:00 (ISO 8601)"
_AGO = re.compile(r"-([0-9]{1,6})([mhd])\Z")
_UNITS = {"m": 60.0, "h": 3600.0, "d": DAY}


@dataclass(frozen=True)
class Ref:
    """`id` for @ID; `time` (Unix seconds) for a time; neither for @now."""

    text: str
    id: int | None = None
    time: float | None = None

    @property
    def live(self) -> bool:
        return self.id is None and self.time is None


def parse_ref(text: str, now: float) -> Ref:
    """`text` without its leading '@', relative to `now`."""
    body = text[1:] if text.startswith("@") else text
    key = body.strip().lower()
    if key == "now":
        return Ref(text)
    if key == "yesterday":
        return Ref(text, time=now - DAY)
    if key.isascii() and key.isdigit() and len(key) <= 18:
        return Ref(text, id=int(key))
    ago = _AGO.match(key)
    if ago:
        return Ref(text, time=now - int(ago[1]) * _UNITS[ago[2]])
    try:
        when = datetime.fromisoformat(body.strip())
    except ValueError:
        raise UsageError(f"invalid ledger reference {quote(text)}: {ACCEPTED}") from None
    try:
        stamp = when.timestamp()  # a time without a zone is local time
    except (ValueError, OverflowError, OSError):  # local time moved it out of years 1-9999
        raise UsageError(
            f"invalid ledger reference {quote(text)}: out of range in local time; expected years 1-9999"
        ) from None
    return Ref(text, time=stamp)
