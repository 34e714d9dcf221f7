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
