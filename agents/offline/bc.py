"""Behaviour cloning, and MLE with filtering ("10% BC") as the same learner.

Plain BC maximises the policy's likelihood of every dataset action and ignores rewards.
With ``filter_fraction < 1`` it clones only the steps of the top fraction of episodes
ranked by their undiscounted return under the dataset's rewards (true or relabelled by a
learned reward model; equal returns in a fixed random order): CORL's ``any_percent_bc``,
here with a Gaussian likelihood instead of CORL's mean-squared error so that every
learner shares :func:`weighted_nll`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prefbench.agents.offline.base import LearnerConfig, OfflineLearner
from prefbench.agents.offline.objectives import top_fraction_mask, weighted_nll


@dataclass(frozen=True)
class Config(LearnerConfig):
    """BC settings; the network and optimiser fields are :class:`LearnerConfig`'s.

    Attributes:
        filter_fraction: Share of episodes kept, best returns first, in ``(0, 1]``
            (1: plain BC).
    """

    filter_fraction: float = 1.0

    def problems(self) -> list[str]:
        """Descriptions of the invalid settings."""
        problems = super().problems()
        if not 0 < self.filter_fraction <= 1:
            problems.append(f"filter_fraction must be in (0, 1], got {self.filter_fraction}")
        return problems


@dataclass(frozen=True)
class FilteredConfig(Config):
    """MLE with filtering: :class:`Config` keeping the top 10% of episodes by return."""

    filter_fraction: float = 0.1


class BC(OfflineLearner):
    """Behaviour cloning of the kept episodes' steps (all of them by default).

    Args:
        data: Episodes to clone; their rewards rank the episodes when filtering.
        action_low: ``(A,)`` lower action bounds.
        action_high: ``(A,)`` upper action bounds.
        config: :class:`Config` (or :class:`FilteredConfig`).
        seeds: One seed per model.
        device: Torch device.

    Attributes:
        kept_episodes: ``(E,)`` bool, the episodes cloned.
    """

    config_type = Config
    config: Config

    def _put_data(self) -> None:
        super()._put_data()
        # Equal returns (a zero-reward control) keep a fixed random set of episodes, the
        # same for every seed, not the first ones (in medium-replay: the worst).
        ties = np.random.default_rng(0).random(self.data.n_episodes)
        self.kept_episodes = top_fraction_mask(
            self.data.returns(), self.config.filter_fraction, ties
        )
        steps = np.flatnonzero(self.kept_episodes[self.data.episode_of_step])
        self.info["kept_episodes"] = int(self.kept_episodes.sum())
        self.pool = torch.as_tensor(steps, dtype=torch.int64, device=self.device)

    def _update(self) -> dict[str, float]:
        idx = self.sample(self.pool)  # (S, B)
        log_prob = self.policy.log_prob({"obs": self.obs[idx]}, self.acts[idx])
        loss = weighted_nll(log_prob)  # (S,); raises before any step if not finite
        metrics = self._metrics({"policy_loss": loss})
        self._step("policy", loss)
        return metrics
