"""One cache-invalidation scheme for values derived from tensors.

A derived value (batch norm folded into convolution weights, a NumPy copy of a small
network) is kept until any source tensor changes. Every in-place change bumps a tensor's
version counter (optimiser steps, running-statistic updates, ``load_state_dict``,
``copy_``), and a move to another device or dtype gives it new storage, so the key
``(version, storage address)`` of every source sees all of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

import torch

V = TypeVar("V")


def tensor_key(tensors: Iterable[torch.Tensor]) -> tuple[tuple[int, int], ...]:
    """The version counter and storage address of each tensor, in order."""
    return tuple((t._version, t.data_ptr()) for t in tensors)


class TensorCache(Generic[V]):
    """Holds one value built from tensors; rebuilds it when their key changes."""

    def __init__(self) -> None:
        self._key: tuple[tuple[int, int], ...] | None = None
        self._value: V | None = None

    def get(self, sources: Iterable[torch.Tensor], build: Callable[[], V]) -> V:
        """The cached value if ``sources`` are unchanged since it was built, else ``build()``."""
        key = tensor_key(sources)
        if self._value is None or key != self._key:
            self._value, self._key = build(), key
        return self._value

    def clear(self) -> None:
        """Drop the value (the next :meth:`get` builds it)."""
        self._key, self._value = None, None
