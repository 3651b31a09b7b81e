"""Typed overrides of frozen config dataclasses from ``key=value`` strings.

``apply_overrides(config, ["rl.ent_coef=0", "reward.hidden_sizes=32,32"])`` returns a new
config; each value is parsed by the type annotation of its field (int, float, bool, str,
literals, tuples, optionals, nested dataclasses, JSON for dicts). Nothing is ever ``eval``-ed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable
from typing import Any, TypeVar

C = TypeVar("C")


class ConfigError(ValueError):
    """A bad override: unknown key or a value that does not parse as the field's type."""


def _parse(value: str, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: cannot parse {value!r}")
    if origin is typing.Literal:
        for option in args:
            if str(option) == value:
                return option
        choices = ", ".join(str(a) for a in args)
        raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
    if origin is tuple:
        items = [v for v in value.split(",") if v.strip()] if value.strip() else []
        elem = args[0] if args else str
        return tuple(_parse(v.strip(), elem, key) for v in items)
    if origin is dict or tp is dict:
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{key}: expected a JSON object, got {value!r}") from exc
        if not isinstance(parsed, dict):
            raise ConfigError(f"{key}: expected a JSON object, got {value!r}")
        return parsed
    if tp is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        try:
            return int(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from exc
    if tp is float:
        try:
            out = float(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: expected a number, got {value!r}") from exc
        if not math.isfinite(out):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
        return out
    if tp is str or tp is Any:
        return value
    raise ConfigError(f"{key}: fields of type {tp} cannot be set from the command line")


def _set(config: Any, path: list[str], value: str, full_key: str) -> Any:
    if not dataclasses.is_dataclass(config):
        raise ConfigError(f"unknown config key {full_key!r}")
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    head = path[0]
    if head not in names:
        raise ConfigError(f"unknown config key {full_key!r}; valid keys here: {', '.join(names)}")
    current = getattr(config, head)
    if len(path) > 1:
        new = _set(current, path[1:], value, full_key)
    elif dataclasses.is_dataclass(current):
        raise ConfigError(f"{full_key!r} is a group; set one of its fields ({full_key}.<name>=...)")
    else:
        new = _parse(value, hints[head], full_key)
    try:
        return dataclasses.replace(config, **{head: new})
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bad value for {full_key}: {exc}") from exc


def apply_overrides(config: C, overrides: Iterable[str]) -> C:
    """Return ``config`` with ``key=value`` overrides applied (dotted keys for nesting).

    Raises:
        ConfigError: One line naming the bad key or value.
    """
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        config = _set(config, key.strip().split("."), value.strip(), key.strip())
    return config


def to_plain(config: Any) -> Any:
    """A JSON-ready dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(config):
        return {f.name: to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, tuple | list):
        return [to_plain(v) for v in config]
    if isinstance(config, dict):
        return {k: to_plain(v) for k, v in config.items()}
    if isinstance(config, float) and not math.isfinite(config):
        return str(config)
    return config
