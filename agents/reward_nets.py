"""The reward ensemble's networks and the labelled pairs they train on, on the device.

Shapes: ``K`` members, ``M`` states, ``P`` clips, ``H`` steps per clip, ``O...`` the
observation shape, ``A`` the flattened action length. Every member sees its own batch
(``obs[k]``), so bootstrap resamples train all members in one pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from prefbench.agents.encoders import ENCODERS, EnsembleLinear

if TYPE_CHECKING:
    from prefbench.agents.reward_model import RewardModelConfig


#: Added to the running variance before the square root (as in imitation's RunningNorm).
INPUT_NORM_EPS = 1e-5
#: The buffers holding the input statistics (checkpoint version 1 has none).
INPUT_STATS = ("in_count", "in_labels", "in_mean", "in_var")


class RewardEnsemble(nn.Module):
    """``K`` reward networks evaluated together.

    Args:
        obs_shape: Shape of one observation.
        act_dim: Length of the (flattened or one-hot) action vector; 0 to ignore actions.
        config: Hyperparameters.
    """

    def __init__(self, obs_shape: tuple[int, ...], act_dim: int, config: RewardModelConfig) -> None:
        super().__init__()
        k = config.ensemble_size
        self.config = config
        self.obs_shape = tuple(obs_shape)
        self.act_dim = act_dim if config.use_actions else 0
        self.encoder = ENCODERS.get(config.encoder)(k, self.obs_shape, **config.encoder_kwargs)
        width = self.encoder.out_dim + self.act_dim
        layers = []
        for h in config.hidden_sizes:
            layers.append(EnsembleLinear(k, width, h))
            width = h
        self.trunk = nn.ModuleList(layers)
        self.head = EnsembleLinear(k, width, 1)
        # Running statistics of the trunk's input (the flattened observation and action),
        # shared by the members and applied when ``config.input_norm`` is on; updated by
        # `update_input_stats`. With no data they are the identity: mean 0 and a variance
        # of 1 - eps, so that the scale 1 / sqrt(var + eps) is exactly 1.
        self.in_width = self.encoder.out_dim + self.act_dim
        self.register_buffer("in_count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("in_labels", torch.zeros((), dtype=torch.int64))
        self.register_buffer("in_mean", torch.zeros(self.in_width, dtype=torch.float64))
        self.register_buffer(
            "in_var", torch.full((self.in_width,), 1 - INPUT_NORM_EPS, dtype=torch.float64)
        )
        # Per-member affine normalisation of the raw output, set by `set_normalization`.
        self.register_buffer("out_mean", torch.zeros(k))
        self.register_buffer("out_std", torch.ones(k))

    @property
    def n_members(self) -> int:
        """``K``."""
        return self.config.ensemble_size

    def features(self, obs: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """Last hidden layer: ``(K, M, *O)``, ``(K, M, A)`` -> ``(K, M, hidden)``."""
        x = self._raw_inputs(obs, acts)
        if self.config.input_norm:
            x = (x - self.in_mean.float()) * self.in_scale()
        slope = self.config.leaky_relu_slope
        for layer in self.trunk:
            x = F.leaky_relu(layer(x), slope)
        return x

    def in_scale(self) -> torch.Tensor:
        """``(D,)`` float32 ``1 / sqrt(var + eps)`` of the input statistics."""
        return torch.rsqrt(self.in_var + INPUT_NORM_EPS).float()

    @torch.no_grad()
    def update_input_stats(self, x: torch.Tensor) -> None:
        """Merge ``(M, D)`` trunk inputs into the running mean and variance.

        Chan et al.'s parallel update: the statistics after any sequence of batches equal
        those of all their rows at once (population variance), so they do not depend on
        how the data was split.
        """
        x = x.reshape(-1, self.in_width).double()
        m = x.shape[0]
        if m == 0:
            return
        n = self.in_count
        mean_b = x.mean(dim=0)
        var_b = x.var(dim=0, unbiased=False)
        total = n + m
        delta = mean_b - self.in_mean
        if n == 0:
            # The identity's variance is a placeholder, not data: replace it.
            self.in_mean.copy_(mean_b)
            self.in_var.copy_(var_b)
        else:
            self.in_mean.add_(delta * (m / total))
            m2 = self.in_var * n + var_b * m + delta.pow(2) * (n * m / total)
            self.in_var.copy_(m2 / total)
        self.in_count.fill_(total)

    def _raw_inputs(self, obs: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """Encoded observations and actions: ``(K, M, *O)``, ``(K, M, A)`` -> ``(K, M, D)``."""
        x = self.encoder(obs)
        if self.act_dim:
            x = torch.cat([x, acts.reshape(*acts.shape[:2], self.act_dim).float()], dim=-1)
        return x

    def trunk_inputs(self, obs: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """Unnormalised trunk inputs: ``(M, *O)``, ``(M, A)`` -> ``(M, D)`` (flatten encoder)."""
        return self._raw_inputs(obs.unsqueeze(0), None if acts is None else acts.unsqueeze(0))[0]

    def step_rewards(self, obs: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """Raw per-step rewards: ``(K, M, *O)``, ``(K, M, A)`` -> ``(K, M)``."""
        return self.head(self.features(obs, acts)).squeeze(-1)

    def clip_returns(
        self, obs: torch.Tensor, acts: torch.Tensor | None, taken: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Raw clip returns: ``(K, P, H, *O)``, ``(K, P, H, A)`` -> ``(K, P)``.

        The head is affine, so summing the last hidden layer over the clip before the head
        gives the summed per-step rewards at a fraction of the cost.

        Args:
            obs: Observations.
            acts: Actions (``None`` when the net ignores them).
            taken: ``(K, P, H)`` 1 at steps of experience, 0 at absorbing steps, whose
                reward is 0 (``None``: every step is experience).
        """
        k, p, h = obs.shape[:3]
        flat_obs = obs.reshape(k, p * h, *obs.shape[3:])
        flat_acts = acts.reshape(k, p * h, -1) if self.act_dim else None
        feats = self.features(flat_obs, flat_acts).reshape(k, p, h, -1)
        if taken is None:
            return torch.baddbmm(self.head.bias * h, feats.sum(dim=2), self.head.weight).squeeze(-1)
        summed = (feats * taken.unsqueeze(-1)).sum(dim=2)
        bias = self.head.bias * taken.sum(dim=2, keepdim=True)  # (K, P, 1)
        return torch.baddbmm(bias, summed, self.head.weight).squeeze(-1)

    @torch.no_grad()
    def set_normalization(self, obs: torch.Tensor, acts: torch.Tensor | None) -> None:
        """Fit each member's output normalisation on ``(M, *O)`` states (and actions).

        States go through the network about 5e7 input values at a time (conv activations
        are large; a MuJoCo batch is one chunk).
        """
        k = self.n_members
        chunk = max(1, int(5e7 // max(1, math.prod(obs.shape[1:]))))
        parts = []
        for s in range(0, obs.shape[0], chunk):
            o = obs[s : s + chunk]
            a = acts[s : s + chunk] if self.act_dim else None
            parts.append(
                self.step_rewards(
                    o.unsqueeze(0).expand(k, *o.shape),
                    a.unsqueeze(0).expand(k, *a.shape) if a is not None else None,
                )
            )
        r = torch.cat(parts, dim=1)
        self.out_mean.copy_(r.mean(dim=1))
        self.out_std.copy_(r.std(dim=1).clamp_min(1e-6) if r.shape[1] > 1 else torch.ones(k))

    @torch.no_grad()
    def normalized_zero(self) -> float:
        """The agent's reward for a step whose raw output is 0 in every member.

        An absorbing step's reward (raw 0, see :meth:`clip_returns`) on the scale of
        :meth:`normalized_reward`.
        """
        z = -(self.out_mean / self.out_std).mean() * self.config.output_std
        return float(z)

    @torch.no_grad()
    def normalized_reward(self, obs: torch.Tensor, acts: torch.Tensor | None) -> torch.Tensor:
        """The agent's reward for ``(M, *O)`` states: mean over members of normalised outputs."""
        k = self.n_members
        r = self.step_rewards(
            obs.unsqueeze(0).expand(k, *obs.shape),
            acts.unsqueeze(0).expand(k, *acts.shape) if self.act_dim else None,
        )
        r = (r - self.out_mean[:, None]) / self.out_std[:, None]
        return r.mean(dim=0) * self.config.output_std


def action_dim(space: gym.Space) -> int:
    """Length of the action vector the reward model reads: a Box flattened, a Discrete 1."""
    return int(np.prod(space.shape)) if space.shape else 1


@dataclass(frozen=True)
class DeviceData:
    """Labelled pairs on the device.

    Attributes:
        obs: ``(N, 2, H, *O)`` observations, or with ``frame_stack = k > 0`` the compact
            ``(N, 2, H + k - 1, F...)`` frames that the ``(H, k, F...)`` stacks are cut from.
        acts: ``(N, 2, H, A)`` flattened actions.
        prefs: ``(N,)`` probability that the first clip is preferred.
        frame_stack: ``k``, or 0 when ``obs`` holds whole observations.
        taken: ``(N, 2, H)`` 1 at steps of experience, 0 at absorbing steps; ``None``
            when every step is experience.
    """

    obs: torch.Tensor
    acts: torch.Tensor
    prefs: torch.Tensor
    frame_stack: int = 0
    taken: torch.Tensor | None = None

    def clips(self, idx: torch.Tensor) -> torch.Tensor:
        """``(*idx.shape, 2, H, *O)`` observations of the pairs ``idx`` (stacks built here)."""
        obs = self.obs[idx]
        if not self.frame_stack:
            return obs
        axis = idx.dim() + 1  # the frame axis, after the pair and clip axes
        # unfold puts the window last: (..., H, F..., k) -> (..., H, k, F...).
        return obs.unfold(axis, self.frame_stack, 1).movedim(-1, axis + 1)

    @property
    def clip_shape(self) -> tuple[int, ...]:
        """``(H, *O)``, one clip's observations."""
        if not self.frame_stack:
            return tuple(self.obs.shape[2:])
        k = self.frame_stack
        return (self.obs.shape[2] - k + 1, k, *self.obs.shape[3:])


class NumpyEnsemble:
    """A NumPy snapshot of a flatten-encoder ensemble for scoring a few states at a time."""

    def __init__(self, net: RewardEnsemble) -> None:
        def np_(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32)

        self.layers = [(np_(layer.weight), np_(layer.bias)) for layer in net.trunk]
        self.in_mean = np_(net.in_mean) if net.config.input_norm else None
        self.in_scale = np_(net.in_scale())
        self.head = (np_(net.head.weight), np_(net.head.bias))
        self.mean = np_(net.out_mean)[:, None]
        self.std = np_(net.out_std)[:, None]
        self.slope = np.float32(net.config.leaky_relu_slope)
        self.use_acts = net.act_dim > 0
        self.scale = np.float32(net.config.output_std)

    def __call__(self, obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """:meth:`RewardEnsemble.normalized_reward` of ``(M, *O)``, ``(M, A...)`` -> ``(M,)``."""
        m = len(obs)
        x = obs.reshape(m, -1).astype(np.float32, copy=False)
        if self.use_acts:
            x = np.concatenate([x, acts.reshape(m, -1).astype(np.float32, copy=False)], axis=1)
        if self.in_mean is not None:
            x = (x - self.in_mean) * self.in_scale
        h = x[None]  # (1, M, D), broadcast over the K members
        for w, b in self.layers:
            h = h @ w + b
            h = np.maximum(h, self.slope * h)
        r = (h @ self.head[0] + self.head[1])[..., 0]  # (K, M)
        return (((r - self.mean) / self.std).mean(axis=0) * self.scale).astype(np.float32)
