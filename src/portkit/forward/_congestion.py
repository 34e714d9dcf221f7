"""Congestion control of the forwarder's own TCP legs (`ForwardRule.congestion`).

`auto` (the default) gives a leg whose two ends are on this host SAME_HOST, reno: the
kernel's built-in algorithm, with no pacing of its own. Such a leg crosses no link, so an
algorithm's model has nothing to measure, while a pacing one (BBR, a common default, paces
in TCP itself when the device has no `fq` qdisc, and loopback has none) arms a timer as it
sends, which costs the forwarder CPU and throughput for nothing (the iperf3 figures are in
BENCHMARKS.md, "the congestion control of the forwarder's own legs"). Other legs keep the
kernel's default (`net.ipv4.tcp_congestion_control`). `system` never changes anything; any
other choice names an algorithm, set on every leg.

Where the choice is known before a connection exists (a named algorithm, or a loopback
address), it is set before: on the target socket before connect(), and on the listening
socket, whose accepted sockets inherit it. A socket's first algorithm sets it up when the
handshake completes (BBR switches the socket's pacing on then), and a later switch does not
undo that. Only a leg to a local address other than loopback is known to stay on this host
after the fact (its peer is its own address); it is switched once connected.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from pathlib import Path
from typing import Any

from portkit.errors import PortkitError, UsageError

SAME_HOST = "reno"
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
_PROC = Path("/proc/sys/net/ipv4")


def _proc_words(name: str) -> list[str]:
    try:
        return (_PROC / name).read_text().split()
    except OSError:
        return []


def available() -> list[str]:
    """The algorithms this kernel has loaded (empty where it does not say)."""
    return _proc_words("tcp_available_congestion_control")


def same_host(local: str, remote: str) -> bool:
    """Whether a TCP leg between these two addresses never leaves this host."""
    host = remote.partition("%")[0]
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or host == local.partition("%")[0]


def planned(choice: str, address: str) -> str | None:
    """The algorithm a leg to or from `address` gets that is known before it connects."""
    if choice == "system":
        return None
    if choice != "auto":
        return choice
    return SAME_HOST if same_host("", address) else None


def settled(choice: str, address: str) -> bool:
    """Whether `planned` said all there is: nothing is left to decide once connected."""
    return choice != "auto" or same_host("", address)


def _set(sock: Any, name: str) -> bool:
    try:
        sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, name.encode())
    except OSError:  # not loaded, or not allowed: the kernel's default stays
        return False
    return True


def preset(sock: Any, choice: str, address: str, *, reset: bool = False) -> str | None:
    """Before connect() or on a listener: set what is already known; the algorithm set, or None.

    With `reset` (a listener whose rule changed on reload), a socket for which nothing is
    planned goes back to the kernel's default, so new connections do not inherit the old choice.
    """
    name = planned(choice, address)
    if name is None and reset:
        default = _proc_words("tcp_congestion_control")
        name = default[0] if default else None
    return name if name is not None and _set(sock, name) else None


def adjust(sock: Any, choice: str) -> str | None:
    """Once connected, for `auto` legs `settled` left open: SAME_HOST if the peer is this host."""
    if choice != "auto":
        return None
    try:
        local, remote = sock.getsockname()[0], sock.getpeername()[0]
    except OSError:
        return None
    return SAME_HOST if same_host(local, remote) and _set(sock, SAME_HOST) else None


def settle(sock: Any, choice: str, address: str) -> str | None:
    """Once connected: `adjust` the leg to or from `address`, unless `preset` already settled it."""
    return None if settled(choice, address) else adjust(sock, choice)


def check(choice: str) -> None:
    """Fail, with one line, if this process cannot set a named algorithm (auto, system: fine)."""
    if choice in ("auto", "system"):
        return
    try:
        with socket.socket() as probe:
            probe.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, choice.encode())
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            loaded = " ".join(available()) or "unknown"
            raise UsageError(
                f"invalid congestion {choice!r}: no such algorithm is available (loaded: {loaded})"
            ) from None
        hint = ""
        if exc.errno == errno.EPERM:
            allowed = " ".join(_proc_words("tcp_allowed_congestion_control")) or "none"
            hint = f"; without CAP_NET_ADMIN only these are allowed: {allowed}"
        raise PortkitError(f"cannot use congestion {choice!r}: {exc.strerror}{hint}") from None
