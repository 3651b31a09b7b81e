"""Observation encoders for the batched reward ensemble.

An encoder maps a batch of observations for every ensemble member at once:
``(K, M, *obs_shape) -> (K, M, out_dim)``, ``K`` members, ``M`` observations each (each
member may see different observations: its own bootstrap resample). Members must not
share parameters. Vector observations use :class:`FlattenEncoder` (the MLP trunk of the
reward network does the work); pixel observations (Atari) and token sequences (language
tasks) plug in here as further entries of :data:`ENCODERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from prefbench.envs.registry import Registry


class EnsembleLinear(nn.Module):
    """``K`` independent affine maps applied in one batched matrix multiply.

    Input ``(K, M, in_features)``, output ``(K, M, out_features)``. Each member is
    initialised like ``torch.nn.Linear``.
    """

    def __init__(self, n_members: int, in_features: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_members, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(n_members, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        # kaiming_uniform(a=sqrt(5)) of nn.Linear reduces to this bound for weights too.
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every member's map to its own slice ``x[k]``."""
        return torch.baddbmm(self.bias, x, self.weight)


class FlattenEncoder(nn.Module):
    """Flattens vector (or small array) observations: ``(K, M, *O) -> (K, M, prod(O))``."""

    def __init__(self, n_members: int, obs_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.n_members = n_members
        self.out_dim = int(math.prod(obs_shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Flatten all observation axes."""
        return obs.reshape(*obs.shape[:2], self.out_dim).float()


#: Builds an encoder from ``(n_members, obs_shape)``.
EncoderFactory = Callable[[int, tuple[int, ...]], nn.Module]

ENCODERS: Registry[EncoderFactory] = Registry("encoder")
ENCODERS.register("flatten", FlattenEncoder)
