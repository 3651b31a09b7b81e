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
import torch.nn.functional as F
from torch import nn

from prefbench.agents.tensor_cache import TensorCache
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


#: Builds an encoder from ``(n_members, obs_shape, **encoder_kwargs)``.
EncoderFactory = Callable[..., nn.Module]

ENCODERS: Registry[EncoderFactory] = Registry("encoder")
ENCODERS.register("flatten", FlattenEncoder)


class SeededDropout(nn.Module):
    """Inverted dropout whose masks come from an explicit generator.

    The owner sets :attr:`generator` (``None`` falls back to torch's global one) so that
    training is reproducible without global seeding, and saves its state with the model.
    Masks are uniform draws compared with ``p`` in place, which on the CPU runs forward
    and backward about 1.6x faster than ``nn.Dropout`` (``bernoulli_``) and keeps the
    input's memory format.

    Args:
        p: Probability of zeroing an element.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout p must be in [0, 1), got {p}")
        self.p = p
        self.generator: torch.Generator | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Zero each element with probability ``p`` and scale the rest by ``1 / (1 - p)``."""
        if not self.training or self.p == 0:
            return x
        # In place: uniform draws -> 0/1 keep mask -> scale; x * mask backpropagates cheaply.
        mask = torch.empty_like(x).uniform_(generator=self.generator)
        return x * mask.ge_(self.p).mul_(1 / (1 - self.p))


class EnsembleConvEncoder(nn.Module):
    """The paper's Atari reward-model encoder for ``K`` members in one grouped convolution.

    Christiano et al. 2017 (appendix A.2): four convolutions of 7x7, 5x5, 3x3 and 3x3 with
    strides 3, 2, 1, 1 and 16 filters each, batch norm, dropout 0.5 and leaky ReLU (0.01)
    after each. Input ``(K, M, C, 84, 84)`` uint8 (or float in [0, 255]) stacked frames;
    output ``(K, M, 16 * 7 * 7)``. Members live in separate channel groups
    (``groups=K``), so member ``k`` only ever sees ``obs[k]`` and its own weights, and
    batch-norm statistics are per member.

    Args:
        n_members: ``K``.
        obs_shape: ``(C, H, W)``.
        channels: Filters per layer.
        dropout: Dropout probability after each layer.
        slope: Leaky ReLU negative slope.
    """

    KERNELS = ((7, 3), (5, 2), (3, 1), (3, 1))

    def __init__(
        self,
        n_members: int,
        obs_shape: tuple[int, ...],
        channels: int = 16,
        dropout: float = 0.5,
        slope: float = 0.01,
    ) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"the conv encoder needs (C, H, W) observations, got {obs_shape}")
        self.n_members = n_members
        c, h, w = obs_shape
        layers: list[nn.Module] = []
        width = c
        for kernel, stride in self.KERNELS:
            layers += [
                nn.Conv2d(
                    n_members * width, n_members * channels, kernel, stride, groups=n_members
                ),
                nn.BatchNorm2d(n_members * channels),
                nn.LeakyReLU(slope),
                SeededDropout(dropout),
            ]
            width = channels
            h, w = (h - kernel) // stride + 1, (w - kernel) // stride + 1
        if h < 1 or w < 1:
            raise ValueError(
                f"observations of shape {obs_shape} are too small for the conv encoder"
            )
        # Channels-last lets the CPU (oneDNN) and cuDNN kernels skip layout conversions.
        self.net = nn.Sequential(*layers).to(memory_format=torch.channels_last)
        self.channels = channels
        self.out_dim = channels * h * w
        # Folded (weight, bias) per block, kept while their source tensors are unchanged.
        self._folded: TensorCache[list[tuple[torch.Tensor, torch.Tensor]]] = TensorCache()

    def _apply(
        self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True
    ) -> EnsembleConvEncoder:
        # .to(), .cuda(), .half() give the parameters new storage with fresh version
        # counters, which the allocator may place at a freed address: drop the cache.
        self._folded.clear()
        return super()._apply(fn, recurse)

    def _blocks(self) -> list[nn.Sequential]:
        """The four (conv, batch norm, leaky ReLU, dropout) blocks of ``net``."""
        return [self.net[i : i + 4] for i in range(0, len(self.net), 4)]

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``(K, M, C, H, W)`` -> ``(K, M, out_dim)``.

        In eval mode each batch norm is folded into the convolution before it (dropout is
        the identity there), and when every member sees the same observations (``obs``
        expanded along the member axis, stride 0: scoring states for the agent, ranking
        query candidates) the first convolution runs once on them with all members'
        filters instead of on ``K`` copies. The outputs match the layer-by-layer path up
        to float rounding; scoring 16 states takes about 1/1.2 of the time on the CPU.
        """
        k, m = obs.shape[:2]
        shared = not self.training and k > 1 and obs.stride(0) == 0
        if shared:
            x = obs[0]  # (M, C, H, W): one copy for all members
        else:
            # (K, M, C, H, W) -> (M, K*C, H, W): member k's frames in channel group k.
            x = obs.transpose(0, 1).reshape(m, -1, *obs.shape[3:])
        # Rearrange while still uint8 (a quarter of the bytes), then scale in place.
        x = x.contiguous(memory_format=torch.channels_last).float().mul_(1 / 255)
        y = self.net(x) if self.training else self._folded_forward(x, shared)
        return y.reshape(m, k, -1).transpose(0, 1)  # y: (M, K*channels, h, w)

    def _folded_params(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Each block's convolution weight and bias with its batch norm folded in.

        Cached between calls without autograd (:class:`TensorCache`): scoring the agent's
        reward calls this for every batch of steps, and on a GPU the ~30 small kernels of
        folding cost more than the arithmetic.
        """
        blocks = self._blocks()
        sources = [
            t
            for conv, bn, _act, _dropout in blocks
            for t in (conv.weight, conv.bias, bn.weight, bn.bias, bn.running_mean, bn.running_var)
        ]

        def fold() -> list[tuple[torch.Tensor, torch.Tensor]]:
            folded = []
            for conv, bn, _act, _dropout in blocks:
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                weight = (conv.weight * scale[:, None, None, None]).contiguous(
                    memory_format=torch.channels_last
                )
                folded.append((weight, (conv.bias - bn.running_mean) * scale + bn.bias))
            return folded

        return fold() if torch.is_grad_enabled() else self._folded.get(sources, fold)

    def _folded_forward(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        """Eval-mode layers with batch norm folded into the convolutions."""
        for i, ((conv, _bn, act, _dropout), (weight, bias)) in enumerate(
            zip(self._blocks(), self._folded_params(), strict=True)
        ):
            groups = 1 if (i == 0 and shared) else conv.groups
            x = F.leaky_relu_(
                F.conv2d(x, weight, bias, conv.stride, groups=groups), act.negative_slope
            )
        return x


ENCODERS.register("cnn", EnsembleConvEncoder)
ENCODERS.register("tokens", "prefbench.agents.text_encoder:TokenEncoder")
