"""Immutable value classes for the modules `portkit ls --json` imports, without `dataclasses`.

Why: the modules of `portkit ls --json` do not import `dataclasses` (portkit.sockets,
"Import cost"). The few values on that path (SocketQuery,
Inventory, Namespace) subclass `FrozenValue` instead: a keyword-or-positional `__init__`
of their own, and from here equality, hashing, repr, immutability and pickling by field, as
`@dataclass(frozen=True)` would generate them, plus `replace(**changes)`.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    from typing import ClassVar, Self


class FrozenValue:
    """Base of a slotted, immutable value; subclasses name their fields in `_fields`.

    `_fields` are the `__init__` parameters in order; those in `_uncompared` take no part
    in equality, hashing or repr (a dataclass's `field(compare=False, repr=False)`).
    `__init__` sets fields with `object.__setattr__`, as a frozen dataclass does, and takes
    them positionally in `_fields` order too (pickle and copy rebuild values that way).
    """

    __slots__ = ()
    _fields: ClassVar[tuple[str, ...]] = ()
    _uncompared: ClassVar[frozenset[str]] = frozenset()

    def _compared(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._fields if name not in self._uncompared)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, FrozenValue)
        return self._compared() == other._compared()

    def __hash__(self) -> int:
        return hash(self._compared())

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{name}={getattr(self, name)!r}" for name in self._fields if name not in self._uncompared
        )
        return f"{self.__class__.__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"cannot assign to field {name!r}: {self.__class__.__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r}: {self.__class__.__name__} is immutable")

    def __reduce__(self) -> tuple[type[Self], tuple[object, ...]]:
        # pickle and copy: rebuilt through __init__ (the default would set slots with setattr).
        return (self.__class__, tuple(getattr(self, name) for name in self._fields))

    def replace(self, **changes: object) -> Self:
        """A copy with `changes` applied (what `dataclasses.replace` does for a dataclass)."""
        values: dict[str, object] = {name: getattr(self, name) for name in self._fields}
        unknown = set(changes) - set(values)
        if unknown:
            raise TypeError(f"{self.__class__.__name__} has no field {sorted(unknown)[0]!r}")
        values.update(changes)
        return self.__class__(**values)
