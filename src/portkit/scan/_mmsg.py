"""Batched datagram reads: recvmmsg(2) through libc into fixed-size slots, one syscall per batch.

A raw scan of 65,535 ports reads 65,535 replies; one `recv` per reply costs a Python call
and a syscall each. `SlotReceiver` reads up to `count` datagrams per call, each truncated to
`slot` bytes (the headers are all a scan looks at), into one buffer that `struct.iter_unpack`
then walks in C. Linux only; `available()` says whether libc has recvmmsg.
"""

from __future__ import annotations

import ctypes
import socket

MSG_DONTWAIT = 0x40


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("len", ctypes.c_uint)]


_libc: ctypes.CDLL | None = None


def _recvmmsg() -> ctypes._NamedFuncPointer | None:
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return getattr(_libc, "recvmmsg", None)


def available() -> bool:
    return _recvmmsg() is not None


class SlotReceiver:
    """Reads queued datagrams of a non-blocking socket, `count` at a time, `slot` bytes each."""

    def __init__(self, sock: socket.socket, slot: int = 64, count: int = 1024) -> None:
        call = _recvmmsg()
        if call is None:
            raise OSError("recvmmsg is not available")
        call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
        call.restype = ctypes.c_int
        self._call = call
        self.sock = sock  # kept open as long as we read it
        self.fd = sock.fileno()
        self.slot, self.count = slot, count
        self.buffer = ctypes.create_string_buffer(slot * count)
        self._iovs = (_Iovec * count)()
        self._msgs = (_Mmsghdr * count)()
        base = ctypes.addressof(self.buffer)
        for i in range(count):
            self._iovs[i].base = base + slot * i
            self._iovs[i].len = slot
            self._msgs[i].hdr.iov = ctypes.addressof(self._iovs[i])
            self._msgs[i].hdr.iovlen = 1
        self._msgs_ptr = ctypes.addressof(self._msgs)
        self._base = base

    def read(self) -> bytes:
        """The slots filled, back to back (b"" when nothing is queued).

        A datagram shorter than `slot` leaves stale bytes after its end: callers read only
        fields the socket's filter has already proven present.
        """
        got = self._call(self.fd, self._msgs_ptr, self.count, MSG_DONTWAIT, None)
        if got <= 0:
            return b""
        return ctypes.string_at(self._base, self.slot * got)


def _sendmmsg() -> ctypes._NamedFuncPointer | None:
    _recvmmsg()  # loads libc
    return getattr(_libc, "sendmmsg", None) if _libc is not None else None


class SlotSender:
    """Sends up to `count` datagrams of `slot` bytes each to one address in one sendmmsg(2).

    Callers write the datagrams into `buffer` back to back (struct.pack_into), then `send(n)`.
    """

    def __init__(self, sock: socket.socket, sockaddr: bytes, slot: int, count: int) -> None:
        call = _sendmmsg()
        if call is None:
            raise OSError("sendmmsg is not available")
        call.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
        call.restype = ctypes.c_int
        self._call = call
        self.sock = sock
        self.fd = sock.fileno()
        self.slot, self.count = slot, count
        self.buffer = ctypes.create_string_buffer(slot * count)
        self._name = ctypes.create_string_buffer(sockaddr, len(sockaddr))
        self._iovs = (_Iovec * count)()
        self._msgs = (_Mmsghdr * count)()
        base = ctypes.addressof(self.buffer)
        for i in range(count):
            self._iovs[i].base = base + slot * i
            self._iovs[i].len = slot
            hdr = self._msgs[i].hdr
            hdr.name = ctypes.addressof(self._name)
            hdr.namelen = len(sockaddr)
            hdr.iov = ctypes.addressof(self._iovs[i])
            hdr.iovlen = 1
        self._msgs_ptr = ctypes.addressof(self._msgs)
        self._size = ctypes.sizeof(_Mmsghdr)

    def send(self, n: int) -> int:
        """Send the first `n` slots; a datagram the kernel refuses (ENOBUFS...) is skipped, as lost."""
        done = 0
        while done < n:
            sent = self._call(self.fd, self._msgs_ptr + done * self._size, n - done, 0)
            done += sent if sent > 0 else 1
        return n
