"""A registry by id, with user classes plugging in by import path.

Tasks, teachers and agents are all looked up the same way: a short registered id
(``halfcheetah``, ``oracle``, ``pref-ppo``) or an import path ``package.module:Name``
that names a user's object, so users extend the suite without editing it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

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

    An entry registered as a string ``"package.module:attr"`` is lazy, as Gymnasium's entry
    points are: its module is imported on the first :meth:`get`, so listing ids (and the
    metadata given at registration, :meth:`info`) imports nothing, and an entry whose
    module needs an optional extra costs nothing until it is used.

    Args:
        kind: What the entries are ("task", "teacher", "agent"), used in error messages.
        from_import: Turns an imported object into an entry (and validates it); defaults
            to returning the object unchanged.
    """

    def __init__(self, kind: str, from_import: Callable[[object, str], T] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._info: dict[str, dict[str, Any]] = {}
        self._from_import = from_import

    def register(self, name: str, entry: T | str, *, overwrite: bool = False, **info: Any) -> None:
        """Register ``entry`` (or the lazy import path ``entry``) under ``name``.

        Args:
            name: The id; non-empty, without ``:``.
            entry: The entry, or ``"package.module:attr"`` naming it.
            overwrite: Replace an entry already registered under ``name``.
            **info: Metadata shown by listings without resolving the entry.
        """
        if not name or ":" in name:
            raise ValueError(f"invalid {self.kind} id {name!r}: ids are non-empty and have no ':'")
        if name in self._entries and not overwrite:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._entries[name] = entry
        self._info[name] = dict(info)

    def get(self, name: str) -> T:
        """Return the entry for ``name`` or for the import path ``name``.

        Raises:
            UnknownIdError: One line naming the valid choices.
            TypeError: If an imported object is not a valid entry.
        """
        if name in self._entries:
            entry = self._entries[name]
            if isinstance(entry, str):
                entry = self._import(entry)
                self._entries[name] = entry
            return entry
        if ":" in name:
            return self._import(name)
        raise UnknownIdError(
            f"unknown {self.kind} {name!r}; valid choices: {', '.join(self.names())} "
            f"(or an import path 'package.module:Name')"
        )

    def _import(self, path: str) -> T:
        obj = import_object(path)
        return self._from_import(obj, path) if self._from_import else obj  # type: ignore[return-value]

    def info(self, name: str) -> dict[str, Any]:
        """The metadata registered with ``name`` (empty for import paths)."""
        return dict(self._info.get(name, {}))

    def names(self) -> list[str]:
        """Registered ids, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
