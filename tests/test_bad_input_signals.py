"""SIGTERM while nft parses a script in its scratch namespace: the namespace is deleted.

A real `python -m portkit fw show SCRIPT` process, a script big enough that nft takes about a
second, SIGTERM sent once /run/netns shows the scratch namespace, and /run/netns checked after.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import needs_root
from portkit.firewall._live import SCRATCH_NETNS_PREFIX

NETNS_DIR = Path("/run/netns")


def _big_script(path: Path, rules: int) -> None:
    lines = ["table inet t {", " chain c {", "  type filter hook input priority 0; policy accept;"]
    lines += [
        f"  tcp dport {i % 60000 + 1} ip saddr 10.0.{i // 256 % 256}.{i % 256} accept" for i in range(rules)
    ]
    path.write_text("\n".join([*lines, " }", "}", ""]))


def _scratch(pid: int) -> list[str]:
    prefix = f"{SCRATCH_NETNS_PREFIX}{pid}-"
    return [p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix)] if NETNS_DIR.is_dir() else []


@needs_root
def test_sigterm_mid_parse_deletes_the_scratch_namespace(tmp_path: Path) -> None:
    script = tmp_path / "big.nft"
    _big_script(script, 15_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "portkit", "fw", "show", str(script)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PORTKIT_DEBUG": ""},
    )
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not seen and proc.poll() is None and time.monotonic() < deadline:
            seen = _scratch(proc.pid)
            time.sleep(0.005)
        assert seen, "the scratch namespace never appeared (the parse ended before it could be seen)"
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for name in _scratch(proc.pid):  # never leave one behind, even when the test fails
            subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    assert proc.returncode == 143, stderr
    assert stderr.strip() == "portkit: terminated"
    assert not any((NETNS_DIR / name).exists() for name in seen)
