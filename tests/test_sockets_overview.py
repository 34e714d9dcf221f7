"""The overview (the default `portkit` command): exposure groups, connection counts, worth a look."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import fixtures_sockets as fx
from portkit.sockets import Exposure, Socket, TcpState, Transport, build_overview, exposure_of
from portkit.sockets._overview import ServiceFacts


def test_exposure_of_addresses() -> None:
    assert exposure_of("0.0.0.0") is Exposure.ALL
    assert exposure_of("::") is Exposure.ALL
    assert exposure_of("127.0.0.53") is Exposure.LOOPBACK
    assert exposure_of("::1") is Exposure.LOOPBACK
    assert exposure_of("::ffff:127.0.0.1") is Exposure.LOOPBACK
    assert exposure_of("192.0.2.7") is Exposure.SPECIFIC
    # SO_BINDTODEVICE lo (index 1 in every namespace): only this host's own packets arrive there.
    assert exposure_of("0.0.0.0", 1) is Exposure.LOOPBACK
    assert exposure_of("::", 1) is Exposure.LOOPBACK
    assert exposure_of("0.0.0.0", 7) is Exposure.ALL  # another device: never said to be less exposed


def _row(port: int, address: str, state: TcpState = TcpState.LISTEN, remote: int = 0, **kw: Any) -> Socket:
    family = 6 if ":" in address else 4
    peer = "::" if family == 6 else "0.0.0.0"
    return Socket(Transport.TCP, family, state, address, port, peer, remote, 0, 0, kw.get("uid", 0), 1, 0)


def test_overview_groups_counts_and_flags() -> None:
    facts = {
        23: ServiceFacts("telnet", "remote-access", "cleartext logins"),
        5432: ServiceFacts("postgresql", "database"),
        8080: ServiceFacts("http-alt", "web"),
    }
    listeners = [
        _row(23, "0.0.0.0"),
        _row(23, "::"),
        _row(5432, "0.0.0.0", uid=110),
        _row(8080, "127.0.0.1", uid=1000),
        _row(6000, "192.0.2.7", uid=1000),
    ]
    connections = [
        _row(23, "10.1.1.1", TcpState.ESTABLISHED, 40000),
        _row(8080, "127.0.0.1", TcpState.ESTABLISHED, 40001),
        _row(8080, "127.0.0.1", TcpState.ESTABLISHED, 40002),
        _row(40001, "127.0.0.1", TcpState.ESTABLISHED, 8080),  # the client end: not counted for 8080
    ]
    result = build_overview(listeners, connections, lambda port, _t: facts.get(port, ServiceFacts()))
    groups = result.by_exposure()
    assert [(entry.port, entry.addresses) for entry in groups[Exposure.ALL]] == [
        (23, ("0.0.0.0", "::")),
        (5432, ("0.0.0.0",)),
    ]
    assert [entry.port for entry in groups[Exposure.LOOPBACK]] == [8080]
    assert [entry.port for entry in groups[Exposure.SPECIFIC]] == [6000]
    assert {entry.port: entry.established for entry in result.listeners} == {23: 1, 5432: 0, 8080: 2, 6000: 0}
    reasons = {c.listener.port: c.reason for c in result.concerns}
    assert set(reasons) == {23, 5432}  # loopback 8080 and the user's unregistered 6000 are fine
    assert "cleartext" in reasons[23] and "database" in reasons[5432]
    assert result.established_total == 4


def test_default_command_is_the_overview(cli: Any) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        port = server.getsockname()[1]
        result = cli()
        assert result.status == 0, result.stderr
        assert "Listening on loopback only" in result.stdout
        line = next(line for line in result.stdout.splitlines() if line.startswith(f"{port}/tcp"))
        assert "127.0.0.1" in line and f"/{os.getpid()}" in line
        assert "established TCP sockets" in result.stdout
    finally:
        server.close()


def test_overview_flags_a_database_port_on_all_interfaces(cli: Any) -> None:
    # A redis-like listener on every interface, but inside our own namespace, so nothing is exposed.
    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root for a private network namespace")
    code = (
        "import socket, sys\ns = socket.socket(); s.bind(('0.0.0.0', 6379)); s.listen()\n"
        "print(1, flush=True); sys.stdin.read()"
    )
    with fx.named_netns() as ns:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", code],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None and proc.stdout.readline()
            doc = cli("overview", "--netns", ns, "--json").json()
            [entry] = doc["listeners"]
            assert (entry["port"], entry["exposure"], entry["service"]) == (6379, "all", "redis")
            assert [w["port"] for w in doc["worth_a_look"]] == [6379]
            text = cli("overview", "--netns", ns).stdout
            assert "Worth a look" in text and "6379/tcp (redis" in text
        finally:
            proc.kill()
            proc.wait()


def test_one_ports_facts_are_what_the_overview_finds() -> None:
    # `who` asks about one port (port_facts reads only that port's lines of the built-in
    # table); the overview loads the table once (registry_facts). Same answers, every port the
    # table names and some it does not, both transports, and a transport without ports.
    from portkit.registry import Registry, Source
    from portkit.sockets._overview import port_facts, registry_facts

    whole = registry_facts(Registry())
    ports = sorted({s.port for s in Registry().layer(Source.BUILTIN)} | {0, 1, 9999, 65535})
    assert len(ports) > 50
    for port in ports:
        for transport in (Transport.TCP, Transport.UDP, Transport.RAW):
            assert port_facts(Registry(), port, transport) == whole(port, transport), (port, transport)
