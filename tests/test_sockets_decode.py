"""Property tests for the two decoders: netlink messages and /proc/net lines, built from random sockets."""

from __future__ import annotations

import ipaddress
import json
import socket
import struct
import sys

from hypothesis import given, settings
from hypothesis import strategies as st

from portkit.sockets import TcpState, Transport
from portkit.sockets._inventory import Inventory
from portkit.sockets._netlink import NLMSG_DONE, SOCK_DIAG_BY_FAMILY, RawRows, _decode_rows, decode
from portkit.sockets._procnet import parse_table

ports = st.integers(min_value=0, max_value=65535)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
v4 = st.ip_addresses(v=4)
v6 = st.ip_addresses(v=6)
states = st.sampled_from([s for s in TcpState if s is not TcpState.NEW_SYN_RECV])
address_pairs = st.one_of(st.tuples(st.just(4), v4, v4), st.tuples(st.just(6), v6, v6))
raw_sockets = st.tuples(address_pairs, ports, ports, states, u32, u32, u32, u32, u32)


def _message(sock: tuple, extra_attr: bytes) -> bytes:  # type: ignore[type-arg]
    (family, src, dst), sport, dport, state, rq, wq, uid, inode, ifindex = sock
    af = socket.AF_INET if family == 4 else socket.AF_INET6
    body = struct.pack("=BBBB", af, state, 0, 0)
    body += struct.pack("!HH", sport, dport)
    body += src.packed.ljust(16, b"\0") + dst.packed.ljust(16, b"\0")
    body += struct.pack("=I8sIIIII", ifindex, b"\xff" * 8, 0, rq, wq, uid, inode)
    payload = body + extra_attr
    return struct.pack("=IHHII", 16 + len(payload), SOCK_DIAG_BY_FAMILY, 2, 1, 0) + payload


# No deadline: the machine is shared, and a slow example is not a wrong one.
@settings(deadline=None, max_examples=60)
@given(st.lists(raw_sockets, min_size=1, max_size=20))
def test_netlink_decode_reads_back_every_field(socks: list) -> None:  # type: ignore[type-arg]
    # An attribute after each message (INET_DIAG_SHUTDOWN, 1 byte padded to 8) must be skipped.
    attr = struct.pack("=HHB3x", 5, 8, 0)
    buf = b"".join(_message(s, attr) for s in socks) + struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)
    rows: list = []  # type: ignore[type-arg]
    assert decode(buf, Transport.TCP, rows, netns="pk3-x") is True
    assert len(rows) == len(socks)
    for row, ((family, src, dst), sport, dport, state, rq, wq, uid, inode, ifindex) in zip(
        rows, socks, strict=True
    ):
        assert (row.family, row.local_port, row.remote_port, row.state) == (family, sport, dport, state)
        assert ipaddress.ip_address(row.local_address) == src
        assert ipaddress.ip_address(row.remote_address) == dst
        assert (row.recv_q, row.send_q, row.uid, row.inode, row.interface) == (rq, wq, uid, inode, ifindex)
        assert row.netns == "pk3-x" and row.processes == ()


def _proc_hex(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    raw = address.packed
    if sys.byteorder == "little":
        raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return raw.hex().upper()


@settings(deadline=None, max_examples=60)
@given(st.lists(raw_sockets, min_size=1, max_size=20))
def test_proc_table_reads_back_every_field(socks: list) -> None:  # type: ignore[type-arg]
    lines = [
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
    ]
    for n, ((_family, src, dst), sport, dport, state, rq, wq, uid, inode, _if) in enumerate(socks):
        lines.append(
            f"{n:4}: {_proc_hex(src)}:{sport:04X} {_proc_hex(dst)}:{dport:04X} {state:02X} "
            f"{wq:08X}:{rq:08X} 00:00000000 00000000 {uid:5} 0 {inode} 1 0000000000000000 20 4 30 10 -1"
        )
    family = socks[0][0][0]
    same_family = [s for s in socks if s[0][0] == family]
    text = "\n".join(
        [lines[0], *(line for line, s in zip(lines[1:], socks, strict=True) if s[0][0] == family)]
    )
    rows = parse_table(text, Transport.TCP, family)
    assert len(rows) == len(same_family)
    for row, ((_f, src, dst), sport, dport, state, rq, wq, uid, inode, _if) in zip(
        rows, same_family, strict=True
    ):
        assert ipaddress.ip_address(row.local_address) == src and row.local_port == sport
        assert ipaddress.ip_address(row.remote_address) == dst and row.remote_port == dport
        assert (row.state, row.recv_q, row.send_q, row.uid, row.inode) == (state, rq, wq, uid, inode)


@settings(deadline=None, max_examples=40)
@given(st.lists(raw_sockets, min_size=1, max_size=20), st.sampled_from([4, 6]), st.booleans())
def test_lazy_rows_build_and_print_like_eager_rows(socks: list, family: int, shorter_tail: bool) -> None:  # type: ignore[type-arg]
    # One family per buffer, as the kernel dumps them: such buffers take the column decoder;
    # a last message without the attribute (a TIME-WAIT socket's shape) must still be read.
    same = [s for s in socks if s[0][0] == family] or [socks[0]]
    attr = struct.pack("=HHB3x", 5, 8, 0)
    messages = [_message(s, attr) for s in same]
    if shorter_tail:
        messages[-1] = _message(same[-1], b"")
    buf = b"".join(messages) + struct.pack("=IHHIIi", 20, NLMSG_DONE, 2, 1, 0, 0)
    eager: list = []  # type: ignore[type-arg]
    row_at_a_time: list = []  # type: ignore[type-arg]
    lazy: list = []  # type: ignore[type-arg]
    assert decode(buf, Transport.TCP, eager, netns="pk3-x") is True
    assert _decode_rows(buf, Transport.TCP, row_at_a_time, "pk3-x", False, None, 0, None) is True
    assert decode(buf, Transport.TCP, lazy, netns="pk3-x", lazy=True) is True
    assert eager == row_at_a_time
    if not shorter_tail:
        assert isinstance(lazy[0], RawRows)  # the column path ran
    inventory = Inventory(_rows=tuple(lazy), backend="netlink", namespaces=())
    assert inventory.sockets == tuple(eager)
    fresh = Inventory(_rows=tuple(lazy), backend="netlink", namespaces=())
    text = "".join(fresh.json_chunks())
    assert json.loads(text)["sockets"] == [s.to_json() for s in eager]
