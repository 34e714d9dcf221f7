"""Whether an interface exists in this network namespace, by name or index.

An IPv6 zone (`fe80::1%eth0`, `%2`) names one; the socket calls resolve it late and report an
unknown one as a resolver error, so the scanner and the forwarder check it when they read it.
"""

from __future__ import annotations

import socket


def known_interface(scope: str) -> bool:
    """`scope` (a name, or an index in ASCII digits) is an interface here."""
    try:
        if scope.isascii() and scope.isdigit():
            socket.if_indextoname(int(scope))
        else:
            socket.if_nametoindex(scope)
    except (OSError, ValueError, OverflowError):
        return False
    return True
