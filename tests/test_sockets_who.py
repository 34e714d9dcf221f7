"""`portkit who`: the right pid, the right advice, the right explanation, and --kill."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

import fixtures_sockets as fx
from conftest import needs_root


@pytest.mark.parametrize(("family", "proto"), [("4", "tcp"), ("6", "tcp"), ("4", "udp"), ("6", "udp")])
def test_who_names_the_pid_of_a_listener(cli: Any, family: str, proto: str) -> None:
    with fx.listener_process(family, proto) as (proc, port):
        result = cli("who", f"{port}/{proto}", "--json")
        assert result.status == 0, result.stderr
        doc = result.json()
        assert [p["pid"] for p in doc["processes"]] == [proc.pid]
        process = doc["processes"][0]
        assert process["name"].startswith("python")
        assert process["cmdline"][0] == sys.executable
        assert process["parents"][0]["pid"] == __import__("os").getpid()
        assert doc["advice"] == [{"command": f"kill {proc.pid}", "target": doc["advice"][0]["target"]}]
        holder = doc["holders"][0]
        assert holder["local"]["port"] == port and holder["protocol"] == proto
        if proto == "tcp":
            assert doc["connections"] == 1  # the listener's own connection to itself
        text = cli("who", str(port))
        assert text.status == 0
        assert f"{proc.pid}" in text.stdout and f"kill {proc.pid}" in text.stdout


def test_who_agrees_with_lsof(cli: Any) -> None:
    with fx.listener_process("4", "tcp") as (proc, port):
        lsof = subprocess.run(
            ["lsof", "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fp"], capture_output=True, text=True
        ).stdout
        assert f"p{proc.pid}" in lsof.split()
        assert [p["pid"] for p in cli("who", str(port), "--json").json()["processes"]] == [proc.pid]


# Both scenes run in a private namespace: on the host, other programs' sockets can share an
# ephemeral port with ours (to other destinations) and would change the answer.
SCENE_CODE = r"""
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
client = socket.create_connection(listener.getsockname())
server, _ = listener.accept()
print(client.getsockname()[1], flush=True)
if sys.argv[1] == "time-wait":
    client.close()  # the active closer keeps the TIME-WAIT
    server.close()
    listener.close()
    print("closed", flush=True)
sys.stdin.read()
"""


@needs_root
@pytest.mark.parametrize("scene", ["time-wait", "client"])
def test_ports_without_a_holder_are_explained(cli: Any, scene: str) -> None:
    with fx.named_netns() as ns:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", SCENE_CODE, scene],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            if scene == "time-wait":
                assert proc.stdout.readline().strip() == "closed"
                time.sleep(0.1)
            doc = cli("who", f"{port}/tcp", "--netns", ns, "--json").json()
            assert doc["holders"] == [] and doc["in_use"] is True
            assert "SO_REUSEADDR" in doc["explanation"]
            if scene == "time-wait":
                assert doc["time_wait"] == 1 and doc["clients"] == []
                assert "TIME-WAIT" in doc["explanation"]
            else:
                assert len(doc["clients"]) == 1 and doc["time_wait"] == 0
                assert "client" in doc["explanation"]
                assert [p["pid"] for p in doc["clients"][0]["processes"]] == [proc.pid]
        finally:
            proc.kill()
            proc.wait(timeout=10)


def test_free_port_exits_1(cli: Any) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    result = cli("who", f"{port}/tcp")
    assert result.status == 1
    assert "Nothing uses port" in result.stdout
    assert cli("who", f"{port}/tcp", "--json").json()["in_use"] is False


def test_kill_asks_first_and_yes_kills() -> None:
    with fx.listener_process("4", "tcp") as (proc, port):
        declined = subprocess.run(
            [sys.executable, "-m", "portkit", "who", str(port), "--kill"],
            input="n\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert declined.returncode == 1 and "Nothing signalled" in declined.stdout
        assert proc.poll() is None
        killed = subprocess.run(
            [sys.executable, "-m", "portkit", "who", str(port), "--kill", "--yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert killed.returncode == 0, killed.stderr
        assert f"(pid {proc.pid}): sent SIGTERM" in killed.stdout
        assert proc.wait(timeout=10) != 0


def test_kill_without_an_answer_signals_nothing_and_json_stays_json() -> None:
    """No answer (stdin at its end, as under cron or `< /dev/null`) is no: exit 1, not the 130 of
    an interrupt. The question goes to stderr, so `--kill --json` prints one JSON document."""
    with fx.listener_process("4", "tcp") as (proc, port):
        unanswered = subprocess.run(
            [sys.executable, "-m", "portkit", "who", str(port), "--kill"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert unanswered.returncode == 1, unanswered.stderr
        assert "Nothing signalled" in unanswered.stdout and "interrupted" not in unanswered.stderr
        assert proc.poll() is None
        answered = subprocess.run(
            [sys.executable, "-m", "portkit", "who", str(port), "--kill", "--json"],
            input="y\n",
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert answered.returncode == 0, answered.stderr
        doc = json.loads(answered.stdout)
        assert doc["killed"] == [{"pid": proc.pid, "outcome": "sent SIGTERM"}]
        assert "Send SIGTERM" in answered.stderr
        assert proc.wait(timeout=10) != 0


@needs_root
def test_who_inside_a_named_netns(cli: Any) -> None:
    with fx.named_netns() as ns, fx.listener_process("4", "tcp", netns=ns) as (proc, port):
        doc = cli("who", str(port), "--netns", ns, "--json").json()
        assert [p["pid"] for p in doc["processes"]] == [proc.pid]
        assert doc["holders"][0]["netns"] == ns
        everywhere = cli("who", str(port), "--all-netns", "--json").json()
        assert proc.pid in [p["pid"] for p in everywhere["processes"]]


@pytest.mark.parametrize(
    "args",
    [
        ["who", "70000"],
        ["who", "²"],
        ["ls", "--user", "²"],
        ["ls", "--port", "8²"],
        ["who", "http-alt"],
        ["who", "80/icmp"],
        ["who", "80/sctp"],
        ["ls", "--state", "dancing"],
        ["ls", "--proto", "sctp"],
        ["ls", "--port", "1-99999"],
        ["ls", "--user", "no-such-user-pk3"],
        ["ls", "--netns", "pk3-does-not-exist"],
        ["ls", "--netns", "../etc"],
        ["ls", "--netns", "x", "--all-netns"],
        ["ls", "--watch", "0"],
        ["ls", "--count", "2"],
        ["ls", "-4", "-6"],
        ["ls", "--backend", "carrier-pigeon"],
        ["overview", "--netns", "pk3-does-not-exist"],
    ],
)
def test_bad_input_exits_2_with_one_line(cli: Any, args: list[str]) -> None:
    result = cli(*args)
    assert result.status == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    if args[0] == "who" and "/" in args[1]:
        # One answer for every protocol who refuses (80/icmp offered sctp, which 80/sctp refused).
        assert "expected tcp or udp" in result.stderr, result.stderr


@pytest.mark.parametrize("backend", ["netlink", "proc"])
def test_served_connections_are_counted_on_both_backends(cli: Any, backend: str) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    pairs = []
    try:
        for _ in range(5):
            client = socket.create_connection(listener.getsockname())
            pairs.append((client, listener.accept()[0]))
        port = listener.getsockname()[1]
        doc = cli("who", f"{port}/tcp", "--json", "--backend", backend).json()
        assert doc["connections"] == 5 and doc["clients"] == []
        assert [p["pid"] for p in doc["processes"]] == [os.getpid()]
    finally:
        for client, server in pairs:
            client.close()
            server.close()
        listener.close()


def test_connected_udp_socket_is_a_client(cli: Any) -> None:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.bind(("::1", 0))
    sock.connect(("::1", 9))
    try:
        port = sock.getsockname()[1]
        doc = cli("who", f"{port}/udp", "--json").json()
        assert doc["holders"] == [] and [c["state"] for c in doc["clients"]] == ["ESTAB"]
        assert doc["clients"][0]["processes"][0]["pid"] == os.getpid()
    finally:
        sock.close()


_EVIL_HOLDER = r"""
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"\x1b[2K\rok\x07\x1b]0;t", 0, 0, 0)  # PR_SET_NAME: any user may
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True); sys.stdin.read()
"""


def test_a_process_name_cannot_drive_the_readers_terminal() -> None:
    """The table, the parent chain and the "To free it" lines all carry the holder's name: an
    escape sequence in it is written out, never sent to the terminal of whoever runs `who`."""
    holder = subprocess.Popen(
        [sys.executable, "-c", _EVIL_HOLDER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None
        port = holder.stdout.readline().strip()
        done = subprocess.run(
            [sys.executable, "-m", "portkit", "who", port], capture_output=True, text=True, timeout=60
        )
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "\\x1b[2K\\x0dok\\x07" in done.stdout, done.stdout
    assert not any(ch in done.stdout for ch in "\x1b\x07\r"), repr(done.stdout)
