"""What every offline learner shares: data on the device, seeds, minibatches, checkpoints.

A learner trains ``S`` seeds at once (:mod:`prefbench.agents.offline.mlp`): one
:meth:`OfflineLearner.update` is one gradient step of every seed, each on its own
minibatch drawn from its own generator, with the seeds' losses summed before
``backward`` so that no seed's gradient depends on another. Running seeds ``(a, b, c)``
together gives the models of three runs with ``(a,)``, ``(b,)`` and ``(c,)``.

Observations are standardised once with the dataset's per-dimension mean and standard
deviation (plus ``obs_std_eps``, CORL's 1e-3); the statistics are saved with the learner
and :meth:`OfflineLearner.act` applies them, so callers pass raw observations.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from prefbench.agents.device import resolve_device
from prefbench.agents.offline.mlp import GaussianPolicy
from prefbench.envs.episodes import Episodes
from prefbench.envs.seeding import make_torch_generator


@dataclass(frozen=True)
class LearnerConfig:
    """Settings common to the offline learners (defaults: CORL's IQL and BC).

    Subclasses add their own fields and extend :meth:`problems`.

    Attributes:
        hidden_sizes: Hidden widths of every network.
        lr: Adam learning rate of every network.
        batch_size: Steps per seed per minibatch.
        state_dependent_std: The policy predicts its log std from the observation
            (default: one learned vector per seed).
        obs_std_eps: Added to the dataset's observation standard deviation.
    """

    hidden_sizes: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    batch_size: int = 256
    state_dependent_std: bool = False
    obs_std_eps: float = 1e-3

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"{type(self).__qualname__}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """Descriptions of the invalid settings (empty when all are valid)."""
        problems = []
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            problems.append(f"hidden_sizes must be non-empty and positive, got {self.hidden_sizes}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.obs_std_eps >= 0:
            problems.append(f"obs_std_eps must be >= 0, got {self.obs_std_eps}")
        return problems


class OfflineLearner(ABC):
    """Base of the offline learners: subclasses implement :meth:`_update`.

    Args:
        data: The episodes to learn from, with ``(N, O)`` observations and ``(N, A)``
            actions (flat vectors).
        action_low: ``(A,)`` lower action bounds.
        action_high: ``(A,)`` upper action bounds.
        config: The subclass's ``Config``.
        seeds: One seed per model trained; ``S = len(seeds)``.
        device: Torch device of the networks and the data.

    Attributes:
        policy: The ``S`` policies, a :class:`SequencePolicy` on standardised observations.
        updates: Gradient steps taken so far.
        info: Settings the learner resolved from the data, for the run's record.
        obs_mean: ``(O,)`` float32 mean of the dataset's observations.
        obs_std: ``(O,)`` float32 their standard deviation plus ``obs_std_eps``.
    """

    #: The config class the learner accepts.
    config_type: ClassVar[type[LearnerConfig]] = LearnerConfig

    def __init__(
        self,
        data: Episodes,
        action_low: np.ndarray,
        action_high: np.ndarray,
        config: LearnerConfig,
        seeds: Sequence[int],
        device: str = "cpu",
    ) -> None:
        if not isinstance(config, self.config_type):
            raise TypeError(f"{type(self).__name__} needs a {self.config_type.__qualname__}")
        if len(seeds) == 0 or len(set(seeds)) != len(seeds):
            raise ValueError(f"need at least one seed and no repeats, got {list(seeds)}")
        if data.obs.ndim != 2 or data.acts.ndim != 2:
            raise ValueError(
                f"offline learners need (N, O) observations and (N, A) actions, "
                f"got {data.obs.shape} and {data.acts.shape}"
            )
        low = np.asarray(action_low, dtype=np.float32)
        high = np.asarray(action_high, dtype=np.float32)
        if low.shape != (data.acts.shape[1],) or high.shape != low.shape:
            raise ValueError(f"action bounds must be ({data.acts.shape[1]},) arrays")
        self.data = data
        self.config = config
        self.seeds = tuple(int(s) for s in seeds)
        self.device = resolve_device(device)
        self.updates = 0
        self.info: dict[str, Any] = {}
        obs = data.obs.astype(np.float64)
        self.obs_mean = obs.mean(axis=0).astype(np.float32)
        self.obs_std = (obs.std(axis=0) + config.obs_std_eps).astype(np.float32)
        if not bool((self.obs_std > 0).all()):
            raise ValueError("an observation dimension is constant: set obs_std_eps > 0")
        self._nets: dict[str, nn.Module] = {}
        self._optimizers: dict[str, torch.optim.Optimizer] = {}
        self.policy = GaussianPolicy(
            self.seeds,
            data.obs.shape[1],
            low,
            high,
            config.hidden_sizes,
            state_dependent_std=config.state_dependent_std,
        )
        self._add("policy", self.policy, config.lr)
        self._batch_gens = [
            make_torch_generator(seed, "offline_batches", self.device) for seed in self.seeds
        ]
        self._put_data()

    # -------------------------------------------------------------- the subclass API
    @abstractmethod
    def _update(self) -> dict[str, float]:
        """One gradient step of every seed; returns :meth:`_metrics` of its losses.

        Compute every loss from the current parameters, call :meth:`_metrics` (which
        raises on a non-finite value), then :meth:`_step` each optimiser.
        """

    def _put_data(self) -> None:
        """Put the training arrays on the device, once (and again on :meth:`load_state_dict`).

        Subclasses extend it with what they derive from the data (weights, kept steps).
        """
        self.obs = self._standardize(self.data.obs)
        self.acts = self._tensor(self.data.acts)

    def _add(self, name: str, module: nn.Module, lr: float | None = None) -> None:
        """Register a network (moved to the device) and, with ``lr``, its Adam optimiser."""
        module.to(self.device)
        self._nets[name] = module
        if lr is not None:
            self._optimizers[name] = torch.optim.Adam(module.parameters(), lr=lr, foreach=True)

    # -------------------------------------------------------------------- helpers
    @property
    def n_seeds(self) -> int:
        """``S``."""
        return len(self.seeds)

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        """A float32 copy of ``array`` on the device."""
        return torch.as_tensor(np.asarray(array, dtype=np.float32), device=self.device)

    def _standardize(self, obs: np.ndarray) -> torch.Tensor:
        """``(..., O)`` raw observations -> standardised float32 tensor on the device."""
        return self._tensor((np.asarray(obs, dtype=np.float32) - self.obs_mean) / self.obs_std)

    def sample(self, pool: torch.Tensor | None = None) -> torch.Tensor:
        """``(S, batch_size)`` step indices, drawn uniformly with replacement per seed.

        Args:
            pool: ``(K,)`` int64 step indices to draw from on the device (default: all).
        """
        n = len(self.obs) if pool is None else len(pool)
        shape = (self.config.batch_size,)
        idx = torch.stack(
            [torch.randint(n, shape, generator=g, device=self.device) for g in self._batch_gens]
        )
        return idx if pool is None else pool[idx]

    def _metrics(self, values: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Seed-averaged scalars of ``(S, ...)`` tensors, checked finite (one device sync).

        Raises:
            FloatingPointError: If any value is NaN or infinite; call before stepping.
        """
        per_seed = torch.stack(
            [v.detach().float().reshape(self.n_seeds, -1).mean(-1) for v in values.values()]
        )
        host = per_seed.cpu().numpy()
        bad = [name for name, row in zip(values, host, strict=True) if not np.isfinite(row).all()]
        if bad:
            raise FloatingPointError(
                f"{type(self).__name__}: loss is not finite at update {self.updates}: {bad}"
            )
        return {name: float(row.mean()) for name, row in zip(values, host, strict=True)}

    def _step(self, name: str, loss: torch.Tensor) -> None:
        """Backpropagate the ``(S,)`` losses summed (each seed gets its own gradient) and step."""
        optimizer = self._optimizers[name]
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()

    # ------------------------------------------------------------------ public API
    def update(self) -> dict[str, float]:
        """One gradient step of all ``S`` seeds; scalar metrics averaged over seeds.

        Raises:
            FloatingPointError: On a NaN or infinite loss (no parameter is changed then).
        """
        metrics = self._update()
        self.updates += 1
        return metrics

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions ``(S, n, A)`` of each seed's policy for raw ``(S, n, O)`` obs."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim != 3 or obs.shape[0] != self.n_seeds or obs.shape[2] != len(self.obs_mean):
            raise ValueError(
                f"obs must be ({self.n_seeds}, n, {len(self.obs_mean)}), got {obs.shape}"
            )
        return self.policy.act(self._standardize(obs)).cpu().numpy()

    def state_dict(self) -> dict[str, Any]:
        """A copy of everything needed to resume: networks, optimisers, generators, stats.

        Generator states are those of the device's generators: resume on the same kind of
        device.
        """
        return {
            "learner": type(self).__name__,
            "seeds": list(self.seeds),
            "updates": self.updates,
            # Tensors, not arrays: the file loads with torch.load(weights_only=True).
            "obs_mean": torch.from_numpy(self.obs_mean.copy()),
            "obs_std": torch.from_numpy(self.obs_std.copy()),
            "nets": {k: copy.deepcopy(m.state_dict()) for k, m in self._nets.items()},
            "optimizers": {k: copy.deepcopy(o.state_dict()) for k, o in self._optimizers.items()},
            "batch_generators": [g.get_state() for g in self._batch_gens],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from :meth:`state_dict` of a learner of the same class and seeds.

        Raises:
            ValueError: For another learner class or other seeds.
        """
        if state["learner"] != type(self).__name__:
            raise ValueError(f"a {state['learner']} state cannot load into {type(self).__name__}")
        if tuple(state["seeds"]) != self.seeds:
            raise ValueError(f"state has seeds {tuple(state['seeds'])}, learner has {self.seeds}")
        self.obs_mean = np.array(torch.as_tensor(state["obs_mean"]).numpy(), dtype=np.float32)
        self.obs_std = np.array(torch.as_tensor(state["obs_std"]).numpy(), dtype=np.float32)
        self._put_data()
        for name, module in self._nets.items():
            module.load_state_dict(state["nets"][name])
        for name, optimizer in self._optimizers.items():
            optimizer.load_state_dict(state["optimizers"][name])
        for gen, gen_state in zip(self._batch_gens, state["batch_generators"], strict=True):
            gen.set_state(gen_state)
        self.updates = int(state["updates"])
