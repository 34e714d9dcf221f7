"""Without root: every socket is still listed; other users' processes are hidden, and portkit says so."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

import fixtures_sockets as fx
from conftest import needs_root

pytestmark = [
    needs_root,
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]


@pytest.fixture
def nobody_env() -> Iterator[dict[str, str]]:
    cache = tempfile.mkdtemp(prefix="pk3-nobody-")
    os.chmod(cache, 0o777)
    try:
        yield {**os.environ, "PORTKIT_CACHE_DIR": cache, "HOME": cache}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def as_nobody(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "portkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def test_other_users_sockets_are_listed_without_their_process(nobody_env: dict[str, str]) -> None:
    root_listener = socket.socket()
    root_listener.bind(("127.0.0.1", 0))
    root_listener.listen()
    port = root_listener.getsockname()[1]
    try:
        result = as_nobody(nobody_env, "ls", "--json", "--port", str(port))
        assert result.returncode == 0, result.stderr
        doc: dict[str, Any] = json.loads(result.stdout)
        [row] = doc["sockets"]
        assert (row["uid"], row["processes"]) == (0, [])
        assert row["inode"] == os.fstat(root_listener.fileno()).st_ino
        assert doc["processes_complete"] is False
        table = as_nobody(nobody_env, "ls", "--port", str(port))
        [line] = [line for line in table.stdout.splitlines() if f":{port} " in line]
        assert line.split()[-2:] == ["(root", "needed)"]  # the PROCESS column
        assert "root would name them" in table.stderr
        who = as_nobody(nobody_env, "who", str(port))
        assert who.returncode == 0
        assert "root would name them" in who.stdout
        row = _who_table(who.stdout)
        assert row["PID"] == "?" and row["PROCESS"] == "(root needed)", who.stdout
        assert row["USER"] == "root"
    finally:
        root_listener.close()


def _who_table(text: str) -> dict[str, str]:
    """The one holder row of `portkit who`'s plain table, cut at the header's columns."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("PROTO "))
    header, row = lines[at], lines[at + 1]
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    cells = {
        name: row[start : (starts[i + 1] if i + 1 < len(starts) else None)].strip()
        for i, (name, start) in enumerate(zip(names, starts, strict=True))
    }
    return cells


def test_own_sockets_keep_their_process(nobody_env: dict[str, str]) -> None:
    with fx.listener_process("4", "tcp", prefix=AS_NOBODY) as (proc, port):
        result = as_nobody(nobody_env, "who", str(port), "--json")
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        assert [p["pid"] for p in doc["processes"]] == [proc.pid]
        assert doc["processes"][0]["user"] == "nobody"


def test_entering_a_namespace_says_it_needs_root(nobody_env: dict[str, str]) -> None:
    with fx.named_netns() as ns:
        result = as_nobody(nobody_env, "ls", "--netns", ns)
        assert result.returncode == 1
        assert "needs root" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_all_netns_without_root_reads_namespaces_through_a_member(nobody_env: dict[str, str]) -> None:
    # A namespace where one of our own processes lives (a rootless container, say): setns is
    # refused without root, but that process's /proc/PID/net shows the namespace's tables.
    with fx.named_netns() as ns, fx.listener_process("4", "tcp", netns=ns, prefix=AS_NOBODY) as (_proc, port):
        result = as_nobody(nobody_env, "ls", "--all-netns", "--json", "--port", str(port))
        assert result.returncode == 0, result.stderr
        doc = json.loads(result.stdout)
        rows = [r for r in doc["sockets"] if r["netns"] == ns]
        assert [(r["state"], r["local"]["port"]) for r in rows] == [("LISTEN", port)]
        assert "proc" in doc["backend"]  # setns is refused; /proc/PID/net of a member is not
