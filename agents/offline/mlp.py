"""Batched-seed networks for the offline learners: ``S`` independent models in one pass.

Every module here holds ``S`` models side by side (one per seed) in
:class:`prefbench.agents.encoders.EnsembleLinear` layers: inputs ``(S, B, ...)``, outputs
``(S, B, ...)``, slice ``s`` seen only by model ``s``. Model ``s``'s parameters are drawn
from its own generator, ``make_torch_generator(seeds[s], stream)``, in a fixed order, so
a module built for seeds ``(a, b, c)`` holds exactly the parameters of three modules built
for ``(a,)``, ``(b,)`` and ``(c,)``; trained with per-seed minibatches and a loss summed
over seeds, they stay equal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from prefbench.agents.encoders import EnsembleLinear
from prefbench.envs.seeding import make_torch_generator

#: Bounds of the log standard deviation (CORL's IQL).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class SeededMLP(nn.Module):
    """``S`` independent MLPs with ReLU: ``(S, B, in_dim) -> (S, B, out_dim)``.

    Each layer is initialised like ``torch.nn.Linear`` (uniform in ``+-1/sqrt(fan_in)``),
    seed ``s`` drawing weight then bias of each layer in turn from its own generator.

    Args:
        seeds: One seed per model; ``S = len(seeds)``.
        in_dim: Input width.
        hidden_sizes: Widths of the hidden layers (may be empty: a linear map).
        out_dim: Output width.
        stream: Name of the seeding stream, distinct per network of a learner.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        in_dim: int,
        hidden_sizes: Sequence[int],
        out_dim: int,
        stream: str,
    ) -> None:
        super().__init__()
        if len(seeds) == 0:
            raise ValueError("need at least one seed")
        widths = [in_dim, *hidden_sizes, out_dim]
        if min(widths) < 1:
            raise ValueError(f"layer widths must be >= 1, got {widths}")
        # EnsembleLinear draws from torch's global generator; keep that untouched and
        # overwrite its draws with each seed's own below.
        with torch.random.fork_rng(devices=[]):
            self.layers = nn.ModuleList(
                EnsembleLinear(len(seeds), a, b)
                for a, b in zip(widths[:-1], widths[1:], strict=True)
            )
        with torch.no_grad():
            for s, seed in enumerate(seeds):
                gen = make_torch_generator(int(seed), stream)
                for layer in self.layers:
                    bound = 1.0 / math.sqrt(layer.weight.shape[1])
                    layer.weight[s].uniform_(-bound, bound, generator=gen)
                    layer.bias[s].uniform_(-bound, bound, generator=gen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(S, B, in_dim) -> (S, B, out_dim)``."""
        for layer in self.layers[:-1]:
            x = torch.relu(layer(x))
        return self.layers[-1](x)


def _policy_input(inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``obs`` with ``condition`` appended when given: ``(S, B, O [+ C])``."""
    if "condition" in inputs:
        return torch.cat([inputs["obs"], inputs["condition"]], dim=-1)
    return inputs["obs"]


class GaussianPolicy(nn.Module):
    """``S`` diagonal Gaussian policies on the raw action, a :class:`SequencePolicy`.

    The mean is an MLP of the (standardised) observation; the log standard deviation is
    one learned vector per seed (CORL's IQL, initialised to 0) or, with
    ``state_dependent_std``, a second head of the MLP. It is clamped to
    ``[LOG_STD_MIN, LOG_STD_MAX]``. The mean is not squashed: :meth:`act` clips it to
    the action bounds instead.

    Args:
        seeds: One seed per policy.
        obs_dim: ``O``.
        action_low: ``(A,)`` lower action bounds.
        action_high: ``(A,)`` upper action bounds.
        hidden_sizes: Hidden widths of the MLP.
        state_dependent_std: Predict the log std from the observation.
        condition_dim: Width of an extra ``"condition"`` input (0: none).
        stream: Seeding stream of the parameters.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        obs_dim: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        hidden_sizes: Sequence[int],
        *,
        state_dependent_std: bool = False,
        condition_dim: int = 0,
        stream: str = "offline_policy_init",
    ) -> None:
        super().__init__()
        low = torch.as_tensor(np.asarray(action_low, dtype=np.float32))
        high = torch.as_tensor(np.asarray(action_high, dtype=np.float32))
        if low.ndim != 1 or low.shape != high.shape or not bool((low < high).all()):
            raise ValueError("action bounds must be (A,) arrays with low < high everywhere")
        self.act_dim = len(low)
        self.condition_dim = condition_dim
        self.state_dependent_std = state_dependent_std
        out = 2 * self.act_dim if state_dependent_std else self.act_dim
        self.net = SeededMLP(seeds, obs_dim + condition_dim, hidden_sizes, out, stream)
        if not state_dependent_std:
            self.log_std = nn.Parameter(torch.zeros(len(seeds), 1, self.act_dim))
        self.register_buffer("action_low", low)
        self.register_buffer("action_high", high)

    def distribution(self, inputs: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and clamped log std, ``(S, B, A)`` each."""
        out = self.net(_policy_input(inputs))
        if self.state_dependent_std:
            mean, log_std = out.split(self.act_dim, dim=-1)
        else:
            mean, log_std = out, self.log_std.expand_as(out)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def log_prob(self, inputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``(S, B)`` log-density of the actions ``targets`` ``(S, B, A)``, summed over ``A``."""
        mean, log_std = self.distribution(inputs)
        z = (targets - mean) * torch.exp(-log_std)
        return (-0.5 * z.square() - log_std - _LOG_SQRT_2PI).sum(dim=-1)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """Deterministic actions ``(S, n, A)``: the mean clipped to the action bounds.

        Args:
            obs: ``(S, n, O)`` standardised observations.
            condition: ``(S, n, C)`` extra input of a conditioned policy.
        """
        inputs = {"obs": obs} if condition is None else {"obs": obs, "condition": condition}
        mean, _ = self.distribution(inputs)
        return torch.clamp(mean, self.action_low, self.action_high)


class ValueNet(nn.Module):
    """``S`` state-value functions: ``(S, B, O) -> (S, B)``.

    Args:
        seeds: One seed per network.
        obs_dim: ``O``.
        hidden_sizes: Hidden widths.
        stream: Seeding stream.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        obs_dim: int,
        hidden_sizes: Sequence[int],
        stream: str = "offline_value_init",
    ) -> None:
        super().__init__()
        self.net = SeededMLP(seeds, obs_dim, hidden_sizes, 1, stream)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(S, B, O) -> (S, B)``."""
        return self.net(obs).squeeze(-1)


class QNet(nn.Module):
    """``S`` action-value functions of ``(obs, action)``: ``-> (S, B)``.

    Args:
        seeds: One seed per network.
        obs_dim: ``O``.
        act_dim: ``A``.
        hidden_sizes: Hidden widths.
        stream: Seeding stream.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        stream: str = "offline_q_init",
    ) -> None:
        super().__init__()
        self.net = SeededMLP(seeds, obs_dim + act_dim, hidden_sizes, 1, stream)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``(S, B, O), (S, B, A) -> (S, B)``."""
        return self.net(torch.cat([obs, act], dim=-1)).squeeze(-1)


class TwinQ(nn.Module):
    """Two independently initialised :class:`QNet` per seed (clipped double Q).

    Args:
        seeds: One seed per pair.
        obs_dim: ``O``.
        act_dim: ``A``.
        hidden_sizes: Hidden widths.
        stream: Prefix of the two networks' seeding streams.
    """

    def __init__(
        self,
        seeds: Sequence[int],
        obs_dim: int,
        act_dim: int,
        hidden_sizes: Sequence[int],
        stream: str = "offline_q",
    ) -> None:
        super().__init__()
        self.q1 = QNet(seeds, obs_dim, act_dim, hidden_sizes, f"{stream}1_init")
        self.q2 = QNet(seeds, obs_dim, act_dim, hidden_sizes, f"{stream}2_init")

    def both(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both estimates, ``(S, B)`` each."""
        return self.q1(obs, act), self.q2(obs, act)

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``(S, B)`` the smaller of the two estimates."""
        return torch.minimum(*self.both(obs, act))
