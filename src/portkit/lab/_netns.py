"""Entering a named network namespace from Python (os.setns arrived only in Python 3.12)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

from portkit.errors import PortkitError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise PortkitError(f"setns failed: {os.strerror(err)}")


def enter(name: str) -> None:
    """Move the calling thread into the named namespace for good."""
    fd = os.open(os.path.join(NETNS_DIR, name), os.O_RDONLY)
    try:
        _setns(fd)
    finally:
        os.close(fd)


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the body in the named namespace, then return to the original one.

    Only the calling thread moves; sockets opened in the body stay in that namespace.
    """
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter(name)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)
