"""The exceptions portkit raises, and what the CLI does with them.

Every error a user can cause carries a one-line message that names the bad input and
what would be accepted; the CLI prints it as one line and exits with status 2.
"""

from __future__ import annotations


class PortkitError(Exception):
    """Base class of every error portkit raises on purpose."""

    exit_status = 1


class UsageError(PortkitError, ValueError):
    """Bad input from the user: a port, an address, a spec, a file. Exit status 2."""

    exit_status = 2


class Terminated(BaseException):
    """SIGTERM arrived while portkit held something to clean up (see firewall._live).

    A BaseException, like KeyboardInterrupt, so no `except Exception` swallows it on the way out;
    the CLI reports it as "terminated" with exit status 143 (128 + SIGTERM).
    """


class PermissionNeeded(PortkitError):
    """The operation needs privileges this process does not hold."""

    exit_status = 1


QUOTE_LIMIT = 60


def _fit(text: str, budget: int, *, from_end: bool = False) -> str:
    """repr() of the longest start (or end) of `text` whose repr is at most `budget` characters."""
    n = min(len(text), budget)
    while n > 0 and len(repr(text[-n:] if from_end else text[:n])) > budget:
        n -= 1
    return repr(text[-n:] if from_end else text[:n])


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as an error message quotes it: repr-style, at most about `limit` characters in all.

    Bad input can be any length (a 400-character port list, a whole file pasted as an argument);
    a long one is shown by its start and its end (where a path's file name is) and its length,
    so the line stays readable.
    """
    text = value if isinstance(value, str) else str(value)
    whole = repr(text)
    if len(whole) <= limit:
        return whole
    size = f" ({len(text)} chars)"
    room = max(limit - len(size) - 3, 12)
    tail = room // 3
    return f"{_fit(text, room - tail)}...{_fit(text, tail, from_end=True)}{size}"
