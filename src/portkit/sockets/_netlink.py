"""A standard-library NETLINK_SOCK_DIAG client: the kernel's socket table, as `ss` reads it.

`build_request` and `decode` are pure (bytes in, bytes or rows out); `SockDiagClient` is the
thin I/O layer around an AF_NETLINK socket. Layouts come from linux/inet_diag.h and
linux/netlink.h. Decoding is the hot path of `portkit ls --all`. The kernel fills each recv()
buffer with messages of one size (same attributes for every socket of a dump), so a buffer is
decoded as columns: `struct.iter_unpack` splits it, and `zip`/`map` over C callables (a dict
of address texts, a table of states, `tuple.__new__`) build the rows without running Python
bytecode per socket. A buffer that mixes message sizes (TIME-WAIT and SYN-RECV sockets carry no
attributes after struct inet_diag_msg, full sockets do, and the kernel sends them interleaved
in hash-table order) is first cut to equal-sized rows (`_socket_heads`): without tcp_info no
attribute is read, so the rows decode to the same values. The row-at-a-time path remains for
tcp_info, counted states, and whatever ends a run (NLMSG_DONE, an error, a short message).

Three loops of the column path have a C twin in portkit.sockets._diagrows (built when a compiler
is present; `ACCELERATED` says whether it was): checking that a buffer holds only equal-sized
socket messages (`_uniform_family`, here), cutting a mixed buffer to equal-sized rows
(`_socket_heads`, here), and writing their JSON lines (portkit.sockets._jsonout, with every
other JSON writer of the inventory). The Python code is the reference and the fallback; tests
run both and require the same results.
"""

from __future__ import annotations

# The C module behind `socket`: the same functions, without socket.py's conversion of its
# constants into enums at import (portkit.sockets, "Import cost").
import _socket as socket
import os
import struct
from functools import cache as functools_cache
from functools import partial
from itertools import repeat
from operator import itemgetter

from portkit.model.protocols import Transport
from portkit.sockets._model import Socket, TcpState

try:
    from portkit.sockets import _diagrows
except ImportError:  # installed without a C compiler: the Python path does the same work
    _diagrows = None  # type: ignore[assignment]

ACCELERATED = _diagrows is not None

TYPE_CHECKING = False  # no typing (nor json) at run time: see portkit.sockets._model
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from portkit.sockets._process import ProcessInfo
    from portkit.sockets._procs import Holders
    from portkit.sockets._tcpinfo import TcpInfo

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
# The older inet_diag request (struct inet_diag_req), still served by every kernel: it names
# no family, so one dump walks the TCP tables once for IPv4 and IPv6 together, where two
# SOCK_DIAG_BY_FAMILY dumps walk them twice (each skipping the other family's sockets).
# Its replies are the same inet_diag_msg, with this message type.
TCPDIAG_GETSOCK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
IPPROTO_RAW = 255

_NLMSGHDR = struct.Struct("=IHHII")
_U32 = struct.Struct("=I")
# struct inet_diag_req_v2: family, protocol, ext, pad (raw protocol for raw sockets), states,
# then struct inet_diag_sockid (ports, addresses, interface, cookie) left zero for a dump.
_REQ_V2 = struct.Struct("=BBBBI48x")
# struct inet_diag_req: family (ignored), address lengths, ext, struct inet_diag_sockid (zero
# for a dump), states, dbs (ignored).
_REQ_V1 = struct.Struct("=BBBB48xII")
_RTATTR = struct.Struct("=HH")
# nlmsghdr (16 bytes) + struct inet_diag_msg (72 bytes), skipping the fields portkit does not
# use (flags, seq, pid, timer, retrans, cookie, expires) so each row unpacks into 13 values.
# Ports are in network order: read natively, then swapped with ntohs (a no-op on big-endian hosts).
_ROW = struct.Struct("=IH10xBB2xHH16s16sI12xIIII")
_ROW_SIZE = _ROW.size
_TCP_INFO_HEAD = struct.Struct("=8B24I")
_TCP_INFO_RATES = struct.Struct("=4Q")
_TCP_INFO_SEGS = struct.Struct("=4I")
_TCP_INFO_TAIL = struct.Struct("=Q")

_IPPROTO = {Transport.TCP: socket.IPPROTO_TCP, Transport.UDP: socket.IPPROTO_UDP, Transport.RAW: IPPROTO_RAW}
_AF = {4: socket.AF_INET, 6: socket.AF_INET6}


_STATES: list[TcpState | None] = [None] * 256
for _state in TcpState:
    _STATES[_state] = _state


def state_mask(states: Iterable[TcpState]) -> int:
    mask = 0
    for state in states:
        mask |= 1 << state
    return mask


# No TCP socket in CLOSE is ever dumped (a bound, unconnected one sits only in the bind hash,
# which inet_diag does not walk), but asking for CLOSE makes the kernel walk the established
# hash, which every namespace's connections share: 1.6 ms a dump here even for a namespace
# with no socket, against microseconds for the listening hash alone. So TCP never asks for it.
_TCP_NEVER_DUMPED = 1 << TcpState.CLOSE


def build_request(
    transport: Transport,
    family: int,
    states: int,
    *,
    seq: int = 1,
    tcp_info: bool = False,
    bytecode: bytes = b"",
) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request (nlmsghdr + inet_diag_req_v2 + optional bytecode)."""
    ext = 1 << (INET_DIAG_INFO - 1) if tcp_info and transport is Transport.TCP else 0
    raw_protocol = IPPROTO_RAW if transport is Transport.RAW else 0  # IPPROTO_RAW here = every protocol
    if transport is Transport.TCP:
        states &= ~_TCP_NEVER_DUMPED
    body = _REQ_V2.pack(_AF[family], _IPPROTO[transport], ext, raw_protocol, states)
    if bytecode:
        body += _RTATTR.pack(_RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + body


def build_tcp_request(states: int, *, seq: int = 1, tcp_info: bool = False, bytecode: bytes = b"") -> bytes:
    """One TCPDIAG_GETSOCK dump request: TCP sockets of both families, in one walk."""
    ext = 1 << (INET_DIAG_INFO - 1) if tcp_info else 0
    body = _REQ_V1.pack(0, 0, 0, ext, states & ~_TCP_NEVER_DUMPED, 0)
    if bytecode:
        body += _RTATTR.pack(_RTATTR.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    header = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), TCPDIAG_GETSOCK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def decode_tcp_info(blob: bytes) -> TcpInfo:
    """`struct tcp_info` (linux/tcp.h); older kernels send a shorter struct, missing fields read 0."""
    from portkit.sockets._tcpinfo import TcpInfo

    blob = blob.ljust(216, b"\0")
    head = _TCP_INFO_HEAD.unpack_from(blob, 0)
    u32 = head[8:]  # rto, ato, snd_mss, rcv_mss, unacked, sacked, lost, retrans, fackets, ...
    pacing_rate, _max_pacing, bytes_acked, bytes_received = _TCP_INFO_RATES.unpack_from(blob, 104)
    segs_out, segs_in, _notsent, min_rtt = _TCP_INFO_SEGS.unpack_from(blob, 136)
    (delivery_rate,) = _TCP_INFO_TAIL.unpack_from(blob, 160)
    (bytes_sent,) = _TCP_INFO_TAIL.unpack_from(blob, 200)
    (bytes_retrans,) = _TCP_INFO_TAIL.unpack_from(blob, 208)
    return TcpInfo(
        rto=u32[0],
        ato=u32[1],
        snd_mss=u32[2],
        rcv_mss=u32[3],
        unacked=u32[4],
        lost=u32[6],
        retrans=u32[7],
        rtt=u32[15],
        rttvar=u32[16],
        snd_ssthresh=u32[17],
        snd_cwnd=u32[18],
        total_retrans=u32[23],
        pacing_rate=pacing_rate,
        bytes_acked=bytes_acked,
        bytes_received=bytes_received,
        segs_out=segs_out,
        segs_in=segs_in,
        min_rtt=min_rtt,
        delivery_rate=delivery_rate,
        bytes_sent=bytes_sent,
        bytes_retrans=bytes_retrans,
    )


class DumpError(OSError):
    """The kernel answered a dump request with an error (errno set)."""


def decode(
    buf: bytes,
    transport: Transport,
    rows: list[Socket],
    *,
    netns: str | None = None,
    with_info: bool = False,
    owners: Holders | None = None,
    count_mask: int = 0,
    tally: list[int] | None = None,
    lazy: bool = False,
    mtype: int = SOCK_DIAG_BY_FAMILY,
) -> bool:
    """Append the sockets in one recv() buffer to `rows`; True once NLMSG_DONE is seen.

    `owners` (inode -> processes), when given, fills each row's processes as it is built.
    Sockets whose state bit is in `count_mask` are only counted, in `tally[0]`.
    With `lazy`, a run of equal-sized messages is appended as one `RawRows` instead of
    Sockets (only callers that know how to expand it ask for that). `mtype` is the message
    type of the socket messages (TCPDIAG_GETSOCK answers a build_tcp_request).
    """
    if not with_info and not count_mask:
        done = _decode_columns(buf, transport, rows, netns, owners, lazy, mtype)
        if done is not None:
            return done
    return _decode_rows(buf, transport, rows, netns, with_info, owners, count_mask, tally, mtype)


class _AddressText(dict[bytes, str]):
    """The text of a raw 16-byte address, converted once per distinct value (a C-level lookup)."""

    def __init__(self, family: int) -> None:
        super().__init__()
        self._af = socket.AF_INET if family == 4 else socket.AF_INET6
        self._size = 4 if family == 4 else 16

    def __missing__(self, raw: bytes) -> str:
        text = self[raw] = socket.inet_ntop(self._af, raw[: self._size])
        return text


# A host's sockets share few addresses; the texts are kept for the life of the process.
_ADDRESS_TEXT = {4: _AddressText(4), 6: _AddressText(6)}
_FAMILY_VERSION = {socket.AF_INET: 4, socket.AF_INET6: 6}
_new_socket = partial(tuple.__new__, Socket)
_FIRST = itemgetter(0)


@functools_cache
def _column_structs(size: int) -> tuple[struct.Struct, struct.Struct, struct.Struct, struct.Struct]:
    """For messages of `size` bytes: the whole layout, its ports in network order, the
    (length, type, family) that say whether a buffer holds only such socket messages, and
    the inode alone (the last field of inet_diag_msg)."""
    return (
        struct.Struct(f"={_ROW.format[1:]}{size - _ROW_SIZE}x"),
        struct.Struct(f">20xHH{size - 24}x"),
        struct.Struct(f"=IH10xB{size - 17}x"),
        struct.Struct(f"={_ROW_SIZE - 4}xI{size - _ROW_SIZE}x"),
    )


def _decode_columns(
    buf: bytes,
    transport: Transport,
    rows: list[Socket],
    netns: str | None,
    owners: Holders | None,
    lazy: bool = False,
    mtype: int = SOCK_DIAG_BY_FAMILY,
) -> bool | None:
    """Decode a buffer's leading socket messages column by column; None if it starts with none.

    A buffer of equal-sized messages is decoded in place; any other is cut to equal-sized rows
    first (`_socket_heads`). What ends the run (NLMSG_DONE, an error) is left to `_decode_rows`.
    """
    end = len(buf)
    if end < _ROW_SIZE:
        return None
    (size,) = _U32.unpack_from(buf, 0)
    count = end // size if size >= _ROW_SIZE and not size & 3 else 0
    version = _FAMILY_VERSION.get(_uniform_family(buf[: count * size], size, count, mtype)) if count else None
    if version is not None:
        body, used = buf[: count * size], count * size
    else:
        body, family, used = _socket_heads(buf, mtype)
        version = _FAMILY_VERSION.get(family)
        if version is None:
            return None
        size = _ROW_SIZE
        count = len(body) // size
    batch = RawRows(body, size, count, transport, version, netns, owners)
    if lazy:
        rows.append(batch)  # type: ignore[arg-type]
    else:
        rows.extend(batch.build())
    rest = buf[used:]
    if not rest:
        return False
    return _decode_rows(rest, transport, rows, netns, False, owners, 0, None, mtype)


_ROW_LENGTH = _U32.pack(_ROW_SIZE)


def _socket_heads(buf: bytes, mtype: int = SOCK_DIAG_BY_FAMILY) -> tuple[bytes, int, int]:
    """The leading run of socket messages (of type `mtype`) of `buf` that share the first one's
    family, each cut to its first `_ROW_SIZE` bytes (header and struct inet_diag_msg, length set
    to match) and joined; their family (-1 for no run); and the offset where the run ends."""
    if _diagrows is not None:
        return _diagrows.socket_heads(buf, mtype)
    heads: list[bytes] = []
    family = -1
    end = len(buf)
    off = 0
    while end - off >= _ROW_SIZE:
        mlen, kind = _NLMSGHDR.unpack_from(buf, off)[:2]
        if kind != mtype or mlen < _ROW_SIZE or mlen > end - off:
            break
        if heads and buf[off + 16] != family:
            break
        family = buf[off + 16]
        heads.append(_ROW_LENGTH + buf[off + 4 : off + _ROW_SIZE])
        off += (mlen + 3) & ~3
    return b"".join(heads), family, min(off, end)


def _uniform_family(body: bytes, size: int, count: int, mtype: int = SOCK_DIAG_BY_FAMILY) -> int:
    """The address family of `body`'s `count` messages of `size` bytes when every one is a socket
    message (of type `mtype`) of that size and of one family, else -1."""
    if _diagrows is not None:
        return _diagrows.uniform_family(body, size, mtype)
    lengths, types, families = zip(*_column_structs(size)[2].iter_unpack(body), strict=True)
    family: int = families[0]
    uniform = (
        lengths.count(size) == count
        and types.count(mtype) == count
        and families.count(family) == count
    )
    return family if uniform else -1


def _build_columns(
    body: bytes | memoryview,
    size: int,
    count: int,
    transport: Transport,
    version: int,
    netns: str | None,
    owners: Holders | None,
) -> Iterator[Socket]:
    whole, ports, _check, _inode = _column_structs(size)
    (_len, _type, _family, states, _sp, _dp, src, dst, ifindex, rqueue, wqueue, uid, inode) = zip(
        *whole.iter_unpack(body), strict=True
    )
    sport, dport = zip(*ports.iter_unpack(body), strict=True)
    text = _ADDRESS_TEXT[version].__getitem__
    holders = repeat((), count) if owners is None else owners.lookup(inode)
    # Socket's fields in order.
    return map(
        _new_socket,
        zip(
            repeat(transport, count),
            repeat(version, count),
            map(_STATES.__getitem__, states),
            map(text, src),
            sport,
            map(text, dst),
            dport,
            rqueue,
            wqueue,
            uid,
            inode,
            ifindex,
            repeat(netns, count),
            holders,
            repeat(None, count),
            strict=True,
        ),
    )


class RawRows:
    """Sockets still in the kernel's bytes: equal-sized messages of one recv() buffer.

    `list_sockets` keeps them this way when nothing needs to look at single rows, so that
    `Inventory.json_chunks()` can write each socket's JSON straight from the message
    (portkit.sockets._jsonout) instead of building a Socket and then reading it back;
    `build()` gives the same rows as the decoder would have appended.
    """

    __slots__ = ("body", "count", "netns", "owners", "size", "transport", "version")

    def __init__(
        self,
        body: bytes,
        size: int,
        count: int,
        transport: Transport,
        version: int,
        netns: str | None,
        owners: Holders | None,
    ) -> None:
        self.body = body
        self.size = size
        self.count = count
        self.transport = transport
        self.version = version
        self.netns = netns
        self.owners = owners

    def _inodes(self) -> Iterator[int]:
        return map(_FIRST, _column_structs(self.size)[3].iter_unpack(self.body))

    def build(self) -> list[Socket]:
        args = (self.body, self.size, self.count, self.transport, self.version, self.netns, self.owners)
        return list(_build_columns(*args))

    def processes(self) -> Iterator[tuple[ProcessInfo, ...]]:
        """Each socket's processes, in order (all () when none were looked up)."""
        if self.owners is None:
            return repeat((), self.count)
        return self.owners.lookup(self._inodes())


def _decode_rows(
    buf: bytes,
    transport: Transport,
    rows: list[Socket],
    netns: str | None,
    with_info: bool,
    owners: Holders | None,
    count_mask: int,
    tally: list[int] | None,
    socket_type: int = SOCK_DIAG_BY_FAMILY,
) -> bool:
    """The row-at-a-time decoder: any mix of message sizes, tcp_info, and counted states."""
    unpack_row = _ROW.unpack_from
    ntop = socket.inet_ntop
    v4 = _ADDRESS_TEXT[4]
    v6 = _ADDRESS_TEXT[6]
    states = _STATES
    ntohs = socket.ntohs
    new = tuple.__new__
    append = rows.append
    held = owners.get if owners is not None else None
    end = len(buf)
    off = 0
    while off < end:
        if off + _ROW_SIZE <= end:
            (mlen, mtype, family, state, sport, dport, src, dst, ifindex, rqueue, wqueue, uid, inode) = (
                unpack_row(buf, off)
            )
        else:
            mlen, mtype = _NLMSGHDR.unpack_from(buf, off)[:2]
        if mtype == socket_type and count_mask and (count_mask >> state) & 1:
            tally[0] += 1  # type: ignore[index]
        elif mtype == socket_type:
            if family == 2:
                version = 4
                local = v4.get(src)
                if local is None:
                    local = v4[src] = ntop(socket.AF_INET, src[:4])
                remote = v4.get(dst)
                if remote is None:
                    remote = v4[dst] = ntop(socket.AF_INET, dst[:4])
            else:
                version = 6
                local = v6.get(src)
                if local is None:
                    local = v6[src] = ntop(socket.AF_INET6, src)
                remote = v6.get(dst)
                if remote is None:
                    remote = v6[dst] = ntop(socket.AF_INET6, dst)
            info = _find_tcp_info(buf, off + _ROW_SIZE, off + mlen) if with_info else None
            # Socket's fields in order; tuple.__new__ skips NamedTuple's keyword handling.
            # fmt: off
            append(new(Socket, (transport, version, states[state], local, ntohs(sport), remote, ntohs(dport),
                                rqueue, wqueue, uid, inode, ifindex, netns,
                                () if held is None else held(inode), info)))
            # fmt: on
        elif mtype == NLMSG_DONE:
            _done_error(buf, off, mlen)
            return True
        elif mtype == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", buf, off + _NLMSGHDR.size)
            if error:
                raise DumpError(-error, os.strerror(-error))
        off += (mlen + 3) & ~3
    return False


def _done_error(buf: bytes, off: int, mlen: int) -> None:
    """A dump that failed says so in NLMSG_DONE's payload (e.g. -ENOENT: no raw_diag module)."""
    if mlen >= _NLMSGHDR.size + 4:
        (error,) = struct.unpack_from("=i", buf, off + _NLMSGHDR.size)
        if error < 0:
            raise DumpError(-error, os.strerror(-error))


def count(buf: bytes) -> tuple[int, bool]:
    """How many socket messages one recv() buffer holds, and whether NLMSG_DONE is among them."""
    unpack = _NLMSGHDR.unpack_from
    end = len(buf)
    off = 0
    found = 0
    while off < end:
        mlen, mtype, _flags, _seq, _pid = unpack(buf, off)
        if mtype == SOCK_DIAG_BY_FAMILY:
            found += 1
        elif mtype == NLMSG_DONE:
            _done_error(buf, off, mlen)
            return found, True
        elif mtype == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", buf, off + _NLMSGHDR.size)
            if error:
                raise DumpError(-error, os.strerror(-error))
        off += (mlen + 3) & ~3
    return found, False


def _find_tcp_info(buf: bytes, start: int, end: int) -> TcpInfo | None:
    off = start
    while off + _RTATTR.size <= end:
        length, kind = _RTATTR.unpack_from(buf, off)
        if length < _RTATTR.size:
            break
        if kind == INET_DIAG_INFO:
            return decode_tcp_info(buf[off + _RTATTR.size : off + length])
        off += (length + 3) & ~3
    return None


class SockDiagClient:
    """Dumps sockets over one NETLINK_SOCK_DIAG socket (of the namespace it was created in)."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> SockDiagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def count(
        self, transport: Transport, family: int, states: Iterable[TcpState], *, bytecode: bytes = b""
    ) -> int:
        """How many sockets `dump` would return, without building them."""
        self._seq += 1
        self._sock.send(
            build_request(transport, family, state_mask(states), seq=self._seq, bytecode=bytecode)
        )
        total, done = 0, False
        while not done:
            found, done = count(self._sock.recv(65536))
            total += found
        return total

    def dump(
        self,
        transport: Transport,
        family: int,
        states: Iterable[TcpState],
        *,
        bytecode: bytes = b"",
        tcp_info: bool = False,
        netns: str | None = None,
        rows: list[Socket] | None = None,
        owners: Holders | None = None,
        count_states: Iterable[TcpState] = (),
        tally: list[int] | None = None,
        lazy: bool = False,
    ) -> list[Socket]:
        """Every socket of one transport and family in `states` that passes `bytecode`.

        Family 0 means TCP sockets of both families in one walk of the kernel's tables, in the
        order of that walk (`dump_all` puts them in ss's order).
        Sockets in `count_states` are not built but counted into `tally[0]`; `lazy`: see decode.
        """
        self._seq += 1
        count_mask = state_mask(count_states)
        mask = state_mask(states) | count_mask
        mtype = SOCK_DIAG_BY_FAMILY
        if family == 0 and transport is Transport.TCP:
            request = build_tcp_request(mask, seq=self._seq, tcp_info=tcp_info, bytecode=bytecode)
            mtype = TCPDIAG_GETSOCK
        else:
            request = build_request(
                transport, family, mask, seq=self._seq, tcp_info=tcp_info, bytecode=bytecode
            )
        self._sock.send(request)
        out: list[Socket] = [] if rows is None else rows
        recv = self._sock.recv
        with_info = tcp_info and transport is Transport.TCP
        while not decode(
            recv(65536),
            transport,
            out,
            netns=netns,
            with_info=with_info,
            owners=owners,
            count_mask=count_mask,
            tally=tally if tally is not None else [0],
            lazy=lazy,
            mtype=mtype,
        ):
            pass
        return out


def dump_all(
    transports: Sequence[Transport],
    families: Sequence[int],
    states: Iterable[TcpState],
    *,
    bytecode: bytes = b"",
    tcp_info: bool = False,
    netns: str | None = None,
    owners: Holders | None = None,
    count_states: Iterable[TcpState] = (),
    tally: list[int] | None = None,
    lazy: bool = False,
) -> list[Socket]:
    """Every wanted socket of this namespace over one netlink socket, in ss's order (tcp, udp,
    raw; IPv4 before IPv6 within each).

    TCP of both families is read in one walk of the kernel's tables (TCPDIAG_GETSOCK), then
    split by family keeping the walk's order: the same rows, in the same order, as one dump per
    family gives (each of those walks the same tables, skipping the other family's sockets).
    """
    wanted = list(states)
    counted = list(count_states)
    rows: list[Socket] = []
    tally = tally if tally is not None else [0]
    with SockDiagClient() as client:

        def dump(transport: Transport, family: int) -> None:
            client.dump(
                transport,
                family,
                wanted,
                bytecode=bytecode,
                tcp_info=tcp_info,
                netns=netns,
                rows=rows,
                owners=owners,
                count_states=counted,
                tally=tally,
                lazy=lazy,
            )

        for transport in transports:
            if transport is Transport.TCP and sorted(families) == [4, 6]:
                start, tallied = len(rows), tally[0]
                try:
                    dump(transport, 0)
                except DumpError:  # a kernel that refuses the older request: one dump per family
                    del rows[start:]
                    tally[0] = tallied
                else:
                    rows[start:] = by_family(rows[start:])
                    continue
            for family in families:
                dump(transport, family)
    return rows


def by_family(rows: Sequence[Socket]) -> list[Socket]:
    """`rows` (which may hold RawRows) with every IPv4 row before every IPv6 row, each family in
    its own order."""
    four: list[Socket] = []
    six: list[Socket] = []
    for row in rows:
        version = row.version if isinstance(row, RawRows) else row.family
        (four if version == 4 else six).append(row)
    return four + six
