"""The connect() driver: many non-blocking sockets on one epoll loop, paced by `Schedule`.

No privileges needed. On loopback most connects finish inside the connect() call: a second
connect() on the same socket then returns the outcome (ECONNREFUSED, 0 once connected) and,
after a failure, leaves the socket unconnected and ready to connect again (Linux), so a
closed port costs two syscalls (connect, connect) instead of four (socket, connect,
getsockopt, close). Connects still pending (EALREADY) are asked SO_ERROR once, which also
reports an ICMP error that arrived during connect() (a "soft" error connect() itself does
not return), and otherwise wait on the selector.

The first tries of a scan of one host run those same system calls from the optional C module
`_connectio` (built from `_connectio.c`), a batch per call: refused ports come back as keys,
settled through the Schedule and the collector as columns; every other outcome comes back
as an open socket that the loop below settles or waits for exactly as it does its own.
Retransmissions, scans of several hosts and `pure_python` use the loop below alone.
"""

from __future__ import annotations

import _socket
import errno
import os
import selectors
import socket
import time
from array import array
from collections.abc import Callable, Sequence
from itertools import chain, repeat
from types import ModuleType

from portkit.scan._hosts import HostTable
from portkit.scan._schedule import Schedule
from portkit.scan._states import NO_RESPONSE, RESPONSE_CODE, Response

Record = Callable[[int, int, int], None]
RecordBatch = Callable[[list[tuple[int, int, int]]], None]
RecordColumns = Callable[[list[int], bytes, bytes], None]
Progress = Callable[[], None]

_CONNECTED = RESPONSE_CODE[Response.CONNECTED]
_REFUSED = RESPONSE_CODE[Response.REFUSED]
_ERRNO_RESPONSE = {
    0: _CONNECTED,
    errno.ECONNREFUSED: _REFUSED,
    errno.EHOSTUNREACH: RESPONSE_CODE[Response.HOST_UNREACHABLE],
    errno.ENETUNREACH: RESPONSE_CODE[Response.NET_UNREACHABLE],
    errno.EACCES: RESPONSE_CODE[Response.PROHIBITED],
}
_MAX_OPEN = 4096


def connectio() -> ModuleType | None:
    """The C module, or None when it was not built."""
    try:
        from portkit.scan import _connectio
    except ImportError:
        return None
    return _connectio


def run_connect(
    hosts: HostTable,
    ports: Sequence[int],
    schedule: Schedule,
    record: Record,
    progress: Progress | None = None,
    record_batch: RecordBatch | None = None,
    record_columns: RecordColumns | None = None,
    *,
    pure_python: bool = False,
) -> str:
    """Run the scan's connect() probes to the end; returns which code made the calls ("c" or "python")."""
    nports = len(ports)
    selector = selectors.DefaultSelector()
    open_socks: dict[int, tuple[_socket.socket, int]] = {}  # key -> (socket, tryno)
    dests: dict[int, tuple[int, str]] = {}  # host index -> (family, address)
    # The C socket type: socket.socket's Python __init__ costs more than the connect on loopback.
    new_socket = _socket.socket
    stream = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    monotonic = time.monotonic
    SO_ERROR, SOL_SOCKET = socket.SO_ERROR, socket.SOL_SOCKET

    def settle(key: int, tryno: int, err: int, sock: _socket.socket, now: float) -> None:
        response = _ERRNO_RESPONSE.get(err)
        if response == _CONNECTED:
            try:
                if sock.getsockname() == sock.getpeername():
                    # A self-connect (source port == destination port on loopback): nothing listens.
                    response = _REFUSED
            except OSError:
                response = None
        if response is not None and schedule.answered(key, tryno, now):
            record(key, response, 0)

    def record_each(answers: list[tuple[int, int, int]]) -> None:
        for key, code, ttl in answers:
            record(key, code, ttl)

    record_many = record_batch or record_each
    # A socket per family whose last connect failed: ready to connect again.
    spare: dict[int, _socket.socket] = {}
    # One host: its first tries go through the C module (see the module docstring).
    module = connectio() if len(hosts) == 1 and record_columns is not None and not pure_python else None
    c_spare = -1  # the C module's reusable socket (an fd), closed at the end
    if module is not None:
        from portkit.scan._accel import sockaddr

        only = hosts.get(0)
        assert only is not None
        c_family, c_address, c_ports = only.family, sockaddr(only), array("H", ports).tobytes()
        pending = module.PENDING

    def forget(key: int) -> None:
        entry = open_socks.pop(key, None)
        if entry is not None:
            selector.unregister(entry[0])
            entry[0].close()

    last_progress = 0.0
    try:
        while not schedule.done:
            now = monotonic()
            limit = _MAX_OPEN - len(open_socks)
            fresh, retries = schedule.next_batch(now, limit)
            einprogress, ealready, refused = errno.EINPROGRESS, errno.EALREADY, errno.ECONNREFUSED
            answers: list[tuple[int, int, int, int]] = []
            if module is not None and fresh:
                refused_keys, others, c_spare = module.connect_batch(c_address, fresh, c_ports, 0, c_spare)
                if refused_keys:
                    zeros, codes = bytes(len(refused_keys)), bytes([_REFUSED]) * len(refused_keys)
                    assert record_columns is not None
                    record_columns(*schedule.answered_columns(refused_keys, zeros, codes, zeros, now))
                for key, fd, err in others:
                    handed = new_socket(c_family, stream, 0, fd)
                    if err == pending:
                        open_socks[key] = (handed, 0)
                        selector.register(handed, selectors.EVENT_WRITE, (key, 0))
                        continue
                    settle(key, 0, err, handed, now)
                    handed.close()
                # A socket() that failed stopped the batch: the loop below meets it again.
                fresh = fresh[len(refused_keys) + len(others) :]
            for key, tryno in chain(retries, zip(fresh, repeat(0))):
                if key in open_socks:
                    forget(key)
                index, port_index = divmod(key, nports)
                dest = dests.get(index)
                if dest is None:
                    host = hosts.get(index)
                    assert host is not None
                    dest = dests[index] = (host.family, host.address)
                family = dest[0]
                sock = spare.pop(family, None) or new_socket(family, stream)
                address = (dest[1], ports[port_index])
                err = sock.connect_ex(address)
                if err == einprogress:
                    err = sock.connect_ex(address)
                    if err == ealready:
                        # Still connecting. An ICMP error that came while connect() held the
                        # socket is only a "soft" error, which SO_ERROR reports (connect does not).
                        err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                        if not err:
                            open_socks[key] = (sock, tryno)
                            selector.register(sock, selectors.EVENT_WRITE, (key, tryno))
                            continue
                        settle(key, tryno, err, sock, now)
                        sock.close()
                        continue
                if err == refused:
                    # The common case on loopback and LANs: settled, and the socket reused.
                    spare[family] = sock
                    answers.append((key, tryno, _REFUSED, 0))
                    continue
                # Connected (0, or EISCONN), or another error: this socket is not reused.
                settle(key, tryno, 0 if err == errno.EISCONN else err, sock, now)
                sock.close()
            if answers:
                record_many(schedule.answered_batch(answers, now))
            wait = 0.0 if schedule.can_send() else schedule.next_wakeup(monotonic())
            if open_socks:
                for skey, _ in selector.select(wait):
                    key, tryno = skey.data
                    sock = open_socks[key][0]
                    err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                    if err in (errno.ETIMEDOUT, errno.EINPROGRESS):
                        continue
                    settle(key, tryno, err, sock, monotonic())
                    forget(key)
            elif wait > 0:
                time.sleep(min(wait, 0.05))
            now = monotonic()
            for key in schedule.expired(now):
                forget(key)
                record(key, NO_RESPONSE, 0)
            if progress is not None and now - last_progress > 0.1:
                last_progress = now
                progress()
    finally:
        for sock, _ in open_socks.values():
            sock.close()
        for sock in spare.values():
            sock.close()
        if c_spare >= 0:
            os.close(c_spare)
        selector.close()
    return "python" if module is None else "c"
