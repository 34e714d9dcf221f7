"""The C path of connect() scans (portkit.scan._connectio) against the loop in _connect.py.

Real sockets on 127.0.0.1 are the oracle: a listener's port connects, a port nothing listens
on is refused, and both paths of a whole scan give the same states port by port.
"""

from __future__ import annotations

import errno
import os
import socket
from array import array
from collections.abc import Iterator

import pytest

from conftest import needs_root
from portkit.model import Protocol
from portkit.registry import parse_port_spec
from portkit.scan import PortState, ScanOptions, ScanType, run_scan
from portkit.scan._accel import sockaddr
from portkit.scan._hosts import HostTable
from portkit.scan._targets import parse_targets
from portkit.testing import LabNamespace

connectio = pytest.importorskip("portkit.scan._connectio", reason="the C module was not built (no compiler?)")


@pytest.fixture
def listeners() -> Iterator[list[int]]:
    socks = []
    try:
        for _ in range(3):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(64)
            socks.append(sock)
        yield [s.getsockname()[1] for s in socks]
    finally:
        for sock in socks:
            sock.close()


def free_port() -> int:
    """A port nothing listens on (bound, then released: the kernel hands it out again rarely)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def loopback() -> bytes:
    host = HostTable(parse_targets(["127.0.0.1"])).get(0)
    assert host is not None
    return sockaddr(host)


def test_refused_ports_come_back_as_keys_and_connected_ones_as_sockets(listeners: list[int]) -> None:
    closed = [free_port() for _ in range(3)]
    ports = [closed[0], listeners[0], closed[1], listeners[1], closed[2]]
    refused, others, spare = connectio.connect_batch(
        loopback(), [0, 1, 2, 3, 4], array("H", ports).tobytes(), 0, -1
    )
    try:
        assert refused == [0, 2, 4]
        assert [(key, err) for key, _, err in others] == [(1, 0), (3, 0)]
        for _, fd, _ in others:
            with socket.socket(fileno=fd) as sock:  # the connected sockets are the caller's
                assert sock.getpeername()[1] in listeners
        assert spare >= 0  # the refused socket, unconnected, for the next batch
        again, more, spare2 = connectio.connect_batch(loopback(), [0], array("H", ports).tobytes(), 0, spare)
        assert (again, more, spare2) == ([0], [], spare)  # reused, not a new socket
    finally:
        if spare >= 0:
            os.close(spare)


def test_the_spare_socket_reconnects_like_a_fresh_one(listeners: list[int]) -> None:
    """Linux leaves a socket whose connect() was refused unconnected: the next connect() is a new one."""
    closed = free_port()
    ports = array("H", [closed, listeners[2]]).tobytes()
    refused, _, spare = connectio.connect_batch(loopback(), [0], ports, 0, -1)
    assert refused == [0]
    refused, others, left = connectio.connect_batch(loopback(), [1], ports, 0, spare)
    assert refused == [] and [(k, fd, e) for k, fd, e in others] == [(1, spare, 0)] and left == -1
    os.close(spare)


def test_bad_calls_are_refused() -> None:
    ports = array("H", [1, 2]).tobytes()
    with pytest.raises(ValueError, match="not one of this host's"):
        connectio.connect_batch(loopback(), [5], ports, 0, -1)
    with pytest.raises(ValueError, match="sockaddr"):
        connectio.connect_batch(b"\x00" * 3, [0], ports, 0, -1)
    with pytest.raises(ValueError, match="array"):
        connectio.connect_batch(loopback(), [0], b"\x01", 0, -1)
    with pytest.raises(TypeError):
        connectio.connect_batch(loopback(), (0,), ports, 0, -1)
    assert connectio.PENDING not in (0, errno.ECONNREFUSED)


def test_both_paths_of_a_connect_scan_agree_port_by_port(listeners: list[int]) -> None:
    low = min(listeners)
    spec = f"{max(1, low - 300)}-{min(65535, low + 300)},{','.join(map(str, listeners))}"
    found = {}
    paths = {}
    for pure in (False, True):
        lines: list[str] = []
        options = ScanOptions(
            targets=("127.0.0.1",),
            ports=spec,
            scan_type=ScanType.CONNECT,
            skip_discovery=True,
            timing=4,
            workers=1,
            pure_python=pure,
            all_ports_listed=True,
            debug=lines.append,
        )
        (host,) = run_scan(options).hosts
        assert host.extraports == []
        found[pure] = {p.port: (p.state, p.reason) for p in host.ports}
        paths[pure] = " ".join(lines)
    assert "io=c " in paths[False] and "io=python " in paths[True]
    assert found[False] == found[True]
    assert len(found[False]) == len(set(parse_port_spec(spec).ports(Protocol.TCP)))
    assert all(found[False][port][0] is PortState.OPEN for port in listeners)
    assert sum(state is PortState.CLOSED for state, _ in found[False].values()) >= 500


@needs_root
@pytest.mark.parametrize("scan_type", [ScanType.CONNECT, ScanType.SYN])
def test_two_workers_find_what_one_worker_finds(scan_type: ScanType) -> None:
    """Two forked workers, each with its half of the probes (the C paths on): one worker's listing."""
    with LabNamespace("pkcw") as ns, ns.inside():
        socks = []
        try:
            for port in (22, 4242, 9999, 11999):
                sock = socket.socket()
                sock.bind(("127.0.0.1", port))
                sock.listen(8)
                socks.append(sock)
            listings = []
            for workers in (1, 2):
                lines: list[str] = []
                options = ScanOptions(
                    targets=("127.0.0.1",),
                    ports="1-12000",
                    scan_type=scan_type,
                    skip_discovery=True,
                    timing=4,
                    workers=workers,
                    debug=lines.append,
                )
                (host,) = run_scan(options).hosts
                assert len(lines) == workers
                sent = [int(line.split(" sent=")[1].split()[0]) for line in lines]
                assert sum(sent) == 12000 and all(sent)
                listings.append(([(p.port, p.state, p.reason) for p in host.ports], host.extraports))
        finally:
            for sock in socks:
                sock.close()
    assert listings[0] == listings[1]
    assert [port for port, *_ in listings[0][0]] == [22, 4242, 9999, 11999]
