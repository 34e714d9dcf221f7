"""Click parameter types for numbers, stricter than click's own.

click's INT and FLOAT call int() and float(), which take Unicode digits ('²', '٣'), and
float() also takes 'nan', 'inf' and '1e400' (infinity). Every numeric option of portkit uses
these types instead: ASCII digits only, finite, within the bounds the option states. A bad
value is a portkit UsageError worded like every other (`invalid --pid '-5': expected ...`),
quoting at most ~60 characters of it.
"""

from __future__ import annotations

import math
import re
from typing import Any

import click

from portkit.errors import UsageError, quote
from portkit.model import parse_decimal

_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?\Z")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _bounds(minimum: float | None, maximum: float | None, above: bool = False) -> str:
    low = f"above {_num(minimum)}" if above and minimum is not None else ""
    if minimum is not None and not above:
        low = f"at least {_num(minimum)}"
        if maximum is not None:
            return f"from {_num(minimum)} to {_num(maximum)}"
    if maximum is not None:
        return f"{low} and at most {_num(maximum)}" if low else f"at most {_num(maximum)}"
    return low


def _refuse(value: Any, param: click.Parameter | None, expected: str) -> UsageError:
    names = list(getattr(param, "opts", ())) or [getattr(param, "name", None) or "value"]
    return UsageError(f"invalid {max(names, key=len)} {quote(str(value))}: expected {expected}")


class WholeNumber(click.ParamType):  # type: ignore[type-arg]
    """An integer written in ASCII digits with an optional '-', from `minimum` to `maximum`."""

    name = "integer"

    def __init__(self, minimum: int | None = None, maximum: int = 2**63 - 1) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number: int | None = value
        else:
            text = str(value).strip()
            negative = text.startswith("-")
            number = parse_decimal(text[1:] if negative else text)
            if number is not None and negative:
                number = -number
        bounds = _bounds(self.minimum, self.maximum)
        expected = "a whole number" + (f" {bounds}" if bounds else "")
        if number is None:
            raise _refuse(value, param, f"{expected} (digits 0-9)")
        if (self.minimum is not None and number < self.minimum) or (
            self.maximum is not None and number > self.maximum
        ):
            raise _refuse(value, param, expected)
        return number


class FiniteNumber(click.ParamType):  # type: ignore[type-arg]
    """A finite decimal number (no nan, no inf), optionally bounded; `above` excludes the minimum."""

    name = "number"

    def __init__(
        self, minimum: float | None = 0, maximum: float | None = None, *, above: bool = False
    ) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.above = above

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        else:
            text = str(value).strip()
            number = float(text) if _FLOAT_RE.match(text) else math.nan
        low, high = self.minimum, self.maximum
        expected = f"a finite number {_bounds(low, high, self.above)}".rstrip()
        if (
            not math.isfinite(number)
            or (low is not None and (number <= low if self.above else number < low))
            or (high is not None and number > high)
        ):
            raise _refuse(value, param, expected)
        return number


_DURATION_RE = re.compile(r"([0-9]{1,9}(?:\.[0-9]{1,9})?)(ms|s|m|h)?\Z")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
MAX_DURATION = 30 * 86400  # seconds


def _span(seconds: float) -> str:
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{_num(seconds / size)}{unit}"
    return f"{_num(seconds * 1000)}ms"


def parse_duration(text: str, option: str, minimum: float = 0.0, maximum: float = MAX_DURATION) -> float:
    """nmap's time values, in seconds: `500ms`, `30s`, `5m`, `2h`; a bare number is seconds.

    ASCII digits with an optional fraction only: float() would also take 'nan', '1e9' and '٣'.
    """
    match = _DURATION_RE.match(text.strip().lower())
    if not match:
        raise UsageError(f"invalid {option} {quote(text)}: expected a time such as 500ms, 30s, 5m or 2h")
    value = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not minimum <= value <= maximum:
        low = f"from {_span(minimum)} to " if minimum else "at most "
        raise UsageError(f"invalid {option} {quote(text)}: expected {low}{_span(maximum)}")
    return value
