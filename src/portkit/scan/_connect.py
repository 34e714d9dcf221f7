"""The connect() driver: many non-blocking sockets on one epoll loop, paced by `Schedule`.

No privileges needed. On loopback most connects finish inside the connect() call, so the
result is read at once with SO_ERROR; only the rest wait on the selector.
"""

from __future__ import annotations

import _socket
import errno
import selectors
import socket
import time
from collections.abc import Callable, Sequence

from portkit.scan._hosts import HostTable
from portkit.scan._schedule import Schedule
from portkit.scan._states import NO_RESPONSE, RESPONSE_CODE, Response

Record = Callable[[int, int, int], None]
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


def run_connect(
    hosts: HostTable,
    ports: Sequence[int],
    schedule: Schedule,
    record: Record,
    progress: Progress | None = None,
) -> None:
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
            probes = schedule.next_probes(now, limit)
            answered, einprogress, refused = schedule.answered, errno.EINPROGRESS, errno.ECONNREFUSED
            for key, tryno in probes:
                if key in open_socks:
                    forget(key)
                index, port_index = divmod(key, nports)
                dest = dests.get(index)
                if dest is None:
                    host = hosts.get(index)
                    assert host is not None
                    dest = dests[index] = (host.family, host.address)
                sock = new_socket(dest[0], stream)
                err = sock.connect_ex((dest[1], ports[port_index]))
                if err == einprogress:
                    err = sock.getsockopt(SOL_SOCKET, SO_ERROR)
                    if err == 0:
                        open_socks[key] = (sock, tryno)
                        selector.register(sock, selectors.EVENT_WRITE, (key, tryno))
                        continue
                if err == refused:
                    # The common case on loopback and LANs, settled without a further call.
                    sock.close()
                    if answered(key, tryno, now):
                        record(key, _REFUSED, 0)
                    continue
                settle(key, tryno, err, sock, now)
                sock.close()
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
        selector.close()
