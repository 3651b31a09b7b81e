"""Seeding: one run seed, independent named random streams derived from it."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def stream_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for the named ``stream`` of a run seeded with ``seed``."""
    seq = np.random.SeedSequence([seed, zlib.crc32(stream.encode())])
    return int(seq.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def int31_seed(seed: int, stream: str) -> int:
    """:func:`stream_seed` below ``2**31``, for libraries that take 32-bit seeds (SB3, gym)."""
    return stream_seed(seed, stream) % 2**31


def make_rng(seed: int, stream: str) -> np.random.Generator:
    """A NumPy generator for one consumer ("teacher", "queries", ...) of a run.

    Streams are independent, so adding draws to one consumer does not shift the
    numbers any other consumer sees.
    """
    return np.random.default_rng(stream_seed(seed, stream))


def make_torch_generator(
    seed: int, stream: str, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch generator for one named stream, on ``device``."""
    gen = torch.Generator(device=device)
    gen.manual_seed(stream_seed(seed, stream))
    return gen


@contextmanager
def scoped_torch(seed: int, threads: int) -> Iterator[None]:
    """Seed torch's global CPU generator and set its threads for the ``with`` block only.

    Both are restored afterwards (also on an exception). CUDA generators, which
    ``torch.manual_seed`` seeds too, are not restored.

    Libraries that draw from torch's global generator (SB3 policy initialisation) then
    give the same numbers for the same run seed, and a run inside a longer process (a
    test, a notebook) leaves that process's torch settings as it found them.
    """
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(seed, "torch_global"))
            yield
    finally:
        torch.set_num_threads(old_threads)
