"""Socket plumbing shared by the engines: listeners with a real backlog, resets, fd limits."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import socket
import struct
from pathlib import Path
from typing import Any

from portkit.errors import PortkitError
from portkit.model import Endpoint, Transport, parse_address

_LINGER_RESET = struct.pack("ii", 1, 0)


def somaxconn() -> int:
    """The kernel's cap on a listen backlog (net.core.somaxconn); 4096 on current kernels."""
    try:
        return max(128, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    except (OSError, ValueError):
        return 4096


def listen_backlog() -> int:
    """The backlog we ask for: the system maximum (asyncio's default of 100 drops bursts)."""
    return somaxconn()


def open_listener(listen: Endpoint, protocol: Transport, *, reuse_port: bool = False) -> socket.socket:
    """A bound, non-blocking socket for `listen`; a TCP one is already listening.

    `reuse_port` sets SO_REUSEPORT: several such sockets of this user on one address form a
    group, and the kernel spreads new connections over them by a hash of the peer's address
    (one per event loop). Any other process of the same user setting it could join such a
    group, so `claim_port` first makes sure the address is free.
    """
    sock = _bound(listen, protocol, reuse_port)
    try:
        if protocol is Transport.TCP:
            sock.listen(listen_backlog())
        else:
            # A burst of datagrams from many clients lands here at once; the default is ~200 KiB.
            grow_receive_buffer(sock, 4 << 20)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise _cannot_listen(listen, protocol, exc) from None
    return sock


def claim_port(listen: Endpoint, protocol: Transport) -> Endpoint:
    """The endpoint a group of SO_REUSEPORT listeners for `listen` should bind: `listen` with
    port 0 made a real one, after checking that no socket holds it, whether with SO_REUSEPORT
    (another forwarder's loops) or without. Raises PortkitError as `open_listener` does."""
    probe = _bound(listen, protocol, reuse_port=False)
    try:
        return bound_endpoint(probe)
    finally:
        probe.close()


def _bound(listen: Endpoint, protocol: Transport, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if listen.family == 6 else socket.AF_INET
    kind = socket.SOCK_STREAM if protocol is Transport.TCP else socket.SOCK_DGRAM
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # `[::]:80` means IPv6 and IPv4 alike, as people expect from other servers.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((str(listen.address), listen.port))
    except OSError as exc:
        sock.close()
        raise _cannot_listen(listen, protocol, exc) from None
    return sock


def _cannot_listen(listen: Endpoint, protocol: Transport, exc: OSError) -> PortkitError:
    hint = ""
    if exc.errno == errno.EACCES:
        hint = "; ports below 1024 need root or CAP_NET_BIND_SERVICE"
    elif exc.errno == errno.EADDRINUSE:
        hint = "; another process holds it (see `portkit who`)"
    return PortkitError(f"cannot listen on {protocol}/{listen}: {exc.strerror}{hint}")


def grow_receive_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a bigger receive buffer; root may exceed net.core.rmem_max (SO_RCVBUFFORCE)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33)
    for option in (force, socket.SO_RCVBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, size)
            return
        except OSError:
            continue


def bound_endpoint(sock: socket.socket) -> Endpoint:
    host, port = sock.getsockname()[:2]
    return Endpoint(parse_address(host), port)


def target_family(target: Endpoint) -> int:
    return socket.AF_INET6 if target.family == 6 else socket.AF_INET


def arm_reset(sock: Any) -> None:
    """Make the next close() send RST instead of FIN (SO_LINGER with a zero timeout)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)


def raise_fd_limit() -> int:
    """Lift RLIMIT_NOFILE's soft limit as far as allowed; every connection costs 2+ descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard
    if os.geteuid() == 0:
        with contextlib.suppress(OSError, ValueError):
            nr_open = int(Path("/proc/sys/fs/nr_open").read_text())
            want = max(hard, min(nr_open, 1 << 20))
    for candidate in (want, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (candidate, max(candidate, hard)))
            return candidate
        except (OSError, ValueError):
            continue
    return soft


def peer(address: Any) -> str:
    """`host:port` or `[v6host]:port` of a socket address tuple."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def error_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "connect timeout"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{errno.errorcode.get(exc.errno, exc.errno)} ({os.strerror(exc.errno)})"
    return str(exc) or type(exc).__name__
