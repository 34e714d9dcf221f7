"""Scanning without root: each scan type says what it can do instead, and what root would add."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator

import pytest

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to an unprivileged user"),
    pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)"),
]
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"]


@pytest.fixture
def nobody_env() -> Iterator[dict[str, str]]:
    cache = tempfile.mkdtemp(prefix="pk-scan-nobody-")
    os.chmod(cache, 0o777)
    try:
        yield {**os.environ, "PORTKIT_CACHE_DIR": cache, "HOME": cache}
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def as_nobody(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "portkit", "scan", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd="/",
    )
    if proc.returncode == 126 or ("Permission denied" in proc.stderr and "portkit" not in proc.stderr):
        pytest.skip("this Python or checkout is not readable by an unprivileged user")
    return proc


def test_udp_scan_does_not_suggest_a_tcp_connect_scan(nobody_env: dict[str, str]) -> None:
    proc = as_nobody(nobody_env, "-sU", "-p", "53", "127.0.0.1")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "-sU needs raw sockets" in line and "root" in line
    assert "no unprivileged UDP scan" in line and "--connect covers TCP only" in line
    assert "use --connect" not in line


def test_syn_scan_points_to_the_connect_scan(nobody_env: dict[str, str]) -> None:
    proc = as_nobody(nobody_env, "-sS", "-p", "22", "127.0.0.1")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "-sS needs raw sockets" in line and "--connect" in line


def test_ack_scan_says_what_a_connect_scan_would_not_tell(nobody_env: dict[str, str]) -> None:
    proc = as_nobody(nobody_env, "-sA", "-p", "22", "127.0.0.1")
    assert proc.returncode == 1
    [line] = proc.stderr.strip().splitlines()
    assert "-sA needs raw sockets" in line and "not filtered from unfiltered" in line


def test_host_discovery_does_not_talk_about_a_syn_scan(nobody_env: dict[str, str]) -> None:
    proc = as_nobody(nobody_env, "-sn", "127.0.0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    notes = doc["scan"]["notes"]
    assert not any("SYN" in n and "instead of" in n for n in notes), notes
    assert any("connect() to ports 80 and 443" in n and "ICMP echo" in n for n in notes), notes
    assert doc["hosts"][0]["status"] == "up"
    text = as_nobody(nobody_env, "-sn", "127.0.0.1")
    assert "SYN" not in text.stdout.replace("SYN to 443", ""), text.stdout
