"""Reward-weighted regression: likelihood of each step weighted by ``exp(score / beta)``.

The score of a step is its episode's return (the default, as the offline-RLHF text track
weights a whole response by its reward) or its return-to-go under the dataset's rewards.
Scores are standardised over the dataset's ``N`` steps (zero mean, unit standard
deviation; skipped when ``standardize`` is off or all scores are equal), so the default
``beta = 0.5`` means the same on every task; :func:`rwr_weights` turns them into weights
of mean 1 over the steps, clipped at ``max_weight`` after normalising. Minibatches are
drawn uniformly and weighted in the loss (as AWR does), not drawn in proportion to the
weights.

Why the episode's return: on fixed-length episodes (HalfCheetah) an undiscounted
return-to-go mostly says how early a step is, so weighting by it favours every
episode's first steps rather than the good episodes; with it (and beta 1) RWR stayed at
BC's level on our halfcheetah-medium-replay. Over two seeds on each of our hopper,
walker2d and halfcheetah medium-replay datasets, episode returns at beta 0.5 scored at
least as well as return-to-go (undiscounted or at 0.99) at beta 1 or 0.5 and as returns at
beta 1, 0.25 or 0.1 (results/README.md; the runs are noisy, so this is a default, not a
tuned optimum).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from prefbench.agents.offline.base import LearnerConfig, OfflineLearner
from prefbench.agents.offline.objectives import rwr_weights, weighted_nll
from prefbench.envs.episodes import Episodes

WEIGHT_BY = ("return_to_go", "return")


@dataclass(frozen=True)
class Config(LearnerConfig):
    """RWR settings; the network and optimiser fields are :class:`LearnerConfig`'s.

    Attributes:
        weight_by: ``"return_to_go"`` (each step's discounted rewards to its episode's
            end) or ``"return"`` (its episode's undiscounted return).
        discount: Discount of the return-to-go, in ``(0, 1]``.
        beta: Temperature of the weights, > 0 (on standardised scores by default).
        max_weight: Clip of the mean-1 weights, > 0.
        standardize: Standardise the scores over the dataset's steps before weighting.
    """

    weight_by: Literal["return_to_go", "return"] = "return"
    discount: float = 1.0
    beta: float = 0.5
    max_weight: float = 20.0
    standardize: bool = True

    def problems(self) -> list[str]:
        """Descriptions of the invalid settings."""
        problems = super().problems()
        if self.weight_by not in WEIGHT_BY:
            problems.append(f"weight_by must be one of {WEIGHT_BY}, got {self.weight_by!r}")
        if not 0 < self.discount <= 1:
            problems.append(f"discount must be in (0, 1], got {self.discount}")
        if not self.beta > 0:
            problems.append(f"beta must be > 0, got {self.beta}")
        if not self.max_weight > 0:
            problems.append(f"max_weight must be > 0, got {self.max_weight}")
        return problems


def step_scores(data: Episodes, config: Config) -> np.ndarray:
    """``(N,)`` float64 score of each step, standardised when ``config.standardize``."""
    if config.weight_by == "return_to_go":
        scores = data.returns_to_go(gamma=config.discount).astype(np.float64)
    else:
        scores = data.returns().astype(np.float64)[data.episode_of_step]
    std = scores.std()
    if config.standardize and std > 1e-8:  # equal scores: all weights 1 either way
        scores = (scores - scores.mean()) / std
    return scores


class RWR(OfflineLearner):
    """Reward-weighted regression of the policy on every step.

    Args:
        data: Episodes to learn from; their rewards give the weights.
        action_low: ``(A,)`` lower action bounds.
        action_high: ``(A,)`` upper action bounds.
        config: :class:`Config`.
        seeds: One seed per model.
        device: Torch device.

    Attributes:
        weights: ``(N,)`` float64 weight of each step.
    """

    config_type = Config
    config: Config

    def _put_data(self) -> None:
        super()._put_data()
        c = self.config
        self.weights = rwr_weights(step_scores(self.data, c), c.beta, c.max_weight)
        self.step_weights = self._tensor(self.weights)

    def _update(self) -> dict[str, float]:
        idx = self.sample()  # (S, B)
        weights = self.step_weights[idx]
        log_prob = self.policy.log_prob({"obs": self.obs[idx]}, self.acts[idx])
        loss = weighted_nll(log_prob, weights)  # (S,); raises before any step if not finite
        metrics = self._metrics({"policy_loss": loss, "weight": weights})
        self._step("policy", loss)
        return metrics
