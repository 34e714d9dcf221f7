"""The optional C accelerators are optional for users, not for this suite: where a compiler and
Python's headers exist (as on CI), a missing module means the build broke silently and the
tests that compare the C and Python paths would only have skipped."""

from __future__ import annotations

import importlib
import shutil
import sysconfig
from pathlib import Path

import pytest

ACCELERATORS = ["portkit.sockets._diagrows", "portkit.scan._rawio"]

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
