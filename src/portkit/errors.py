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
