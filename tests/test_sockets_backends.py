"""The /proc/net fallback reads the same sockets as netlink; the bytecode filter is what Python computes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fixtures_sockets as fx
from conftest import needs_root
from portkit.sockets import ALL_STATES, SocketQuery, Transport, list_sockets
from portkit.sockets._bytecode import PortMatch, compile_filter, run_filter
from portkit.sockets._procnet import parse_table


def _comparable(rows: Any) -> set[tuple[Any, ...]]:
    # /proc has no listener backlog (Send-Q) and no bound device: everything else must agree.
    return {
        (
            s.transport,
            s.family,
            s.state,
            s.local_address,
            s.local_port,
            s.remote_address,
            s.remote_port,
            s.recv_q,
            s.send_q if not s.is_listener or s.transport is not Transport.TCP else None,
            s.uid,
            s.inode,
        )
        for s in rows
    }


@pytest.fixture(scope="module")
def scene() -> Any:
    with fx.socket_scene() as made:
        yield made


def test_proc_fallback_equals_netlink(scene: fx.Scene) -> None:
    spec = tuple((p, p) for p in scene.ports)
    query = SocketQuery(
        transports=(Transport.TCP, Transport.UDP), states=ALL_STATES, ports=(PortMatch("any", spec),)
    )
    via_netlink = list_sockets(query, backend="netlink")
    via_proc = list_sockets(query, backend="proc")
    assert via_netlink.backend == "netlink" and via_proc.backend == "proc"
    netlink_rows = [s for s in via_netlink.sockets if scene.owns(s.local_port, s.remote_port)]
    proc_rows = [s for s in via_proc.sockets if scene.owns(s.local_port, s.remote_port)]
    assert len(netlink_rows) == 11  # every socket of the scene
    assert _comparable(proc_rows) == _comparable(netlink_rows)


def test_proc_fallback_through_the_cli(cli: Any, scene: fx.Scene) -> None:
    spec = ",".join(map(str, scene.ports))
    netlink = cli("ls", "--all", "--json", "--port", spec, "--backend", "netlink").json()
    proc = cli("ls", "--all", "--json", "--port", spec, "--backend", "proc").json()
    assert proc["backend"] == "proc"

    def strip(doc: dict[str, Any]) -> set[tuple[Any, ...]]:
        return {
            (
                s["protocol"],
                s["state"],
                s["local"]["address"],
                s["local"]["port"],
                s["remote"]["port"],
                s["inode"],
            )
            for s in doc["sockets"]
            if scene.owns(s["local"]["port"], s["remote"]["port"])
        }

    assert strip(netlink) == strip(proc)


def test_listening_queries_agree_across_backends(scene: fx.Scene) -> None:
    query = SocketQuery(listening=True)
    netlink = {s for s in _comparable(list_sockets(query, backend="netlink").sockets) if s[4] in scene.own}
    proc = {s for s in _comparable(list_sockets(query, backend="proc").sockets) if s[4] in scene.own}
    assert netlink == proc and len(netlink) == 3  # tcp4, tcp6 listeners and the unconnected udp4


@needs_root
def test_proc_fallback_in_a_named_netns(cli: Any) -> None:
    with fx.named_netns() as ns, fx.listener_process("4", "tcp", netns=ns) as (_proc, _port):
        a = cli("ls", "--all", "--json", "--netns", ns, "--backend", "proc").json()
        b = cli("ls", "--all", "--json", "--netns", ns, "--backend", "netlink").json()
        assert {s["inode"] for s in a["sockets"]} == {s["inode"] for s in b["sockets"]} != set()
        assert {s["netns"] for s in a["sockets"]} == {ns}


def test_parse_table_reads_a_real_proc_line() -> None:
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000003 00:00000000 00000000  1000        0 4242 1\n"
    )
    [row] = parse_table(text, Transport.TCP, 4)
    assert (row.local_address, row.local_port, row.state.label, row.recv_q, row.uid, row.inode) == (
        "127.0.0.1",
        8080,
        "LISTEN",
        3,
        1000,
        4242,
    )


ports = st.integers(min_value=0, max_value=65535)
ranges = st.lists(st.tuples(ports, ports).map(lambda t: (min(t), max(t))), min_size=1, max_size=4)
sides = st.sampled_from(["src", "dst", "any"])


@settings(deadline=None)
@given(st.lists(st.tuples(sides, ranges), min_size=1, max_size=3), ports, ports)
def test_bytecode_runs_like_the_python_filter(matches: list[Any], sport: int, dport: int) -> None:
    built = [PortMatch(side, tuple(r)) for side, r in matches]
    expected = all(m.matches(sport, dport) for m in built)
    assert run_filter(compile_filter(built), sport, dport) is expected


def test_kernel_accepts_compound_bytecode(scene: fx.Scene) -> None:
    # ranges OR'ed, AND'ed with a second match, on both sides: the kernel's audit accepts it and
    # returns exactly what the Python filter keeps.
    tcp4, tcp6 = scene.names["tcp4"], scene.names["tcp6"]
    matches = (
        PortMatch("any", ((tcp4, tcp4), (tcp6 - 1, tcp6 + 1), (65535, 65535))),
        PortMatch("src", ((1, 65535),)),
    )
    kernel = list_sockets(SocketQuery(ports=matches))
    everything = list_sockets(SocketQuery())
    python = [s for s in everything.sockets if all(m.matches(s.local_port, s.remote_port) for m in matches)]
    mine = {tcp4, tcp6}
    assert {s.inode for s in kernel.sockets if mine & {s.local_port, s.remote_port}} == {
        s.inode for s in python if mine & {s.local_port, s.remote_port}
    }
    assert all(any(m.matches(s.local_port, s.remote_port) for m in matches[:1]) for s in kernel.sockets)
