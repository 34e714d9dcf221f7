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


class PermissionNeeded(PortkitError):
    """The operation needs privileges this process does not hold."""

    exit_status = 1


QUOTE_LIMIT = 60


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """`value` as an error message quotes it: repr-style, and at most about `limit` characters.

    Bad input can be any length (a 400-character port list, a whole file pasted as an argument);
    a long one is shown by its start and its end (where a path's file name is) with its length,
    so the line stays readable.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    tail = limit // 3
    return f"{text[: limit - tail - 3]!r}...{text[-tail:]!r} ({len(text)} characters)"
