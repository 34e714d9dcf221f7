"""Congestion control of the forwarder's own TCP legs (`--congestion`, rule key `congestion`).

`auto` (the default) gives a leg between two ends on this host reno, which never paces; other
legs and `system` keep the kernel's default; a name sets that algorithm on every leg. The
oracle for what a live socket really runs is `ss -ti` (the kernel's INET_DIAG_CONG).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures_forward import ENGINES, TcpServer, echo_until_eof, forwarder
from portkit.errors import UsageError
from portkit.forward import make_rule, parse_config
from portkit.forward._sockets import same_host, set_congestion

PROC = Path("/proc/sys/net/ipv4")
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]
needs_ss = pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) as the oracle")


def _available() -> list[str]:
    return (PROC / "tcp_available_congestion_control").read_text().split()


def _system_default() -> str:
    return (PROC / "tcp_congestion_control").read_text().strip()


def _other_than(*names: str) -> str:
    """A loaded algorithm that is none of `names` (so a test can tell it was really set)."""
    for name in _available():
        if name not in names:
            return name
    pytest.skip(f"this kernel has no congestion control besides {', '.join(names)}")


def test_rule_congestion_defaults_to_auto_and_is_validated() -> None:
    assert make_rule("8080", "127.0.0.1:80").congestion == "auto"
    assert make_rule("8080", "127.0.0.1:80", congestion="System").congestion == "system"
    assert make_rule("8080", "127.0.0.1:80", congestion="RENO").congestion == "reno"
    assert make_rule("8080", "127.0.0.1:80", congestion="reno").to_json()["congestion"] == "reno"
    for bad in ("no-such-algo", "", "re no", "bbr;rm"):
        with pytest.raises(UsageError, match=r"invalid congestion .*expected auto, system or one of reno"):
            make_rule("8080", "127.0.0.1:80", congestion=bad)


def test_config_takes_congestion_per_rule() -> None:
    rules = parse_config(
        "[[rule]]\nlisten = 1\ntarget = '127.0.0.1:2'\ncongestion = 'system'\n"
        "[[rule]]\nlisten = 3\ntarget = '127.0.0.1:4'\n"
    )
    assert [r.congestion for r in rules] == ["system", "auto"]
    with pytest.raises(UsageError, match="rule 1: invalid congestion 'warp'"):
        parse_config("[[rule]]\nlisten = 1\ntarget = '127.0.0.1:2'\ncongestion = 'warp'\n")


@pytest.mark.parametrize(
    ("local", "remote", "expected"),
    [
        ("127.0.0.1", "127.0.0.1", True),
        ("10.0.0.1", "127.5.6.7", True),
        ("::1", "::1", True),
        ("::ffff:127.0.0.1", "::ffff:127.0.0.1", True),
        ("192.0.2.7", "192.0.2.7", True),  # a local address talking to itself goes over lo
        ("fe80::1%eth0", "fe80::1%eth0", True),
        ("192.0.2.7", "192.0.2.8", False),
        ("::ffff:192.0.2.7", "::ffff:198.51.100.1", False),
        ("2001:db8::1", "2001:db8::2", False),
        ("", "not-an-address", False),
    ],
)
def test_same_host(local: str, remote: str, expected: bool) -> None:
    assert same_host(local, remote) is expected


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        accepted, _ = listener.accept()
    with client, accepted:
        yield client, accepted


def _algorithm(sock: socket.socket) -> str:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    return raw.split(b"\0", 1)[0].decode()


def test_set_congestion_on_a_loopback_leg(pair: tuple[socket.socket, socket.socket]) -> None:
    client, accepted = pair
    before = _algorithm(client)
    assert set_congestion(client, "system") is None and _algorithm(client) == before
    assert set_congestion(client, "auto") == "reno" and _algorithm(client) == "reno"
    other = _other_than("reno")
    assert set_congestion(accepted, other) == other and _algorithm(accepted) == other
    assert set_congestion(accepted, "no-such-algo") is None and _algorithm(accepted) == other


def _ss_algorithms(expression: str) -> list[str]:
    """The congestion control `ss -ti` reports for each established socket matching `expression`."""
    out = subprocess.run(
        ["ss", "-tinH", "state", "established", expression], capture_output=True, text=True, timeout=10
    ).stdout
    infos = [line.split() for line in out.splitlines() if line.startswith(("\t", " "))]
    return [words[0] for words in infos if words]


def _open_and_inspect(fwd: Any, server: TcpServer) -> dict[str, list[str]]:
    with socket.create_connection(("127.0.0.1", fwd.port), timeout=5) as client:
        client.sendall(b"ping")
        assert client.recv(4) == b"ping"  # relaying: the forwarder has set up both legs
        client_port = client.getsockname()[1]
        return {
            "client": _ss_algorithms(f"( sport = :{client_port} )"),
            "accepted leg": _ss_algorithms(f"( sport = :{fwd.port} and dport = :{client_port} )"),
            "target leg": _ss_algorithms(f"( dport = :{server.port} )"),
        }


@needs_ss
@pytest.mark.parametrize("engine", ENGINES)
def test_auto_gives_loopback_legs_reno_and_leaves_the_client_alone(engine: str, tmp_path: Path) -> None:
    server = TcpServer(echo_until_eof)
    try:
        with forwarder("0", server.address, tmp_path=tmp_path, engine=engine) as fwd:
            seen = _open_and_inspect(fwd, server)
    finally:
        server.close()
    assert seen == {"client": [_system_default()], "accepted leg": ["reno"], "target leg": ["reno"]}


@needs_ss
@pytest.mark.parametrize("engine", ["splice", "asyncio"])
def test_system_and_named_choices(engine: str, tmp_path: Path) -> None:
    default = _system_default()
    named = _other_than("reno", default)
    server = TcpServer(echo_until_eof)
    try:
        for choice, expected in (("system", default), (named, named)):
            args = ("0", server.address, "--congestion", choice)
            with forwarder(*args, tmp_path=tmp_path, engine=engine) as fwd:
                assert fwd.ready["rules"][0]["congestion"] == choice
                seen = _open_and_inspect(fwd, server)
            assert seen["accepted leg"] == [expected] and seen["target leg"] == [expected], (choice, seen)
    finally:
        server.close()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to the unprivileged user nobody")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_unprivileged_named_choice_outside_the_allowed_list_is_a_clear_error(tmp_path: Path) -> None:
    allowed = (PROC / "tcp_allowed_congestion_control").read_text().split()
    name = _other_than(*allowed)  # loaded, but not allowed without CAP_NET_ADMIN
    result = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "portkit", "forward", "0", "127.0.0.1:9", "--congestion", name],
        capture_output=True,
        text=True,
        timeout=30,
        cwd="/",
        env={**os.environ, "PORTKIT_RUNTIME_DIR": str(tmp_path / "run")},
    )
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip()
    assert "Traceback" not in line and len(line.splitlines()) == 1
    assert (
        f"cannot use congestion {name!r}" in line and "only these are allowed: " + " ".join(allowed) in line
    )
