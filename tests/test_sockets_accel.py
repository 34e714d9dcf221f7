"""The C twin of the netlink column path (portkit.sockets._diagrows) against the Python path.

Both must give the same results, byte for byte: random buffers of socket messages (both
families, every field's range, mixed sizes, types and families for the column check), and the
real socket table of this host, with and without processes.
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
from portkit.sockets._model import Transport
from portkit.sockets._netlink import NLMSG_DONE, SOCK_DIAG_BY_FAMILY, RawRows, decode

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
    return struct.pack("=IHHII", 16 + len(body), mtype, 2, 1, 0) + bytes(body)


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
