"""When the preference loop asks for labels and refits the reward model: a pure schedule.

Paper appendix A.1 (MuJoCo): a share of the label budget is labelled on clips of a random
policy before RL starts; the rest arrives at a rate proportional to ``c / (T + c)`` over
``T`` environment steps, so the cumulative count follows ``log(1 + T / c)``, scaled to use
the whole budget by the last refit before the end (``c = 2e6``; Atari: 500 labels first
and ``c = 5e6``). The reward model refits every ``update_every`` steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def label_schedule(
    step: int, total_steps: int, budget: int, initial: int, decay_steps: float
) -> int:
    """Labels that should have been asked for by ``step`` (the paper's schedule).

    Args:
        step: Environment steps so far (0 before RL starts).
        total_steps: Steps over which the budget is spread.
        budget: Total labels.
        initial: Labels asked before RL starts (random-policy clips), at most ``budget``.
        decay_steps: ``c`` in the rate ``c / (T + c)``.

    Returns:
        A count in ``[min(initial, budget), budget]``, non-decreasing in ``step``.
    """
    initial = min(max(initial, 0), budget)
    if total_steps <= 0 or step >= total_steps:
        return budget
    frac = math.log1p(max(step, 0) / decay_steps) / math.log1p(total_steps / decay_steps)
    return min(budget, initial + math.floor((budget - initial) * frac))


@dataclass(frozen=True)
class PreferenceSchedule:
    """The label and refit schedule of one run.

    Attributes:
        total_steps: Environment steps in the run.
        label_budget: Labels in all.
        initial_labels: Labels before RL starts.
        decay_steps: ``c`` of the label rate ``c / (T + c)``.
        update_every: Steps between refits (at most a twentieth of the run, so short
            runs refit too).
    """

    total_steps: int
    label_budget: int
    initial_labels: int
    decay_steps: float
    update_every: int

    @staticmethod
    def build(
        total_steps: int,
        label_budget: int,
        *,
        initial_labels: int,
        initial_fraction: float,
        decay_steps: float,
        update_every: int,
    ) -> PreferenceSchedule:
        """The schedule of a run; ``initial_labels > 0`` overrides ``initial_fraction``."""
        return PreferenceSchedule(
            total_steps=total_steps,
            label_budget=label_budget,
            initial_labels=initial_labels or round(label_budget * initial_fraction),
            decay_steps=decay_steps,
            update_every=min(update_every, max(1, total_steps // 20)),
        )

    def labels_wanted(self, step: int) -> int:
        """Labels that should have been asked for by ``step``."""
        # The whole budget by the last refit before the end, where labels can still
        # shape the policy.
        return label_schedule(
            step,
            max(1, self.total_steps - self.update_every),
            self.label_budget,
            self.initial_labels,
            self.decay_steps,
        )

    def fit_due(self, step: int, last_fit: int) -> bool:
        """Whether the reward model refits at ``step``, having last refit at ``last_fit``."""
        return step >= last_fit + self.update_every
