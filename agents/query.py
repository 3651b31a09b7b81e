"""Query selection: which clip pairs to ask the teacher about.

``uniform`` draws pairs uniformly from recent trajectories. ``disagreement`` (Christiano
et al. 2017, section 2.2.4) draws ``oversample`` times more candidates and keeps those on
which the ensemble members' predicted preferences vary most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from prefbench.envs.data import ClipPairs, Trajectory
from prefbench.envs.registry import Registry
from prefbench.envs.segments import sample_clip_pairs


class EnsemblePreferences(Protocol):
    """What a selector may ask of the reward model."""

    def member_preferences(self, pairs: ClipPairs) -> np.ndarray:
        """``(K, N)`` each member's P(first preferred)."""
        ...


class QuerySelector(Protocol):
    """Chooses ``n_pairs`` clip pairs to label."""

    def select(
        self,
        trajectories: Sequence[Trajectory],
        n_pairs: int,
        clip_length: int,
        rng: np.random.Generator,
        model: EnsemblePreferences | None,
    ) -> ClipPairs:
        """Return ``n_pairs`` pairs cut from ``trajectories``."""
        ...


class UniformSelector:
    """Pairs drawn uniformly over all clip positions."""

    def select(
        self,
        trajectories: Sequence[Trajectory],
        n_pairs: int,
        clip_length: int,
        rng: np.random.Generator,
        model: EnsemblePreferences | None,
    ) -> ClipPairs:
        """See :class:`QuerySelector`."""
        return sample_clip_pairs(trajectories, n_pairs, clip_length, rng)


class DisagreementSelector:
    """Keep the candidates with the largest variance of member preferences.

    Args:
        oversample: Candidates drawn per pair kept (the paper: 10).
    """

    def __init__(self, oversample: int = 10) -> None:
        if oversample < 1:
            raise ValueError(f"oversample must be >= 1, got {oversample}")
        self.oversample = oversample

    def select(
        self,
        trajectories: Sequence[Trajectory],
        n_pairs: int,
        clip_length: int,
        rng: np.random.Generator,
        model: EnsemblePreferences | None,
    ) -> ClipPairs:
        """See :class:`QuerySelector`; falls back to uniform without a model."""
        if model is None:
            return sample_clip_pairs(trajectories, n_pairs, clip_length, rng)
        candidates = sample_clip_pairs(trajectories, n_pairs * self.oversample, clip_length, rng)
        variance = model.member_preferences(candidates).var(axis=0)
        # Stable sort: ties keep draw order, so selection is reproducible.
        keep = np.argsort(-variance, kind="stable")[:n_pairs]
        return candidates[np.sort(keep)]


@dataclass(frozen=True)
class SelectorOptions:
    """What a selector factory is built with.

    Attributes:
        oversample: Candidates drawn per pair kept (selectors that rank candidates).
    """

    oversample: int = 10


#: Builds a selector from its options; a user's factory plugs in as ``pkg.mod:factory``.
SelectorFactory = Callable[[SelectorOptions], QuerySelector]


def _factory_from_import(obj: object, path: str) -> SelectorFactory:
    if callable(obj):
        return obj  # type: ignore[return-value]
    raise TypeError(f"{path!r} is not a query-selector factory")


SELECTORS: Registry[SelectorFactory] = Registry("query selector", _factory_from_import)
SELECTORS.register("uniform", lambda options: UniformSelector())
SELECTORS.register("disagreement", lambda options: DisagreementSelector(options.oversample))


def make_selector(name: str, options: SelectorOptions) -> QuerySelector:
    """Build the selector ``name`` (an id or ``pkg.mod:factory``) from ``options``.

    Raises:
        UnknownIdError: For an unknown id.
        TypeError: If the factory does not build a :class:`QuerySelector`.
    """
    selector = SELECTORS.get(name)(options)
    if not callable(getattr(selector, "select", None)):
        raise TypeError(f"query selector {name!r} built an object without select()")
    return selector
