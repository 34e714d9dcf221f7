"""Shared fixtures: an isolated registry cache, the real IANA snapshot, running the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
IANA_CSV = ROOT.parent / "shared" / "data" / "iana" / "service-names-port-numbers.csv"

# The one root marker: `from conftest import needs_root`.
needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="needs root (network namespaces, raw sockets, nftables, other users' processes)"
)


@pytest.fixture(autouse=True)
def isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """Every test gets its own registry cache, so no test sees another's IANA import: in this
    process (the library's paths) and in the portkit commands it runs (the environment)."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("PORTKIT_CACHE_DIR", str(cache))
    from portkit.registry import RegistryPaths, registry_paths, use_registry_paths

    before = registry_paths()
    use_registry_paths(RegistryPaths(cache_dir=cache, nmap_services=before.nmap_services))
    yield cache
    use_registry_paths(before)


@pytest.fixture(autouse=True)
def isolated_state(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $XDG_STATE_HOME (the ledger) and $XDG_CONFIG_HOME (config.toml),
    so no test records into the user's ledger or reads their config."""
    state = tmp_path_factory.mktemp("xdg")
    monkeypatch.setenv("XDG_STATE_HOME", str(state / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(state / "config"))
    monkeypatch.delenv("PORTKIT_CONFIG", raising=False)
    return state


@pytest.fixture
def iana_csv() -> Path:
    if not IANA_CSV.is_file():
        pytest.skip(f"the IANA snapshot is not at {IANA_CSV} (shared/ must sit beside the repository)")
    return IANA_CSV


@dataclass
class CliResult:
    status: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> CliResult:
    """Run `python -m portkit ARGS` as a user would, in a separate process."""
    proc = subprocess.run(
        [sys.executable, "-m", "portkit", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli() -> Iterator[Any]:
    yield run_cli


@pytest.fixture(scope="module")
def lab() -> Iterator[Any]:
    """The firewall tests' client/server namespace pair (fixtures_firewall.FirewallLab), one per
    test module; modules with a lab of another kind define their own `lab`."""
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces)")
    import fixtures_firewall

    lab = fixtures_firewall.FirewallLab().open()
    try:
        yield lab
    finally:
        lab.close()
