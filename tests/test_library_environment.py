"""Library code takes its settings from its callers: outside portkit.cli, nothing reads the
process's environment or sys.argv (the CLI reads them and passes typed values on).

A subprocess helper's own entry point (`if __name__ == "__main__": main(sys.argv[1:])`) is
the one place a module may read its command line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import portkit

PACKAGE = Path(portkit.__file__).parent
CLI = PACKAGE / "cli"
LIBRARY = sorted(p for p in PACKAGE.rglob("*.py") if CLI not in p.parents)
READS = ("os.environ", "os.environb", "os.getenv", "sys.argv")


def _is_main_block(node: ast.stmt) -> bool:
    """`if __name__ == "__main__":` at module level."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    sides = [test.left, *test.comparators]
    return (
        len(test.ops) == 1
        and isinstance(test.ops[0], ast.Eq)
        and any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
        and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides)
    )


def environment_reads(source: str) -> list[str]:
    """Each read of the environment or argv in `source`, outside its `__main__` block."""
    tree = ast.parse(source)
    found: list[str] = []
    for statement in tree.body:
        if _is_main_block(statement):
            continue
        for node in ast.walk(statement):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                name = f"{node.value.id}.{node.attr}"
                if name in READS:
                    found.append(f"line {node.lineno}: {name}")
            elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
                found += [
                    f"line {node.lineno}: from {node.module} import {a.name}"
                    for a in node.names
                    if f"{node.module}.{a.name}" in READS
                ]
    return found


def test_the_library_is_found() -> None:
    names = {p.relative_to(PACKAGE).as_posix() for p in LIBRARY}
    assert {"registry/_cache.py", "registry/nmap.py", "firewall/_apply.py", "testing/_relay.py"} <= names
    assert not any(name.startswith("cli/") for name in names)


@pytest.mark.parametrize("module", LIBRARY, ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_library_code_reads_no_environment_and_no_argv(module: Path) -> None:
    assert environment_reads(module.read_text(encoding="utf-8")) == []


def test_the_check_finds_what_it_looks_for() -> None:
    text = (
        "import os, sys\n"
        "from os import environ, getenv\n"
        "from sys import argv\n"
        "ROOT = os.environ.get('A', '/run')\n"
        "def f():\n"
        "    return os.getenv('B'), sys.argv[1:], {**os.environ}\n"
        "class C:\n"
        "    x = os.environb\n"
        "if __name__ == '__main__':\n"
        "    f(sys.argv[1:])\n"
    )
    lines = [int(found.split(":")[0].split()[1]) for found in environment_reads(text)]
    assert lines == [2, 2, 3, 4, 6, 6, 6, 8]  # not line 10: the entry point may read argv
    # only a module-level __main__ block is an entry point; the same test elsewhere is not
    nested = "import sys\ndef f():\n    if __name__ == '__main__':\n        return sys.argv\n"
    assert environment_reads(nested) == ["line 4: sys.argv"]
    negated = "import sys\nif __name__ != '__main__':\n    x = sys.argv\n"
    assert environment_reads(negated) == ["line 3: sys.argv"]
