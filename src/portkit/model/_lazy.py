"""Lazy re-exports (PEP 562) for portkit's package `__init__` modules.

A package lists `name -> defining module` once; a name's module is imported the first
time someone asks for it, so `import portkit` and each command stay cheap.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (see portkit/__init__.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def import_module(name: str) -> Any:
    """The module `name` (absolute), imported if need be: importlib.import_module without
    importing importlib (and `warnings` with it) on every start."""
    __import__(name)
    return sys.modules[name]


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """The `__getattr__` for `package` that imports each exported name on first use.

    `exports` maps a public name to its module, or to `module:attribute` when the public
    name differs from the one it is defined under.
    """

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attribute = target.partition(":")
        value = getattr(import_module(module), attribute or name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__


def exports_in_source(text: str) -> dict[str, str]:
    """`name -> module:attribute` for each import in the `if TYPE_CHECKING:` block of `text`.

    The block holds only `from MODULE import (A as B, ...)` statements, one name a line.
    """
    import re

    block = re.search(r"^if TYPE_CHECKING:\n((?:[ \t]+.*\n|\n)+)", text, re.MULTILINE)
    if block is None:
        raise ImportError("no `if TYPE_CHECKING:` block of exports")
    exports: dict[str, str] = {}
    for module, names in re.findall(r"from ([\w.]+) import \(([^)]*)\)", block.group(1)):
        for item in names.split(","):
            attribute, _, public = item.strip().partition(" as ")
            if attribute:
                exports[public or attribute] = f"{module}:{attribute}"
    return exports


def lazy_exports_from_source(
    package: str, path: str
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for a package whose exports are its `if TYPE_CHECKING:` imports.

    The package's file is read the first time a name is asked for, so `import package` costs
    nothing more; `package.__all__` is the sorted list of those names.
    """
    found: dict[str, str] = {}

    def exports() -> dict[str, str]:
        if not found:
            with open(path, encoding="utf-8") as source:
                found.update(exports_in_source(source.read()))
        return found

    def __getattr__(name: str) -> Any:
        if name == "__all__":
            value: Any = sorted(exports())
        else:
            target = exports().get(name)
            if target is None:
                raise AttributeError(f"module {package!r} has no attribute {name!r}")
            module, _, attribute = target.partition(":")
            value = getattr(import_module(module), attribute)
        setattr(sys.modules[package], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(exports())

    return __getattr__, __dir__
