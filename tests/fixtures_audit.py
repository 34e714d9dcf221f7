"""Real listening sockets for the `portkit audit` tests, held open by one process in a namespace.

`holding_listeners(ns, specs)` starts a Python process inside `ns` that binds and listens on
every `ADDRESS:PORT` in `specs` (TCP; an IPv6 address gets a dual-stack socket), waits until all
are bound, and kills the process, by its handle, when the block ends.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence

from portkit.testing import LabNamespace

HOLDER = r"""
import socket, sys
held = []
for spec in sys.argv[1:]:
    address, port = spec.rsplit(":", 1)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.bind((address, int(port)))
    s.listen(64)
    held.append(s)
print("ready", flush=True)
sys.stdin.read()
"""


@contextlib.contextmanager
def holding_listeners(ns: LabNamespace, specs: Sequence[str]) -> Iterator[None]:
    """TCP listeners on every `ADDRESS:PORT` of `specs` inside `ns` for the body of the block."""
    holder = subprocess.Popen(
        ns.command([sys.executable, "-c", HOLDER, *specs]),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        yield
    finally:
        holder.kill()
        holder.wait(timeout=10)
