"""The optional C accelerators are optional for users, not for this suite: where a compiler and
Python's headers exist (as on CI), a missing module means the build broke silently and the
tests that compare the C and Python paths would only have skipped."""

from __future__ import annotations

import importlib
import os
import re
import shutil
import stat
import subprocess
import sysconfig
from pathlib import Path

import pytest

ACCELERATORS = ["portkit.sockets._diagrows", "portkit.scan._rawio", "portkit.scan._connectio"]

can_build = shutil.which("gcc") is not None and (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()


def test_setup_py_lists_every_accelerator() -> None:
    setup_py = (Path(__file__).resolve().parents[1] / "setup.py").read_text()
    for name in ACCELERATORS:
        assert f'"{name}"' in setup_py


@pytest.mark.skipif(not can_build, reason="no C compiler or Python headers: portkit runs in pure Python")
@pytest.mark.parametrize("name", ACCELERATORS)
def test_accelerator_was_built(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__ or "").suffix == ".so"


# --- scripts/install.sh: a venv every user can run ------------------------------------------

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_PYTHON = Path("/usr/bin/python3")
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def _readable_by_others(path: Path) -> bool:
    """Whether every directory down to `path` lets other users in (o+x) and `path` is o+r."""
    directories_open = all(part.stat().st_mode & stat.S_IXOTH for part in path.parents)
    return directories_open and bool(path.stat().st_mode & stat.S_IROTH)


def _venv_home(venv: Path) -> str:
    for line in (venv / "pyvenv.cfg").read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return value.strip()
    return ""


@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="not a Debian system python at /usr/bin/python3")
def test_the_venv_is_made_from_the_system_python() -> None:
    venv = ROOT / ".venv"
    if not (venv / "pyvenv.cfg").exists():
        pytest.skip("no .venv in this checkout (scripts/install.sh makes it)")
    resolved = (venv / "bin" / "python").resolve()
    assert resolved.parent == Path("/usr/bin") and resolved.name.startswith("python3"), resolved
    assert _venv_home(venv) == "/usr/bin"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a command as another user")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_another_user_can_run_the_installed_portkit() -> None:
    portkit = ROOT / ".venv" / "bin" / "portkit"
    if not portkit.exists():
        pytest.skip("no .venv/bin/portkit in this checkout (scripts/install.sh makes it)")
    if not _readable_by_others(ROOT / "src" / "portkit" / "__init__.py"):
        pytest.skip(f"the checkout {ROOT} is not readable by other users")
    proc = subprocess.run(
        # Through env: setpriv itself still holds root's capabilities while it looks the program up
        # (its saved uid is 0), so only a second execve is a lookup made as the other user alone.
        [*AS_NOBODY, "/usr/bin/env", str(portkit), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("portkit, version ")


def _other_python() -> Path | None:
    """An interpreter that is not Debian's (pyenv, /usr/local), to make an "old" venv from."""
    for candidate in (
        shutil.which("python3.11", path="/usr/local/bin"),
        *Path("/root/.pyenv/versions").glob("3.1[1-9]*/bin/python3"),
    ):
        if candidate and Path(candidate).resolve().parent != Path("/usr/bin"):
            return Path(candidate)
    return None


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="install.sh installs Debian packages as root")
@pytest.mark.skipif(not SYSTEM_PYTHON.exists(), reason="not a Debian system python at /usr/bin/python3")
def test_install_rebuilds_a_venv_made_from_another_python(tmp_path: Path) -> None:
    other = _other_python()
    if other is None:
        pytest.skip("no python besides Debian's to make an old venv from")
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.egg-info")
    shutil.copytree(ROOT / "src", clone / "src", ignore=ignore)
    shutil.copytree(ROOT / "scripts", clone / "scripts")
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, clone / name)
    subprocess.run([str(other), "-m", "venv", "--without-pip", str(clone / ".venv")], check=True, timeout=120)
    assert _venv_home(clone / ".venv") == str(other.parent)
    proc = subprocess.run(
        ["bash", str(clone / "scripts" / "install.sh"), "--no-run"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=clone,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"rebuilding .venv from {SYSTEM_PYTHON}" in proc.stdout
    assert _venv_home(clone / ".venv") == "/usr/bin"
    assert (clone / ".venv" / "bin" / "python").resolve().parent == Path("/usr/bin")
    version = subprocess.run(
        [str(clone / ".venv" / "bin" / "portkit"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0, version.stderr
    # Run again: the venv is now the right one and is kept.
    again = subprocess.run(
        ["bash", str(clone / "scripts" / "install.sh"), "--no-run"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=clone,
    )
    assert again.returncode == 0 and "rebuilding" not in again.stdout
    # Debian's python moving to a new minor version leaves the same `home`: the version tells.
    cfg = clone / ".venv" / "pyvenv.cfg"
    cfg.write_text(re.sub(r"(?m)^version *= *.*$", "version = 3.9.2", cfg.read_text()))
    moved = subprocess.run(
        ["bash", str(clone / "scripts" / "install.sh"), "--no-run"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=clone,
    )
    assert moved.returncode == 0, moved.stderr[-2000:]
    assert "rebuilding .venv" in moved.stdout and "(it was made from /usr/bin 3.9)" in moved.stdout
