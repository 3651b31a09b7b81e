"""A registry by id, with user classes plugging in by import path.

Tasks, teachers and agents are all looked up the same way: a short registered id
(``halfcheetah``, ``oracle``, ``pref-ppo``) or an import path ``package.module:Name``
that names a user's object, so users extend the suite without editing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownIdError(ValueError):
    """Raised for an id that is neither registered nor an importable path."""


def import_object(path: str) -> object:
    """Import ``package.module:Name`` (or ``package.module.Name``) and return the object.

    Args:
        path: The import path; the part after ``:`` may be dotted (``mod:Outer.Inner``).

    Raises:
        UnknownIdError: If the module or the attribute cannot be found.
    """
    if ":" in path:
        module_name, _, attr = path.partition(":")
    else:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise UnknownIdError(f"{path!r} is not an import path of the form 'package.module:Name'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownIdError(f"cannot import module {module_name!r} from {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise UnknownIdError(f"module {module_name!r} has no attribute {attr!r}") from exc
    return obj


def instance_of(cls: type[T]) -> Callable[[object, str], T]:
    """A ``from_import`` check for registries whose entries are instances of ``cls``."""

    def check(obj: object, path: str) -> T:
        if isinstance(obj, cls):
            return obj
        raise TypeError(f"{path!r} is not a {cls.__name__}")

    return check


class Registry(Generic[T]):
    """Maps ids to entries; ids containing ``:`` are resolved as import paths.

    Args:
        kind: What the entries are ("task", "teacher", "agent"), used in error messages.
        from_import: Turns an imported object into an entry (and validates it); defaults
            to returning the object unchanged.
    """

    def __init__(self, kind: str, from_import: Callable[[object, str], T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._from_import = from_import

    def register(self, name: str, entry: T, *, overwrite: bool = False) -> T:
        """Register ``entry`` under ``name`` and return it."""
        if not name or ":" in name:
            raise ValueError(f"invalid {self.kind} id {name!r}: ids are non-empty and have no ':'")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or for the import path ``name``.

        Raises:
            UnknownIdError: One line naming the valid choices.
        """
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            obj = import_object(name)
            return self._from_import(obj, name) if self._from_import else obj  # type: ignore[return-value]
        raise UnknownIdError(
            f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())} "
            f"(or an import path 'package.module:Name')"
        )

    def names(self) -> list[str]:
        """Registered ids, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
