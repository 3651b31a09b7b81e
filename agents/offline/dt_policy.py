"""Acting with a trained Decision Transformer: per-env histories and returns-to-go.

:class:`DTPolicy` keeps, for every seed's model and every environment, the last ``K``
steps the model reads (return-to-go, observation, action, timestep), left-padded like
the training windows of :mod:`prefbench.agents.offline.dt`, and lowers each env's
return-to-go by the rewards the caller reports.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from prefbench.agents.offline.dt import DecisionTransformer


class DTPolicy:
    """Acts with a learner's models in ``n`` environments per seed, keeping their histories.

    Each env holds its last ``K`` steps of (return-to-go, observation, action, timestep),
    left-padded like the training windows. Call :meth:`act` with every env's observation,
    step the envs, then :meth:`observe` with the rewards of that step (which reward is
    the caller's choice). Finished envs are acted for like the others until the caller
    :meth:`reset` s them. The models are the learner's own, not copies.

    Args:
        learner: The trained learner.
        n_envs: ``n``.
        target_return: Unscaled return every env starts from.
    """

    def __init__(self, learner: DecisionTransformer, n_envs: int, target_return: float) -> None:
        if n_envs < 1 or not math.isfinite(target_return):
            raise ValueError(f"need n_envs >= 1 and a finite target, got {n_envs}, {target_return}")
        self.learner = learner
        self.target_return = float(target_return)
        shape = (learner.n_seeds, n_envs, learner.config.context_length)
        dev = learner.device
        o, a = learner.obs_mean.size, learner.action_low.size
        # The model's inputs, window slot -1 the newest step.
        self._hist = {
            "rtg": torch.zeros(shape, device=dev),
            "states": torch.zeros(*shape, o, device=dev),
            "actions": torch.zeros(*shape, a, device=dev),
            "timesteps": torch.zeros(shape, dtype=torch.int64, device=dev),
            "mask": torch.zeros(shape, dtype=torch.bool, device=dev),
        }
        # Unscaled float64 on the host: a thousand small subtractions per episode.
        self._return_to_go = np.full(shape[:2], self.target_return)
        self._t = torch.zeros(shape[:2], dtype=torch.int64, device=dev)
        self._stats = [
            torch.as_tensor(x, dtype=torch.float32, device=dev)
            for x in (learner.obs_mean, learner.obs_std, learner.action_low, learner.action_high)
        ]

    @property
    def returns_to_go(self) -> np.ndarray:
        """``(S, n)`` unscaled returns-to-go the envs will act on next."""
        return self._return_to_go.copy()

    @torch.no_grad()
    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for ``(S, n, O...)`` observations: ``(S, n, A...)`` in env units."""
        learner, (s, n) = self.learner, self._return_to_go.shape
        obs = np.asarray(obs)
        if obs.shape != (s, n, *learner.obs_shape):
            raise ValueError(f"obs must be {(s, n, *learner.obs_shape)}, got {obs.shape}")
        mean, std, low, high = self._stats
        dev = learner.device
        x = torch.as_tensor(obs.reshape(s, n, -1), dtype=torch.float32, device=dev)
        new = {
            "rtg": torch.as_tensor(self._return_to_go / learner.rtg_scale, dtype=torch.float32),
            "states": (x - mean) / std,
            # A placeholder until predicted: the prediction of this step cannot see it.
            "actions": torch.zeros_like(self._hist["actions"][:, :, 0]),
            "timesteps": self._t,
            "mask": torch.ones_like(self._hist["mask"][:, :, 0]),
        }
        for key, value in new.items():
            old = self._hist[key]
            self._hist[key] = torch.cat([old[:, :, 1:], value.to(dev)[:, :, None]], dim=2)
        h = self._hist
        learner.models.eval()
        pred = torch.stack(
            [
                m(h["rtg"][i], h["states"][i], h["actions"][i], h["timesteps"][i], h["mask"][i])
                for i, m in enumerate(learner.models)
            ]
        )[:, :, -1]
        h["actions"][:, :, -1] = pred
        self._t += 1
        out = low + (pred + 1) * (high - low) / 2
        return out.cpu().numpy().reshape(s, n, *learner.act_shape)

    def observe(self, rewards: np.ndarray) -> None:
        """Subtract the ``(S, n)`` rewards of the step just taken from each env's return-to-go."""
        rewards = np.asarray(rewards, dtype=np.float64)
        if rewards.shape != self._return_to_go.shape or not np.isfinite(rewards).all():
            raise ValueError(f"need finite {self._return_to_go.shape} rewards, got {rewards.shape}")
        self._return_to_go -= rewards

    def reset(self, env_mask: np.ndarray | None = None) -> None:
        """Restart the envs where ``env_mask`` (``(n,)`` or ``(S, n)`` bool) is True; None: all.

        They start again from an empty history, timestep 0 and the target return.
        """
        shape = self._return_to_go.shape
        m = np.ones(shape, dtype=bool) if env_mask is None else np.asarray(env_mask, dtype=bool)
        if m.shape not in (shape, shape[1:]):
            raise ValueError(f"env_mask must be {shape[1:]} or {shape}, got {m.shape}")
        m = np.broadcast_to(m, shape).copy()
        self._return_to_go[m] = self.target_return
        tm = torch.as_tensor(m, device=self.learner.device)
        self._t[tm] = 0
        for buf in self._hist.values():
            buf[tm] = 0
