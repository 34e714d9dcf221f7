"""Checking portkit's XML against nmap's DTD (/usr/share/nmap/nmap.dtd) with xmllint.

nmap's DTD allows one scanner name, "nmap"; portkit's XML says that portkit wrote it. So the
check runs against a copy of the DTD whose only change lets the scanner be portkit, and against
the original, the scanner attribute must be the only complaint.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

DTD = Path("/usr/share/nmap/nmap.dtd")
_SCANNER = "scanner\t\t(nmap)\t\t#REQUIRED"

needs_xmllint = pytest.mark.skipif(
    shutil.which("xmllint") is None or not DTD.exists(), reason="needs xmllint and nmap's DTD"
)


def assert_valid_nmap_xml(path: Path, tmp_path: Path) -> None:
    dtd = DTD.read_text()
    assert dtd.count(_SCANNER) == 1, "nmap's DTD changed: review the scanner attribute"
    ours = tmp_path / "nmap-or-portkit.dtd"
    ours.write_text(dtd.replace(_SCANNER, "scanner\t\t(nmap|portkit)\t\t#REQUIRED"))
    proc = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(ours), str(path)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    strict = subprocess.run(
        ["xmllint", "--noout", "--dtdvalid", str(DTD), str(path)], capture_output=True, text=True
    )
    complaints = [line for line in strict.stderr.splitlines() if "validity error" in line]
    assert all('Value "portkit" for attribute scanner' in line for line in complaints), strict.stderr
