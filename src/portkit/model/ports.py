"""Port numbers, port ranges and IANA's three port classes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from portkit.model.errors import UsageError, quote
from portkit.model.intervals import merge_intervals, runs

MIN_PORT = 0
MAX_PORT = 65535


@dataclass(frozen=True)
class PortClass:
    """One of IANA's port ranges (RFC 6335 section 6)."""

    name: str
    first: int
    last: int
    description: str

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __str__(self) -> str:
        return self.name


WELL_KNOWN = PortClass(
    "well-known", 0, 1023, "System ports, assigned by IANA through IETF review; binding needs privileges"
)
REGISTERED = PortClass("registered", 1024, 49151, "User ports, registered with IANA for specific services")
DYNAMIC = PortClass("dynamic", 49152, 65535, "Dynamic/private ports, never assigned; meant for ephemeral use")
PORT_CLASSES = (WELL_KNOWN, REGISTERED, DYNAMIC)


DECIMAL_CAP = 10**30


def parse_decimal(text: str) -> int | None:
    """`text` as a non-negative whole number when it is ASCII digits 0-9 only, else None.

    Python's int() and str.isdigit() also take '²', Arabic-Indic and other Unicode digits, and
    int() fails on numbers over 4,300 digits; user input goes through here instead. A number
    above DECIMAL_CAP comes back as DECIMAL_CAP: every bound portkit checks is far lower, so an
    over-long number fails its range check like any other too-large one.
    """
    if not text or not (text.isascii() and text.isdigit()):
        return None
    digits = text.lstrip("0") or "0"
    return DECIMAL_CAP if len(digits) > 30 else int(digits)


def validate_port(value: int | str, *, what: str = "port") -> int:
    """Return `value` as a port number 0-65535, or raise a UsageError naming it."""
    if isinstance(value, str):
        found = parse_decimal(value.strip())
        if found is None:
            raise UsageError(f"invalid {what} {quote(value)}: ports are whole numbers 0-65535")
        number = found
    elif isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"invalid {what} {quote(repr(value))}: ports are whole numbers 0-65535")
    else:
        number = value
    if not MIN_PORT <= number <= MAX_PORT:
        shown = value.strip() if isinstance(value, str) else str(number)
        raise UsageError(f"invalid {what} {quote(shown)}: ports are 0-65535")
    return number


def classify_port(port: int) -> PortClass:
    """The IANA range a port number falls in."""
    port = validate_port(port)
    for cls in PORT_CLASSES:
        if port in cls:
            return cls
    raise AssertionError("unreachable: the classes cover 0-65535")


@dataclass(frozen=True, order=True)
class PortRange:
    """An inclusive range of port numbers; a single port has first == last."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if not 0 <= self.first <= self.last <= MAX_PORT:
            raise UsageError(
                f"invalid port range {self.first}-{self.last}: expected 0 <= first <= last <= 65535"
            )

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.first, self.last + 1))

    def __str__(self) -> str:
        return str(self.first) if self.first == self.last else f"{self.first}-{self.last}"


def normalise_ranges(ranges: Iterable[PortRange]) -> tuple[PortRange, ...]:
    """Sort ranges and merge those that overlap or touch."""
    return tuple(PortRange(lo, hi) for lo, hi in merge_intervals((r.first, r.last) for r in ranges))


def ranges_from_ports(ports: Iterable[int]) -> tuple[PortRange, ...]:
    """Ports (any order, repeats allowed) as the fewest ranges."""
    return tuple(PortRange(lo, hi) for lo, hi in runs(ports))
