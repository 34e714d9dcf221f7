"""The public Python API: every exported name resolves, and the CLI's commands are its clients."""

from __future__ import annotations

import subprocess
import sys

import portkit


def test_every_public_name_resolves() -> None:
    for name in portkit.__all__:
        assert getattr(portkit, name) is not None, name


def test_importing_portkit_is_cheap() -> None:
    code = "import sys, portkit; print(sorted(m for m in sys.modules if m.startswith('portkit')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    # The lazy loader lives in the vocabulary (portkit.model imports nothing outside itself).
    assert out.strip() == "['portkit', 'portkit._lazy', 'portkit.model', 'portkit.model._lazy']"


def test_unknown_names_raise_attribute_error() -> None:
    try:
        portkit.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("expected AttributeError")
