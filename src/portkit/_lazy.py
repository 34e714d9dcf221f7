"""Lazy re-exports (PEP 562) for portkit's package `__init__` modules; defined in
`portkit.model._lazy` so that `portkit.model` imports nothing outside itself."""

from __future__ import annotations

from portkit.model._lazy import (
    exports_in_source as exports_in_source,
)
from portkit.model._lazy import (
    import_module as import_module,
)
from portkit.model._lazy import (
    lazy_exports as lazy_exports,
)
from portkit.model._lazy import (
    lazy_exports_from_source as lazy_exports_from_source,
)
