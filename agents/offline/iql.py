"""Implicit Q-Learning (Kostrikov et al. 2021, arXiv 2110.06169), following CORL's ``iql.py``.

Per minibatch, all from the parameters before this step (CORL's order gives the same):

* value: ``V(s)`` is the ``expectile``-expectile of ``min(Q1', Q2')(s, a)`` over the
  dataset's actions (target critics), by :func:`expectile_loss`;
* critics: ``Q1, Q2`` regress on ``r + discount * (1 - terminated) * V(s')`` (a truncated
  step bootstraps; only :attr:`Episodes.terminations` stop it), then the target critics
  move ``tau`` of the way to them;
* policy: likelihood of the dataset action weighted by ``min(exp(temperature * A), 100)``
  with ``A = min(Q1', Q2')(s, a) - V(s)``; its learning rate decays by a cosine over
  ``actor_lr_decay_steps`` updates as in CORL.

Rewards are used as given, times ``reward_scale``. CORL rescales MuJoCo rewards by
``1000 / (max return - min return)`` of the dataset's episodes; ``reward_scale="dataset"``
does that.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from prefbench.agents.offline.base import LearnerConfig, OfflineLearner
from prefbench.agents.offline.mlp import TwinQ, ValueNet
from prefbench.agents.offline.objectives import (
    advantage_weights,
    expectile_loss,
    td_target,
    weighted_nll,
)
from prefbench.envs.episodes import Episodes


@dataclass(frozen=True)
class Config(LearnerConfig):
    """IQL settings (CORL's defaults); network and optimiser fields are :class:`LearnerConfig`'s.

    Attributes:
        expectile: ``tau`` of the value regression, in ``(0, 1)`` (CORL ``iql_tau``).
        temperature: Inverse temperature of the advantage weights, >= 0 (CORL ``beta``).
        max_adv_weight: Clip of the advantage weights, > 0.
        discount: In ``[0, 1]``.
        tau: Target critics' soft-update rate, in ``(0, 1]``.
        reward_scale: Factor on the rewards, > 0, or ``"dataset"``:
            ``1000 / (max - min)`` of the episode returns (CORL's MuJoCo normalisation).
        actor_lr_decay_steps: Updates over which the policy's learning rate falls to 0 by
            a cosine (CORL: over its whole run), staying 0 after; 0 keeps the rate
            constant; ``None``: an offline agent sets the run's number of updates (a
            learner built directly keeps the rate constant).
    """

    expectile: float = 0.7
    temperature: float = 3.0
    max_adv_weight: float = 100.0
    discount: float = 0.99
    tau: float = 0.005
    reward_scale: float | Literal["dataset"] = 1.0
    actor_lr_decay_steps: int | None = None

    def problems(self) -> list[str]:
        """Descriptions of the invalid settings."""
        problems = super().problems()
        if not 0 < self.expectile < 1:
            problems.append(f"expectile must be in (0, 1), got {self.expectile}")
        if not self.temperature >= 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if not self.max_adv_weight > 0:
            problems.append(f"max_adv_weight must be > 0, got {self.max_adv_weight}")
        if not 0 <= self.discount <= 1:
            problems.append(f"discount must be in [0, 1], got {self.discount}")
        if not 0 < self.tau <= 1:
            problems.append(f"tau must be in (0, 1], got {self.tau}")
        scale = self.reward_scale
        if isinstance(scale, str):
            if scale != "dataset":
                problems.append(f"reward_scale must be a float or 'dataset', got {scale!r}")
        elif not (math.isfinite(scale) and scale > 0):
            problems.append(f"reward_scale must be finite and > 0, got {scale}")
        if self.actor_lr_decay_steps is not None and self.actor_lr_decay_steps < 0:
            problems.append(f"actor_lr_decay_steps must be >= 0, got {self.actor_lr_decay_steps}")
        return problems


def dataset_reward_scale(data: Episodes) -> float:
    """CORL's ``1000 / (max return - min return)`` over the episodes.

    1 where every episode has the same return (the zero-reward control): no spread to
    scale to, and a constant reward needs none.
    """
    returns = data.returns().astype(np.float64)
    spread = float(returns.max() - returns.min())
    if not math.isfinite(spread):
        raise ValueError(f"reward_scale='dataset' needs finite episode returns, got {spread}")
    return 1000.0 / spread if spread > 0 else 1.0


class IQL(OfflineLearner):
    """Implicit Q-learning of ``S`` seeds at once.

    Args:
        data: Episodes with rewards (true or learned).
        action_low: ``(A,)`` lower action bounds.
        action_high: ``(A,)`` upper action bounds.
        config: :class:`Config`.
        seeds: One seed per model.
        device: Torch device.

    Attributes:
        value: ``V``.
        q: The twin critics; ``q_target`` their slow copy.
        reward_scale: The factor applied to the rewards.
    """

    config_type = Config
    config: Config

    def __init__(
        self,
        data: Episodes,
        action_low: np.ndarray,
        action_high: np.ndarray,
        config: Config,
        seeds: Sequence[int],
        device: str = "cpu",
    ) -> None:
        super().__init__(data, action_low, action_high, config, seeds, device)
        obs_dim, act_dim = data.obs.shape[1], data.acts.shape[1]
        self.value = ValueNet(self.seeds, obs_dim, config.hidden_sizes)
        self.q = TwinQ(self.seeds, obs_dim, act_dim, config.hidden_sizes)
        self.q_target = copy.deepcopy(self.q).requires_grad_(False)
        self._add("value", self.value, config.lr)
        self._add("q", self.q, config.lr)
        self._add("q_target", self.q_target)

    def _put_data(self) -> None:
        super()._put_data()
        scale = self.config.reward_scale
        self.reward_scale = dataset_reward_scale(self.data) if scale == "dataset" else float(scale)
        self.info["reward_scale"] = self.reward_scale
        self.next_obs = self._standardize(self.data.next_obs)
        self.rewards = self._tensor(self.data.rewards * np.float32(self.reward_scale))
        self.terminations = self._tensor(self.data.terminations)

    def actor_lr(self) -> float:
        """The policy's learning rate at the current update."""
        steps = self.config.actor_lr_decay_steps
        if not steps:
            return self.config.lr
        return self.config.lr * 0.5 * (1 + math.cos(math.pi * min(self.updates, steps) / steps))

    def _update(self) -> dict[str, float]:
        c = self.config
        idx = self.sample()  # (S, B)
        obs, acts = self.obs[idx], self.acts[idx]
        with torch.no_grad():
            next_v = self.value(self.next_obs[idx])
            target_q = self.q_target(obs, acts)

        # Value: expectile regression of V(s) towards the target critics' Q(s, a).
        adv = target_q - self.value(obs)
        value_loss = expectile_loss(adv, c.expectile).mean(-1)  # (S,)

        # Critics: one-step TD targets through V, no bootstrapping past terminations.
        targets = td_target(self.rewards[idx], self.terminations[idx], next_v, c.discount)
        q1, q2 = self.q.both(obs, acts)
        q_loss = ((q1 - targets).square().mean(-1) + (q2 - targets).square().mean(-1)) / 2

        # Policy: advantage-weighted likelihood of the dataset actions.
        weights = advantage_weights(adv, c.temperature, c.max_adv_weight)
        log_prob = self.policy.log_prob({"obs": obs}, acts)
        policy_loss = weighted_nll(log_prob, weights)

        metrics = self._metrics(
            {
                "value_loss": value_loss,
                "q_loss": q_loss,
                "policy_loss": policy_loss,
                "q": target_q,
                "adv": adv,
                "adv_weight": weights,
            }
        )
        self._step("value", value_loss)
        self._step("q", q_loss)
        with torch.no_grad():
            for target, source in zip(self.q_target.parameters(), self.q.parameters(), strict=True):
                target.lerp_(source, c.tau)
        for group in self._optimizers["policy"].param_groups:
            group["lr"] = self.actor_lr()
        self._step("policy", policy_loss)
        return metrics
