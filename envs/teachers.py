"""Synthetic teachers: label batches of clip pairs from the hidden true reward.

Every teacher follows one protocol, :class:`Teacher`: ``label(pairs) -> Labels`` answers a
whole batch at once and may abstain on some pairs. The six simulated teachers of B-Pref
(Lee, Smith, Abbeel 2021) are one class, :class:`BPrefTeacher`, with these parameters:

========== ====== ===== ======= ============= ==============
teacher    beta   gamma epsilon skip fraction equal fraction
========== ====== ===== ======= ============= ==============
oracle     inf    1     0       0             0
stochastic 1      1     0       0             0
mistake    inf    1     0.1     0             0
skip       inf    1     0       0.1           0
equal      inf    1     0       0             0.1
myopic     inf    0.9   0       0             0
========== ====== ===== ======= ============= ==============

``oracle`` is also the synthetic oracle of Christiano et al. 2017: it prefers the clip with
the larger true return and is indifferent (0.5) on an exact tie.

For one pair ``(a, b)`` with undiscounted true returns ``R_a, R_b`` the steps are, in order:

1. skip: if ``max(R_a, R_b) < delta_skip`` the teacher abstains;
2. equal: if ``|R_a - R_b| < delta_equal`` the label is 0.5;
3. myopic: the choice uses ``C = sum_t gamma^(H-1-t) r_t`` (later steps weigh more);
4. choice: ``beta = inf`` picks the larger ``C`` (0.5 on a tie); otherwise the first clip
   wins with probability ``sigmoid(beta * (C_a - C_b) / s)``;
5. mistake: the choice is flipped with probability ``epsilon``.

Thresholds are fractions of a typical clip return, ``delta = fraction * m`` with
``m = mean episode return * H / episode length`` (B-Pref's definition; ``delta_equal`` uses
``|m|`` because it bounds a magnitude). They are recomputed from the fractions at every
calibration, never compounded: the B-Pref reference code multiplies them by the fraction
again after its first update, which is a bug not reproduced here.

Rationality is applied to *normalised* returns: ``s`` is the standard deviation of clip
returns measured at calibration. With raw returns a MuJoCo clip pair differs by tens of
reward units, so ``sigmoid(1 * 30)`` makes a "stochastic" teacher deterministic in
practice; dividing by ``s`` keeps ``beta = 1`` meaning "a difference of one typical spread
is preferred about 73% of the time", whatever the task's reward scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import numpy as np

from prefbench.envs.data import ClipPairs, Labels, Trajectory
from prefbench.envs.registry import Registry


@dataclass(frozen=True)
class ReturnScale:
    """The scale of clip returns that thresholds and rationality refer to.

    Attributes:
        typical: Typical clip return ``mean episode return * H / episode length``.
        spread: Standard deviation of clip returns (> 0).
    """

    typical: float = 0.0
    spread: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.typical) and math.isfinite(self.spread) and self.spread > 0):
            raise ValueError(f"invalid return scale: typical={self.typical}, spread={self.spread}")

    @staticmethod
    def from_trajectories(trajectories: Sequence[Trajectory], clip_length: int) -> ReturnScale:
        """Measure the scale on trajectories (e.g. the latest rollouts).

        ``typical`` follows B-Pref; ``spread`` is the standard deviation of the returns of
        all non-overlapping clips cut from the trajectories.
        """
        trajs = [t for t in trajectories if len(t) > 0]
        if not trajs:
            raise ValueError("need at least one non-empty trajectory to measure a return scale")
        steps = sum(len(t) for t in trajs)
        typical = sum(t.true_return for t in trajs) * clip_length / steps
        clip_returns = [
            t.true_rewards[i : i + clip_length].sum()
            for t in trajs
            for i in range(0, len(t) - clip_length + 1, clip_length)
        ]
        spread = float(np.std(clip_returns)) if len(clip_returns) > 1 else 0.0
        if not spread > 1e-8:
            spread = max(abs(typical), 1.0)
        return ReturnScale(float(typical), spread)


@runtime_checkable
class Teacher(Protocol):
    """Labels a batch of clip pairs at once; may abstain on some."""

    def label(self, pairs: ClipPairs) -> Labels:
        """Answer every pair in ``pairs``: ``Labels.prefs[i]`` is P(first clip preferred)."""
        ...


@runtime_checkable
class CalibratedTeacher(Teacher, Protocol):
    """A teacher whose thresholds depend on the scale of returns of the current policy."""

    def calibrate(self, scale: ReturnScale) -> None:
        """Set the return scale used from now on."""
        ...


@runtime_checkable
class ShowsPairs(Teacher, Protocol):
    """A teacher that must see the pairs drawn (a person): the run says how to draw them."""

    def use_renderer(self, renderer: object) -> None:
        """Draw the pairs of the next ``label`` calls with ``renderer`` (a ``PairRenderer``)."""
        ...


@dataclass(frozen=True)
class TeacherConfig:
    """Parameters of a B-Pref simulated teacher (see the module docstring).

    Attributes:
        beta: Rationality; ``inf`` means always pick the better clip.
        gamma: Myopia discount over the clip's steps (1 = not myopic).
        epsilon: Probability of flipping the choice.
        skip_fraction: ``delta_skip`` as a fraction of the typical clip return.
        equal_fraction: ``delta_equal`` as a fraction of the typical clip return.
    """

    beta: float = math.inf
    gamma: float = 1.0
    epsilon: float = 0.0
    skip_fraction: float = 0.0
    equal_fraction: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "beta": self.beta > 0,
            "gamma": 0 < self.gamma <= 1,
            "epsilon": 0 <= self.epsilon <= 1,
            "skip_fraction": self.skip_fraction >= 0 and math.isfinite(self.skip_fraction),
            "equal_fraction": self.equal_fraction >= 0 and math.isfinite(self.equal_fraction),
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid teacher {name}={getattr(self, name)}")


class BPrefTeacher:
    """The B-Pref simulated teacher (and Christiano's oracle as its ``oracle`` setting).

    Args:
        config: The teacher's parameters.
        rng: Source of the teacher's randomness (stochastic choices and mistakes).
        scale: Initial return scale; call :meth:`calibrate` as the policy changes.
    """

    def __init__(
        self,
        config: TeacherConfig,
        rng: np.random.Generator,
        scale: ReturnScale | None = None,
    ) -> None:
        self.config = config
        self.rng = rng
        self.scale = scale or ReturnScale()

    def calibrate(self, scale: ReturnScale) -> None:
        """Set the return scale; thresholds are recomputed from the fractions each time."""
        self.scale = scale

    @property
    def delta_skip(self) -> float:
        """Skip threshold in return units."""
        return self.config.skip_fraction * self.scale.typical

    @property
    def delta_equal(self) -> float:
        """Indifference threshold in return units."""
        return self.config.equal_fraction * abs(self.scale.typical)

    def label(self, pairs: ClipPairs) -> Labels:
        """Label every pair; see the module docstring for the order of operations."""
        cfg = self.config
        rewards = pairs.true_rewards.astype(np.float64)  # (N, 2, H)
        n, _, h = rewards.shape
        returns = rewards.sum(axis=2)  # (N, 2)
        # Draw both uniform streams for every pair so one pair's answer never depends
        # on which other pairs were skipped.
        u_choice = self.rng.random(n)
        u_mistake = self.rng.random(n)

        valid = np.ones(n, dtype=bool)
        if cfg.skip_fraction > 0:
            valid = returns.max(axis=1) >= self.delta_skip

        if cfg.gamma < 1:
            weights = cfg.gamma ** np.arange(h - 1, -1, -1, dtype=np.float64)  # (H,)
            choice_returns = rewards @ weights  # (N, 2)
        else:
            choice_returns = returns
        diff = choice_returns[:, 0] - choice_returns[:, 1]

        if math.isinf(cfg.beta):
            prefs = np.where(diff > 0, 1.0, np.where(diff < 0, 0.0, 0.5))
        else:
            p_first = 1.0 / (1.0 + np.exp(-cfg.beta * diff / self.scale.spread))
            prefs = (u_choice < p_first).astype(np.float64)

        if cfg.epsilon > 0:
            flip = u_mistake < cfg.epsilon
            prefs = np.where(flip, 1.0 - prefs, prefs)

        if cfg.equal_fraction > 0:
            equal = np.abs(returns[:, 0] - returns[:, 1]) < self.delta_equal
            prefs = np.where(equal, 0.5, prefs)

        prefs = np.where(valid, prefs, 0.5)
        return Labels(prefs.astype(np.float32), valid)


#: A teacher factory takes the teacher's random generator.
TeacherFactory = Callable[[np.random.Generator], Teacher]

#: The B-Pref teachers' parameters, by id.
BPREF_TEACHERS: dict[str, TeacherConfig] = {
    "oracle": TeacherConfig(),
    "stochastic": TeacherConfig(beta=1.0),
    "mistake": TeacherConfig(epsilon=0.1),
    "skip": TeacherConfig(skip_fraction=0.1),
    "equal": TeacherConfig(equal_fraction=0.1),
    "myopic": TeacherConfig(gamma=0.9),
}


def _teacher_from_import(obj: object, path: str) -> TeacherFactory:
    if callable(obj):
        return obj  # type: ignore[return-value]
    raise TypeError(f"{path!r} is not a teacher class or factory")


TEACHERS: Registry[TeacherFactory] = Registry("teacher", _teacher_from_import)
for _name, _cfg in BPREF_TEACHERS.items():
    TEACHERS.register(_name, lambda rng, _cfg=_cfg: BPrefTeacher(_cfg, rng))
#: People, through the labelling page (``prefbench label serve``).
TEACHERS.register("human", "prefbench.envs.human.teacher:HumanTeacher")


def make_teacher(name: str, rng: np.random.Generator) -> Teacher:
    """Build a teacher by id or import path (a class or factory taking ``rng``).

    Raises:
        UnknownIdError: For an unknown id.
        TypeError: If the object built does not follow the :class:`Teacher` protocol.
    """
    teacher = TEACHERS.get(name)(rng)
    if not isinstance(teacher, Teacher):
        raise TypeError(f"teacher {name!r} has no label(pairs) method")
    return teacher


def teacher_table() -> list[dict[str, object]]:
    """The registered B-Pref teachers' parameters, one dict per teacher."""
    return [
        {"id": name, **{f.name: getattr(cfg, f.name) for f in fields(cfg)}}
        for name, cfg in BPREF_TEACHERS.items()
    ]
