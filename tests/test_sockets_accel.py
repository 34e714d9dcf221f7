"""The C twin of the netlink column path (portkit.sockets._diagrows) against the Python path.

Both must give the same results, byte for byte: random buffers of socket messages (both
families, every field's range, mixed sizes, types and families for the column check and for
cutting mixed buffers to equal rows), and the real socket table of this host, with and without
processes. The fd-link reader (portkit.sockets._fdlinks) is held to its Python reference on
processes holding known sockets. The one-walk TCP dump (TCPDIAG_GETSOCK) is held to the per-family dumps on a
namespace holding both families, TIME-WAIT and listening sockets.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
import struct
import subprocess
import sys
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fixtures_sockets as fx
from conftest import needs_root
from portkit.sockets import SocketQuery, _jsonout, _netlink, list_sockets
from portkit.sockets._inventory import Inventory
from portkit.sockets._model import ALL_STATES, TcpState, Transport
from portkit.sockets._netlink import (
    NLMSG_DONE,
    SOCK_DIAG_BY_FAMILY,
    TCPDIAG_GETSOCK,
    RawRows,
    SockDiagClient,
    _decode_rows,
    by_family,
    decode,
    dump_all,
)

diagrows = pytest.importorskip("portkit.sockets._diagrows", reason="C accelerator not built")

ports = st.integers(min_value=0, max_value=65535)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
address_pairs = st.one_of(
    st.tuples(st.just(4), st.ip_addresses(v=4), st.ip_addresses(v=4)),
    st.tuples(st.just(6), st.ip_addresses(v=6), st.ip_addresses(v=6)),
)
# Every state byte, known or not: an unknown one prints as "" on both paths.
state_bytes = st.integers(min_value=0, max_value=255)
raw_sockets = st.tuples(address_pairs, ports, ports, state_bytes, u32, u32, u32, u32, u32)


def _message(sock: tuple, extra: bytes = b"", mtype: int = SOCK_DIAG_BY_FAMILY) -> bytes:  # type: ignore[type-arg]
    (family, src, dst), sport, dport, state, rq, wq, uid, inode, ifindex = sock
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    body = struct.pack("=BBBB", af, state, 0, 0) + struct.pack("!HH", sport, dport)
    body += src.packed.ljust(16, b"\0") + dst.packed.ljust(16, b"\0")
    body += struct.pack("=I8sIIIII", ifindex, b"\xff" * 8, 0, rq, wq, uid, inode) + extra
    # Netlink pads each message to 4 bytes; the length field leaves the padding out.
    padding = b"\0" * (-len(body) % 4)
    return struct.pack("=IHHII", 16 + len(body), mtype, 2, 1, 0) + bytes(body) + padding


def _both(work: Callable[[], object]) -> tuple[object, object]:
    """`work()` with the C module, then with the Python path (as an install without a compiler has)."""
    with_c = work()
    users = (_netlink, _jsonout)  # the decoder's column check and the JSON writer
    saved = [getattr(module, "_diagrows") for module in users]  # noqa: B009 (private: mypy would refuse)
    for module in users:
        setattr(module, "_diagrows", None)  # noqa: B010
    try:
        return with_c, work()
    finally:
        for module, original in zip(users, saved, strict=True):
            setattr(module, "_diagrows", original)  # noqa: B010


@settings(deadline=None, max_examples=80)
@given(
    st.lists(raw_sockets, min_size=1, max_size=30), st.sampled_from([4, 6]), st.sampled_from([b"", b"\0" * 8])
)
def test_json_lines_are_the_same_in_c_and_python(socks: list, family: int, extra: bytes) -> None:  # type: ignore[type-arg]
    same = [s for s in socks if s[0][0] == family] or [socks[0]]
    buf = b"".join(_message(s, extra) for s in same) + struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)
    lazy: list = []  # type: ignore[type-arg]
    assert decode(buf, Transport.TCP, lazy, netns='pk3-"x"', lazy=True) is True
    assert isinstance(lazy[0], RawRows)
    inventory = Inventory(_rows=tuple(lazy), backend="netlink", namespaces=())
    with_c, in_python = _both(lambda: "".join(inventory.json_chunks()))
    assert with_c == in_python


@settings(deadline=None, max_examples=80)
@given(
    st.lists(
        st.tuples(raw_sockets, st.sampled_from([b"", b"\0" * 8]), st.sampled_from([SOCK_DIAG_BY_FAMILY, 3])),
        min_size=1,
        max_size=12,
    ),
    st.integers(min_value=0, max_value=7),
)
def test_column_check_is_the_same_in_c_and_python(messages: list, cut: int) -> None:  # type: ignore[type-arg]
    buf = b"".join(_message(s, extra, mtype) for s, extra, mtype in messages)
    buf = buf[: len(buf) - cut]  # a truncated last message is not part of the run
    (size,) = struct.unpack_from("=I", buf)
    count = len(buf) // size
    assume(count > 0)  # _decode_columns leaves a buffer shorter than one message to the row path
    body = buf[: count * size]
    with_c, in_python = _both(lambda: _netlink._uniform_family(body, size, count))
    assert with_c == in_python
    uniform = all(len(_message(s, e, t)) == size and t == SOCK_DIAG_BY_FAMILY for s, e, t in messages[:count])
    families = {s[0][0] for s, _e, _t in messages[:count]}
    if not uniform or len(families) > 1:
        assert with_c == -1


def test_c_refuses_what_it_cannot_read() -> None:
    loopback = ipaddress.ip_address("127.0.0.1")
    message = _message(((4, loopback, loopback), 1, 2, 1, 0, 0, 0, 0, 0))
    states = [""] * 256
    with pytest.raises(ValueError):
        diagrows.json_text(message, len(message), 2, 4, "", states, "")  # more rows than the body holds
    with pytest.raises(ValueError):
        diagrows.json_text(message, len(message), 1, 4, "é", states, "")  # output is built as ASCII
    with pytest.raises(ValueError):
        diagrows.json_text(message, len(message), 1, 4, "", states, ["", ""])  # one tail per row
    with pytest.raises(TypeError):
        diagrows.json_text(message, len(message), 1, 4, "", states[:10], "")
    assert diagrows.uniform_family(message[:40], 88) == -1


# Attributes after struct inet_diag_msg, as full sockets carry them and TIME-WAIT ones do not
# (INET_DIAG_SHUTDOWN padded to 8 bytes; a 12-byte one; one whose length needs padding).
attributes = st.sampled_from([b"", b"\x05\x00\x08\x00\x00\x00\x00\x00", b"\0" * 12, b"\x05\x00\x05\x00\x01"])
DONE = struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)
message_types = st.sampled_from([SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK, NLMSG_DONE])
# Sockets in states the kernel reports (Socket.to_json needs a known state).
known_states = st.sampled_from(list(TcpState))
known_sockets = st.tuples(address_pairs, ports, ports, known_states, u32, u32, u32, u32, u32)


@settings(deadline=None, max_examples=120)
@given(
    st.lists(
        st.tuples(raw_sockets, attributes, message_types),
        min_size=1,
        max_size=16,
    ),
    st.sampled_from([SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK]),
    st.integers(min_value=0, max_value=7),
)
def test_cutting_mixed_buffers_is_the_same_in_c_and_python(messages: list, mtype: int, cut: int) -> None:  # type: ignore[type-arg]
    buf = b"".join(_message(s, extra, kind) for s, extra, kind in messages)
    buf = buf[: len(buf) - cut]
    with_c, in_python = _both(lambda: _netlink._socket_heads(buf, mtype))
    assert with_c == in_python
    heads, family, used = in_python  # type: ignore[misc]
    # The run: leading whole messages of type mtype and of the first one's family.
    expected, offset, families = [], 0, set()
    for sock, extra, kind in messages:
        whole = _message(sock, extra, kind)
        af = socket.AF_INET if sock[0][0] == 4 else socket.AF_INET6
        whole_length = struct.unpack_from("=I", whole)[0]
        if kind != mtype or offset + whole_length > len(buf) or (families and af not in families):
            break
        families.add(af)
        expected.append(struct.pack("=I", 88) + whole[4:88])
        offset += len(whole)
    assert heads == b"".join(expected)
    assert used == min(offset, len(buf))
    assert family == (families.pop() if families else -1)


@settings(deadline=None, max_examples=80)
@given(
    st.lists(st.tuples(known_sockets, attributes), min_size=1, max_size=24),
    st.sampled_from([4, 6]),
    st.sampled_from([SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK]),
)
def test_mixed_sizes_decode_and_print_like_the_row_path(messages: list, family: int, mtype: int) -> None:  # type: ignore[type-arg]
    # One family, sizes mixed as full and TIME-WAIT sockets interleave in a real dump: the
    # buffer is cut to equal rows (RawRows); its sockets and JSON are the row-at-a-time path's.
    same = [(s, e) for s, e in messages if s[0][0] == family] or [messages[0]]
    buf = b"".join(_message(s, extra, mtype) for s, extra in same) + DONE
    row_at_a_time: list = []  # type: ignore[type-arg]
    assert _decode_rows(buf, Transport.TCP, row_at_a_time, "pk3-x", False, None, 0, None, mtype) is True
    for eager_or_lazy in (False, True):
        rows: list = []  # type: ignore[type-arg]
        assert decode(buf, Transport.TCP, rows, netns="pk3-x", lazy=eager_or_lazy, mtype=mtype) is True
        if eager_or_lazy:
            assert all(isinstance(row, RawRows) for row in rows)  # the column path ran on all of it
        inventory = Inventory(_rows=tuple(rows), backend="netlink", namespaces=())
        assert inventory.sockets == tuple(row_at_a_time)
        with_c, in_python = _both(lambda: "".join(inventory.json_chunks()))  # noqa: B023
        assert with_c == in_python
        assert json.loads(str(with_c))["sockets"] == [s.to_json() for s in row_at_a_time]


MIXED_HOLDER = r"""
import socket, sys
count = int(sys.argv[1])
held = []
for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
    server = socket.socket(family)
    server.bind((host, 0))
    server.listen(64)
    address = server.getsockname()[:2]
    for n in range(count):
        client = socket.create_connection(address, timeout=5)
        accepted = server.accept()[0]
        if n % 2:  # the client closes first: its side stays in TIME-WAIT
            client.close()
            accepted.close()
        else:
            held += [client, accepted]
    held.append(server)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.bind(("127.0.0.1", 0))
print("ready", flush=True)
sys.stdin.read()
"""


@needs_root
def test_one_walk_of_tcp_gives_the_per_family_dumps_rows_in_their_order() -> None:
    with fx.named_netns() as ns:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", MIXED_HOLDER, "200"]
        holder = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "ready"
            from portkit.testing import inside

            with inside(ns):
                per_family: list = []  # type: ignore[type-arg]
                with SockDiagClient() as client:
                    for family in (4, 6):
                        client.dump(Transport.TCP, family, ALL_STATES, rows=per_family, netns=ns)
                    one_walk = client.dump(Transport.TCP, 0, ALL_STATES, netns=ns)  # no fallback here
                assert by_family(one_walk) == per_family
                for lazy in (False, True):
                    walked = dump_all([Transport.TCP], [4, 6], ALL_STATES, netns=ns, lazy=lazy)
                    assert Inventory(_rows=tuple(walked), backend="netlink", namespaces=()).sockets == tuple(
                        per_family
                    )
                inventory = list_sockets(SocketQuery())
        finally:
            holder.kill()
            holder.wait(timeout=10)
    states = [s.state for s in per_family]
    assert states.count(TcpState.TIME_WAIT) == 200 and states.count(TcpState.ESTABLISHED) == 400
    assert [s.family for s in per_family] == sorted(s.family for s in per_family)  # IPv4 first
    assert any(isinstance(row, RawRows) for row in inventory._rows)
    with_c, in_python = _both(lambda: "".join(inventory.json_chunks()))
    assert with_c == in_python
    assert json.loads(str(with_c)) == json.loads(json.dumps(inventory.to_json()))


HOLDER = r"""
import socket, sys
server = socket.create_server(("127.0.0.1", 0))
held = []
for _ in range(int(sys.argv[1])):
    held.append(socket.create_connection(server.getsockname(), timeout=5))
    held.append(server.accept()[0])
print(server.getsockname()[1], flush=True)
sys.stdin.read()
"""


@needs_root
def test_a_namespaces_table_prints_the_same_in_c_and_python() -> None:
    # A private namespace holds only our connections, so its dump is made of equal-sized
    # messages (the root namespace's TIME-WAIT sockets would send buffers to the row path).
    with fx.named_netns() as ns:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", HOLDER, "300"]
        holder = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None
            port = int(holder.stdout.readline())
            for with_processes in (False, True):
                inventory = list_sockets(SocketQuery(with_processes=with_processes), netns=ns)
                assert any(isinstance(row, RawRows) for row in inventory._rows)  # the column path ran
                with_c, in_python = _both(lambda: "".join(inventory.json_chunks()))  # noqa: B023
                assert with_c == in_python
                document = json.loads(str(with_c))
                assert document == json.loads(json.dumps(inventory.to_json()))
                mine = [s for s in document["sockets"] if port in (s["local"]["port"], s["remote"]["port"])]
                assert len(mine) == 601
                if with_processes:
                    assert all(
                        s["processes"] == [{"pid": holder.pid, "name": "python3"}] for s in mine
                    ) or all(s["processes"] and s["processes"][0]["pid"] == holder.pid for s in mine)
        finally:
            holder.kill()
            holder.wait(timeout=10)


@settings(deadline=None, max_examples=150)
@given(
    st.integers(min_value=88, max_value=140),
    st.integers(min_value=1, max_value=4),
    st.sampled_from([4, 6]),
    st.binary(min_size=0, max_size=600),
    st.booleans(),
)
def test_any_bytes_read_alike_in_c_and_python(
    size: int, count: int, version: int, noise: bytes, lie: bool
) -> None:
    # Arbitrary bytes where messages belong (lengths, types and families that lie included):
    # the C reads only inside count * size and writes what the Python path writes.
    body = (noise * (size * count // max(len(noise), 1) + 1) or bytes(1))[: size * count].ljust(
        size * count, b"\0"
    )
    if not lie:  # headers that tell the truth, so the uniform check can also say yes
        fixed = bytearray(body)
        for i in range(count):
            struct.pack_into("=IH", fixed, i * size, size, SOCK_DIAG_BY_FAMILY)
            fixed[i * size + 16] = socket.AF_INET if version == 4 else socket.AF_INET6
        body = bytes(fixed)
    with_c, in_python = _both(lambda: _netlink._uniform_family(body, size, count))
    assert with_c == in_python
    states = [""] * 256
    states[1] = "established"
    rows = RawRows(body, size, count, Transport.TCP, version, None, None)
    with_c, in_python = _both(lambda: _jsonout.raw_rows_text(rows, states, "null", {}))
    assert with_c == in_python


def test_every_path_releases_its_buffer() -> None:
    # A bytearray cannot be resized while a buffer of it is held: one left unreleased by any
    # return path (error or not) would make the append below raise BufferError.
    held = bytearray(200)
    states = [""] * 256
    calls: list[Callable[[], object]] = [
        lambda: diagrows.uniform_family(held, 88),
        lambda: diagrows.uniform_family(held, 0),
        lambda: diagrows.json_text(held, 88, 2, 4, "", states, ""),
        lambda: diagrows.json_text(held, 88, 3, 4, "", states, ""),
        lambda: diagrows.json_text(held, 88, 1, 5, "", states, ""),
        lambda: diagrows.json_text(held, 88, 1, 4, "", states[:3], ""),
        lambda: diagrows.json_text(held, 88, 1, 4, "é", states, ""),
        lambda: diagrows.json_text(held, 88, 1, 4, "", states, [1]),
        lambda: diagrows.json_text(held, 88, 1, 4, "", states, 5),
    ]
    for call in calls:
        with contextlib.suppress(TypeError, ValueError):
            call()
        held.append(0)
        held.pop()


FD_HOLDER = r"""
import socket, sys
held = [socket.socket() for _ in range(50)]
held += [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(20)]
held += list(socket.socketpair())
files = [open("/dev/null") for _ in range(10)]
print(" ".join(str(s.fileno()) for s in held), flush=True)
sys.stdin.read()
"""


def test_fd_links_read_alike_in_c_and_python() -> None:
    import os

    from portkit.sockets import _fdlinks, _procs

    command = [sys.executable, "-c", FD_HOLDER]
    holder = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        fds = holder.stdout.readline().split()
        expected = {os.stat(f"/proc/{holder.pid}/fd/{fd}").st_ino for fd in fds}
        for pid in (holder.pid, os.getpid()):
            directory = os.open(f"/proc/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                in_c = _fdlinks.socket_inodes(directory)
                in_python = _procs._socket_inodes_py(directory)
                assert in_c == in_python
                assert _fdlinks.socket_inodes(directory) == in_c  # the descriptor is left as it was
            finally:
                os.close(directory)
            if pid == holder.pid:
                assert set(in_c) == expected and len(in_c) == len(fds)
        # The holders map: every holder socket maps to the holder, with and without C.
        wanted = set(expected)
        with_c, in_python = _both_procs(lambda: _procs.find_owners(wanted).owners)
        assert with_c == in_python
        assert all(holder.pid in with_c[inode] for inode in expected)  # type: ignore[index]
    finally:
        holder.kill()
        holder.wait(timeout=10)
    with pytest.raises(OSError):
        _fdlinks.socket_inodes(-1)
    assert _procs._socket_inodes(-1) == []


def _both_procs(work: Callable[[], object]) -> tuple[object, object]:
    """`work()` with portkit.sockets._fdlinks, then with the Python path."""
    from portkit.sockets import _procs

    with_c = work()
    saved = getattr(_procs, "_fdlinks")  # noqa: B009 (private: mypy would refuse)
    setattr(_procs, "_fdlinks", None)  # noqa: B010
    try:
        return with_c, work()
    finally:
        setattr(_procs, "_fdlinks", saved)  # noqa: B010
