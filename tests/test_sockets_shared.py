"""A listening socket held by several processes (pre-forked server, SCM_RIGHTS) lists every holder.

The oracle is the kernel's own view as `ss -tlnp` and `lsof -i` read it: the holder pid sets
must be equal, in the table and in the JSON of `ls`, `who` and the overview.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# The parent binds and listens on TCP, forks two workers that keep the fd, and passes the fd
# to a third process (forked before the socket existed) over a unix socket with SCM_RIGHTS.
# Every process waits for stdin to close.
SHARED_SERVER = r"""
import os, socket, sys
left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
receiver = os.fork()
if receiver == 0:
    left.close()
    _msg, fds, _flags, _addr = socket.recv_fds(right, 16, 1)
    right.sendall(b"k")
    os.read(0, 1)
    os._exit(0)
right.close()
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(8)
workers = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        os.read(0, 1)
        os._exit(0)
    workers.append(pid)
socket.send_fds(left, [b"x"], [listener.fileno()])
assert left.recv(1) == b"k"
print(listener.getsockname()[1], os.getpid(), *workers, receiver, flush=True)
os.read(0, 1)
"""


@dataclass
class SharedServer:
    port: int
    master: int
    workers: list[int]
    receiver: int

    @property
    def pids(self) -> set[int]:
        return {self.master, *self.workers, self.receiver}


@pytest.fixture
def server() -> Iterator[SharedServer]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SHARED_SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    pids: list[int] = []
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        assert len(line) == 5, "the shared server did not start"
        port, *pids = map(int, line)
        yield SharedServer(port, pids[0], pids[1:3], pids[3])
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # every process of the server exits on EOF
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            # Stuck: the forked processes are still ours (the master has not exited to orphan them).
            for pid in pids[1:]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait(timeout=10)


def _ss_holders(port: int) -> set[int]:
    out = subprocess.run(
        ["ss", "-Htlnp", "sport", "=", f":{port}"], capture_output=True, text=True, check=True
    ).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


def _lsof_holders(port: int) -> set[int]:
    out = subprocess.run(
        ["lsof", "-nP", "-t", f"-iTCP@127.0.0.1:{port}", "-sTCP:LISTEN"], capture_output=True, text=True
    ).stdout
    return {int(pid) for pid in out.split()}


def _portkit(cli: Any, *args: str) -> Any:
    result = cli(*args)
    assert result.status == 0, result.stderr
    return result


def test_the_oracles_see_every_holder(server: SharedServer) -> None:
    assert _ss_holders(server.port) == server.pids
    if shutil.which("lsof"):
        assert _lsof_holders(server.port) == server.pids


def test_ls_lists_every_holder_like_ss_p(cli: Any, server: SharedServer) -> None:
    oracle = _ss_holders(server.port)
    doc = _portkit(cli, "ls", "--json", "--port", str(server.port)).json()
    [row] = doc["sockets"]
    assert {p["pid"] for p in row["processes"]} == oracle == server.pids
    assert {int(pid) for pid in doc["processes"]} == oracle
    # A TCP port filter goes through the per-inode lookup; --all -p through the whole-table one.
    everything = _portkit(cli, "ls", "--json", "--all", "-p", "--port", str(server.port)).json()
    [row_all] = [r for r in everything["sockets"] if r["state"] == "LISTEN"]
    assert {p["pid"] for p in row_all["processes"]} == oracle
    table = _portkit(cli, "ls", "--port", str(server.port)).stdout
    [line] = [line for line in table.splitlines() if f":{server.port} " in line]
    holders = line.split()[-1].split(",")
    assert {int(h.rpartition("/")[2]) for h in holders} == oracle


def test_who_lists_every_holder(cli: Any, server: SharedServer) -> None:
    oracle = _ss_holders(server.port)
    doc = _portkit(cli, "who", "--json", f"{server.port}/tcp").json()
    [holder] = doc["holders"]
    assert {p["pid"] for p in holder["processes"]} == oracle
    assert {p["pid"] for p in doc["processes"]} == oracle
    assert {a["command"] for a in doc["advice"]} == {f"kill {pid}" for pid in oracle}
    text = _portkit(cli, "who", f"{server.port}/tcp").stdout
    rows = [line.split() for line in text.splitlines() if line.startswith("tcp ")]
    assert {int(cells[2]) for cells in rows} == oracle


def test_overview_lists_every_holder(cli: Any, server: SharedServer) -> None:
    doc = json.loads(_portkit(cli, "overview", "--json").stdout)
    [listener] = [entry for entry in doc["listeners"] if entry["port"] == server.port]
    assert {p["pid"] for p in listener["processes"]} == _ss_holders(server.port)
