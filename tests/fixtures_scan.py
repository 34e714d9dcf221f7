"""Shared fixtures for the scanner's tests, and the lab fixture other capabilities reuse.

    from conftest import needs_root
    from fixtures_scan import lab_factory  # noqa: F401  (pytest finds the fixture)

    @needs_root
    def test_x(lab_factory):
        lab = lab_factory(LabSpec(prefix="pk5", hosts=(LabHost.tcp("web", 80),)))

Every lab the factory makes is torn down when the test ends, pass or fail.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator

import pytest

from portkit.testing import Lab, LabSpec

needs_nmap = pytest.mark.skipif(
    shutil.which("nmap") is None, reason="needs nmap (apt install nmap) as the oracle"
)

LabFactory = Callable[[LabSpec], Lab]


def _labs() -> Iterator[LabFactory]:
    """A factory of labs, all torn down (newest first) when the generator closes, even on failure."""
    labs: list[Lab] = []

    def make(spec: LabSpec) -> Lab:
        lab = Lab(spec)
        labs.append(lab)
        lab.up()
        return lab

    try:
        yield make
    finally:
        for lab in reversed(labs):
            lab.down()


@pytest.fixture
def lab_factory() -> Iterator[LabFactory]:
    """Bring up labs for one test; all are torn down afterwards, even on failure."""
    yield from _labs()


@pytest.fixture(scope="module")
def module_lab_factory() -> Iterator[LabFactory]:
    """Like `lab_factory`, for a lab shared by every test of a module."""
    yield from _labs()
