"""Pure parts of the inventory: cgroup places, docker-proxy, advice, state names, --watch marks."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from portkit.errors import UsageError
from portkit.sockets import (
    ProcessInfo,
    Socket,
    TcpState,
    Transport,
    diff,
    parse_cgroup,
    parse_docker_proxy,
    parse_port_proto,
)
from portkit.sockets._who import advice_for

DOCKER_ID = "4f1d0c8e2b7a9c3d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5"


@pytest.mark.parametrize(
    ("text", "unit", "container", "runtime"),
    [
        ("0::/system.slice/ssh.service\n", "ssh.service", "", ""),
        (
            "0::/user.slice/user-1000.slice/user@1000.service/app.slice/redis.service\n",
            "redis.service",
            "",
            "",
        ),
        ("0::/user.slice/user-1000.slice/session-4.scope\n", "session-4.scope", "", ""),
        (
            "12:name=systemd:/system.slice/nginx.service\n11:memory:/system.slice/nginx.service\n0::/\n",
            "nginx.service",
            "",
            "",
        ),
        (f"0::/system.slice/docker-{DOCKER_ID}.scope\n", "", DOCKER_ID, "docker"),
        (f"12:memory:/docker/{DOCKER_ID}\n1:name=systemd:/docker/{DOCKER_ID}\n", "", DOCKER_ID, "docker"),
        (f"0::/machine.slice/libpod-{DOCKER_ID}.scope/container\n", "", DOCKER_ID, "podman"),
        (
            f"0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{DOCKER_ID}.scope\n",
            "",
            DOCKER_ID,
            "containerd",
        ),
        ("0::/\n", "", "", ""),
    ],
)
def test_parse_cgroup(text: str, unit: str, container: str, runtime: str) -> None:
    place = parse_cgroup(text)
    assert (place.unit, place.container, place.runtime) == (unit, container, runtime)


def test_parse_docker_proxy() -> None:
    proxy = parse_docker_proxy(
        [
            "/usr/bin/docker-proxy",
            "-proto",
            "tcp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "8080",
            "-container-ip",
            "172.17.0.2",
            "-container-port",
            "80",
        ]
    )
    assert proxy is not None
    assert (proxy.host_port, proxy.container_ip, proxy.container_port) == (8080, "172.17.0.2", 80)
    assert parse_docker_proxy(["/usr/sbin/nginx", "-g", "daemon off;"]) is None
    assert parse_docker_proxy(["/usr/bin/docker-proxy", "-proto", "tcp"]) is None


def test_advice_prefers_container_then_service_then_kill() -> None:
    boxed = ProcessInfo(10, "nginx", container=DOCKER_ID, container_runtime="docker", container_name="web")
    service = ProcessInfo(11, "sshd", uid=0, unit="ssh.service", parents=((1, "systemd"),))
    user_service = ProcessInfo(12, "redis", uid=1000, unit="redis.service", parents=((900, "systemd"),))
    plain = ProcessInfo(13, "python3", cmdline=("python3", "-m", "http.server"), unit="session-4.scope")
    assert advice_for(boxed).command == "docker stop web"
    assert advice_for(service).command == "systemctl stop ssh.service"
    assert advice_for(user_service).command == "systemctl --user stop redis.service"
    assert advice_for(plain).command == "kill 13"


def test_state_filters_use_ss_names() -> None:
    assert TcpState.parse_filter("established") == {TcpState.ESTABLISHED}
    assert TcpState.parse_filter("TIME_WAIT") == {TcpState.TIME_WAIT}
    assert TcpState.LISTEN in TcpState.parse_filter("all")
    assert TcpState.LISTEN not in TcpState.parse_filter("connected")
    with pytest.raises(UsageError, match="invalid state 'nope'"):
        TcpState.parse_filter("nope")


def test_parse_port_proto() -> None:
    assert parse_port_proto("22") == (22, None)
    assert str(parse_port_proto("53/UDP")[1]) == "udp"
    with pytest.raises(UsageError):
        parse_port_proto("65536")


def _sock(port: int) -> Socket:
    return Socket(Transport.TCP, 4, TcpState.LISTEN, "127.0.0.1", port, "0.0.0.0", 0, 0, 128, 0, port, 0)


def test_watch_diff_marks_appeared_and_gone() -> None:
    first = diff(None, [_sock(1), _sock(2)])
    assert [mark for mark, _ in first.rows] == [" ", " "]
    second = diff([_sock(1), _sock(2)], [_sock(2), _sock(3)])
    assert [(mark, row.local_port) for mark, row in second.rows] == [(" ", 2), ("+", 3), ("-", 1)]
    assert [r.local_port for r in second.appeared] == [3] and [r.local_port for r in second.gone] == [1]


def test_socket_values() -> None:
    row = Socket(Transport.UDP, 6, TcpState.CLOSE, "::1", 5353, "::", 0, 0, 0, 1000, 7, 0)
    assert str(row) == "udp UNCONN [::1]:5353 [::]:*"
    assert row.is_listener and str(row.local) == "[::1]:5353"
    assert row.protocol is not None and row.protocol.value == "udp"
    assert row.to_json()["local"] == row.local.to_json()


def test_watch_marks_a_listener_that_appears_and_goes(tmp_path: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, not listening: not in the listening view yet
    port = sock.getsockname()[1]
    watcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "portkit",
            "ls",
            "--json",
            "--port",
            str(port),
            "--watch",
            "0.7",
            "--count",
            "3",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        first = json.loads(watcher.stdout.readline())
        assert first["refresh"] == 1 and first["sockets"] == 0
        sock.listen()
        second = json.loads(watcher.stdout.readline())
        assert [row["local"]["port"] for row in second["appeared"]] == [port]
        sock.close()
        third = json.loads(watcher.stdout.readline())
        assert [row["local"]["port"] for row in third["gone"]] == [port] and third["sockets"] == 0
        assert watcher.wait(timeout=10) == 0
    finally:
        sock.close()
        watcher.kill()
        watcher.wait()


def test_watch_table_marks_rows() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    try:
        out = subprocess.run(
            [sys.executable, "-m", "portkit", "ls", "--port", str(port), "--watch", "0.1", "--count", "2"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("refresh") == 2 and "0 appeared, 0 gone" in out.stdout
        assert out.stdout.count(f"127.0.0.1:{port}") == 2
    finally:
        sock.close()
