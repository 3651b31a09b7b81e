"""Decision Transformer (Chen et al. 2021, arXiv 2106.01345): offline RL as conditioned imitation.

A causal transformer reads the last ``K`` steps as tokens ``(R_1, s_1, a_1, ..., R_K, s_K,
a_K)``, ``R_t`` the return-to-go (the rewards from step ``t`` to the episode's end), and
predicts ``a_t`` from the token ``s_t``, which sees ``R_t`` but not ``a_t``. Acting starts
from a target return and subtracts each reward received: asking for a high return asks
for the actions that led to high returns in the data. Defaults are the paper's MuJoCo
settings (appendix A, the authors' ``gym/experiment.py``): ``K = 20``, width 128, 3
layers, 1 head, dropout 0.1, ReLU in the blocks' MLPs (their ``activation_function``);
AdamW (lr 1e-4, weight decay 1e-4 on every parameter, as theirs), linear warm-up over
10,000 updates, gradient norm clipped at 0.25, batch 64.
As in their code: no position embeddings but a learned embedding of the step's timestep
in its episode added to its three tokens (timesteps past ``max_timestep`` share the last
row), LayerNorm on the embedded sequence, observations standardised by the dataset's
mean and standard deviation (+1e-6), undiscounted returns-to-go divided by
``rtg_scale`` (theirs: 1000 on Hopper, HalfCheetah, Walker), a tanh action head and the
mean squared error of the actions over the real (not padded) steps. Actions are mapped
to [-1, 1] by the action bounds passed in (the env's action space, which the dataset's
actions lie in; any outside are clipped) and back when acting; MuJoCo's are [-1, 1].

Windows differ from the authors' code in one respect: they draw a window's *first* step
uniformly over all steps and left-pad windows that the episode's end cuts short; here
the *last* step is uniform over all steps (so episodes are weighted by length too) and
windows reaching back past the episode's start are left-padded: the history the policy
holds early in an episode.

Seeds: ``S`` models in a ``ModuleList``, each with its own optimiser, warm-up, minibatch
and dropout generators, trained in a loop, so seeds ``[a, b]`` are exactly a learner of
``[a]`` next to one of ``[b]``; the loop costs ``S`` times the kernel launches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from prefbench.agents.device import resolve_device
from prefbench.agents.offline.dt_policy import DTPolicy
from prefbench.agents.offline.objectives import warmup_scheduler
from prefbench.agents.offline.transformer import (
    ACTIVATIONS,
    CausalTransformer,
    set_dropout_generator,
)
from prefbench.envs.episodes import Episodes
from prefbench.envs.seeding import make_torch_generator, stream_seed


@dataclass(frozen=True)
class Config:
    """Decision Transformer hyperparameters (defaults: the paper's MuJoCo settings).

    Attributes:
        context_length: ``K`` steps per window (``3K`` tokens).
        n_embd: Token width.
        n_layer: Transformer blocks.
        n_head: Attention heads.
        dropout: Dropout everywhere in the transformer.
        activation: The blocks' MLP activation: ``"relu"`` (the authors' default) or
            ``"gelu_new"`` (GPT-2's).
        lr: AdamW learning rate after warm-up.
        weight_decay: AdamW weight decay.
        warmup_steps: Update ``i`` uses ``lr * min((i + 1) / warmup_steps, 1)``; 0: none.
        grad_clip: Largest gradient norm per model; None: no clipping.
        batch_size: Windows per update per seed.
        max_timestep: Rows of the timestep embedding; later timesteps use the last.
        rtg_scale: Returns-to-go are divided by this: a float > 0, or ``"dataset"``: the
            largest absolute episode return of the dataset (its maximum when returns are
            positive).
        target_return: The unscaled return the policy asks for: a float, ``"dataset_max"``
            (the highest episode return in the dataset under its rewards) or
            ``"quantile:q"`` (that quantile, ``0 <= q <= 1``, of its episode returns).
    """

    context_length: int = 20
    n_embd: int = 128
    n_layer: int = 3
    n_head: int = 1
    dropout: float = 0.1
    activation: str = "relu"
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup_steps: int = 10_000
    grad_clip: float | None = 0.25
    batch_size: int = 64
    max_timestep: int = 1000
    rtg_scale: float | str = 1000.0
    target_return: float | str = "dataset_max"

    def __post_init__(self) -> None:
        ints = ("context_length", "n_embd", "n_layer", "n_head", "batch_size", "max_timestep")
        problems = [
            f"{k} must be >= 1, got {getattr(self, k)}" for k in ints if getattr(self, k) < 1
        ]
        if self.n_head >= 1 and self.n_embd % self.n_head:
            problems.append(f"n_embd ({self.n_embd}) must be a multiple of n_head ({self.n_head})")
        if self.activation not in ACTIVATIONS:
            problems.append(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {self.activation!r}"
            )
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.warmup_steps >= 0):
            problems.append("need lr > 0, weight_decay >= 0 and warmup_steps >= 0")
        if self.grad_clip is not None and not self.grad_clip > 0:
            problems.append(f"grad_clip must be > 0 or None, got {self.grad_clip}")
        if self.rtg_scale != "dataset" and (
            isinstance(self.rtg_scale, str) or not (0 < self.rtg_scale < math.inf)
        ):
            problems.append(
                f'rtg_scale must be a finite float > 0 or "dataset", got {self.rtg_scale!r}'
            )
        if _quantile(self.target_return) is None and (
            isinstance(self.target_return, str) or not math.isfinite(self.target_return)
        ):
            problems.append(
                'target_return must be a finite float, "dataset_max" or "quantile:q" with q in'
                f" [0, 1], got {self.target_return!r}"
            )
        if problems:
            raise ValueError("; ".join(problems))


def _quantile(option: float | str) -> float | None:
    """The quantile a ``target_return`` string asks for, or None if it is not one."""
    if option == "dataset_max":
        return 1.0
    if isinstance(option, str) and option.startswith("quantile:"):
        try:
            q = float(option.removeprefix("quantile:"))
        except ValueError:
            return None
        return q if 0 <= q <= 1 else None
    return None


def resolve_returns(config: Config, returns: np.ndarray) -> tuple[float, float]:
    """``(rtg_scale, target_return)`` of ``config`` for a dataset's ``(E,)`` episode returns.

    Raises:
        ValueError: ``rtg_scale="dataset"`` on a dataset whose returns are all zero.
    """
    returns = np.asarray(returns, dtype=np.float64)
    scale = float(np.abs(returns).max()) if config.rtg_scale == "dataset" else config.rtg_scale
    if not scale > 0:
        raise ValueError('rtg_scale="dataset" needs a dataset with a non-zero episode return')
    q = _quantile(config.target_return)
    target = float(config.target_return) if q is None else float(np.quantile(returns, q))
    return float(scale), target


class DTModel(nn.Module):
    """One Decision Transformer: returns-to-go, states and actions in, actions out.

    Args:
        obs_dim: ``O``, standardised observation length.
        act_dim: ``A``, action length (actions in [-1, 1]).
        config: Hyperparameters.
    """

    def __init__(self, obs_dim: int, act_dim: int, config: Config) -> None:
        super().__init__()
        h = config.n_embd
        self.max_timestep = config.max_timestep
        self.embed_timestep = nn.Embedding(config.max_timestep, h)
        self.embed_return = nn.Linear(1, h)
        self.embed_state = nn.Linear(obs_dim, h)
        self.embed_action = nn.Linear(act_dim, h)
        self.embed_ln = nn.LayerNorm(h)
        self.transformer = CausalTransformer(
            config.n_layer,
            config.n_head,
            h,
            config.dropout,
            3 * config.context_length,
            config.activation,
        )
        self.predict_action = nn.Linear(h, act_dim)

    def forward(
        self,
        rtg: torch.Tensor,
        states: torch.Tensor,
        actions: torch.Tensor,
        timesteps: torch.Tensor,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        """Predicted actions at every step of ``B`` windows of ``L <= K`` steps.

        Args:
            rtg: ``(B, L)`` scaled returns-to-go.
            states: ``(B, L, O)`` standardised observations.
            actions: ``(B, L, A)`` actions in [-1, 1] (step ``t``'s prediction cannot see
                ``a_t``: acting passes zeros there).
            timesteps: ``(B, L)`` int64 steps within the episode.
            mask: ``(B, L)`` bool, False on left padding.

        Returns:
            ``(B, L, A)`` actions in (-1, 1), row ``t`` from the token of ``s_t``.
        """
        b, n = mask.shape
        time = self.embed_timestep(timesteps.clamp(0, self.max_timestep - 1))
        tokens = torch.stack(
            (
                self.embed_return(rtg[..., None]) + time,
                self.embed_state(states) + time,
                self.embed_action(actions) + time,
            ),
            dim=2,
        ).reshape(b, 3 * n, -1)
        hidden = self.transformer(self.embed_ln(tokens), mask.repeat_interleave(3, dim=1))
        return torch.tanh(self.predict_action(hidden.reshape(b, n, 3, -1)[:, :, 1]))


class Batch(NamedTuple):
    """``B`` windows of ``K`` steps, left-padded with zeros: the :class:`DTModel` inputs.

    ``rtg`` ``(B, K)``, ``states`` ``(B, K, O)``, ``actions`` ``(B, K, A)``, ``timesteps``
    ``(B, K)`` int64, ``mask`` ``(B, K)`` bool (True on real steps) and ``steps``
    ``(B, K)`` int64: the dataset step of each position, -1 on padding.
    """

    rtg: torch.Tensor
    states: torch.Tensor
    actions: torch.Tensor
    timesteps: torch.Tensor
    mask: torch.Tensor
    steps: torch.Tensor


def window_steps(
    ends: torch.Tensor, episode_start: torch.Tensor, context: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``context`` steps up to each of the ``(B,)`` ``ends``, cut at its episode's start.

    ``episode_start`` is ``(N,)``: the first step of each step's episode. Returns
    ``(B, K)`` step indices (-1 on padding) and the ``(B, K)`` bool mask of real steps.
    """
    steps = ends[:, None] - torch.arange(context - 1, -1, -1, device=ends.device)
    mask = steps >= episode_start[ends][:, None]
    return torch.where(mask, steps, -1), mask


class DecisionTransformer:
    """Decision Transformer learners for ``S`` seeds on one dataset.

    Args:
        data: The episodes; their :attr:`Episodes.rewards` define the returns-to-go.
        action_low: ``(A...)`` lower action bounds (env units).
        action_high: ``(A...)`` upper action bounds, each above its lower one.
        config: Hyperparameters.
        seeds: ``S >= 1`` seeds; seed ``s`` fixes model ``s``'s initial weights (stream
            ``"dt_init"``), minibatches (``"dt"``) and dropout masks (``"dt_dropout"``).
        device: Torch device of the models and data (``"auto"``: CUDA if available).

    Attributes:
        target_return: The resolved target return, unscaled (log it).
        rtg_scale: The resolved divisor of returns-to-go.
        info: Both, and the options they came from, for the run's record.
        updates: Updates done.
    """

    def __init__(
        self,
        data: Episodes,
        action_low: np.ndarray,
        action_high: np.ndarray,
        config: Config,
        seeds: Sequence[int],
        device: str = "cpu",
    ) -> None:
        self.config = config
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("give at least one seed")
        self.device = dev = resolve_device(device)
        n = len(data)
        self.obs_shape, self.act_shape = tuple(data.obs.shape[1:]), tuple(data.acts.shape[1:])
        obs = data.obs.reshape(n, -1).astype(np.float64)
        acts = data.acts.reshape(n, -1).astype(np.float64)
        low = np.asarray(action_low, dtype=np.float64).reshape(-1)
        high = np.asarray(action_high, dtype=np.float64).reshape(-1)
        if low.shape != (acts.shape[1],) or high.shape != low.shape:
            raise ValueError(
                f"action bounds need {acts.shape[1]} entries, got {low.size}, {high.size}"
            )
        if not (np.isfinite(low).all() and np.isfinite(high).all() and (high > low).all()):
            raise ValueError("action bounds must be finite with action_high > action_low")
        self.action_low, self.action_high = low, high
        self.obs_mean, self.obs_std = obs.mean(axis=0), obs.std(axis=0) + 1e-6
        returns = data.returns()
        self.rtg_scale, self.target_return = resolve_returns(config, returns)
        self.info: dict[str, float | str] = {
            "rtg_scale": self.rtg_scale,
            "rtg_scale_from": str(config.rtg_scale),
            "target_return": self.target_return,
            "target_return_from": str(config.target_return),
            "dataset_return_max": float(returns.max()),
        }

        # The dataset goes to the device once; every minibatch is a gather from it.
        def put(x: np.ndarray, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.as_tensor(x, dtype=dtype, device=dev)

        self._obs = put((obs - self.obs_mean) / self.obs_std)
        self._acts = put(np.clip(2 * (acts - low) / (high - low) - 1, -1, 1))
        self._rtg = put(data.returns_to_go() / self.rtg_scale)
        self._timesteps = put(data.timesteps, torch.int64)
        self._episode_start = put(np.repeat(data.starts[:-1], data.lengths), torch.int64)

        models = []
        for seed in self.seeds:
            # Only the CPU generator draws the weights; it is restored afterwards.
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(stream_seed(seed, "dt_init"))
                models.append(DTModel(obs.shape[1], acts.shape[1], config))
        self.models = nn.ModuleList(models).to(dev)
        self.batch_generators = [make_torch_generator(s, "dt", dev) for s in self.seeds]
        self.dropout_generators = [make_torch_generator(s, "dt_dropout", dev) for s in self.seeds]
        for model, gen in zip(self.models, self.dropout_generators, strict=True):
            set_dropout_generator(model, gen)
        self.optimizers = [
            torch.optim.AdamW(m.parameters(), lr=config.lr, weight_decay=config.weight_decay)
            for m in self.models
        ]
        self.schedulers = [warmup_scheduler(opt, config.warmup_steps) for opt in self.optimizers]
        self.updates = 0

    @property
    def n_seeds(self) -> int:
        """``S``."""
        return len(self.seeds)

    def sample_batch(self, seed_index: int) -> Batch:
        """Seed ``seed_index``'s next minibatch (advances its generator)."""
        ends = torch.randint(
            len(self._obs),
            (self.config.batch_size,),
            generator=self.batch_generators[seed_index],
            device=self.device,
        )
        steps, mask = window_steps(ends, self._episode_start, self.config.context_length)
        idx, keep = steps.clamp(min=0), mask.float()
        return Batch(
            rtg=self._rtg[idx] * keep,
            states=self._obs[idx] * keep[..., None],
            actions=self._acts[idx] * keep[..., None],
            timesteps=self._timesteps[idx] * mask,
            mask=mask,
            steps=steps,
        )

    def update(self) -> dict[str, float]:
        """One gradient step of every seed's model.

        Returns:
            ``loss`` (action MSE) and ``grad_norm`` (before clipping), means over seeds,
            and the ``lr`` of this step.

        Raises:
            FloatingPointError: A seed's loss or gradient is not finite; no model moves.
        """
        self.models.train()
        losses, norms = [], []
        for s, (model, opt) in enumerate(zip(self.models, self.optimizers, strict=True)):
            batch = self.sample_batch(s)
            pred = model(batch.rtg, batch.states, batch.actions, batch.timesteps, batch.mask)
            err = ((pred - batch.actions) ** 2).sum(dim=-1) * batch.mask
            loss = err.sum() / (batch.mask.sum() * pred.shape[-1])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            # An infinite bound scales by exactly 1: the norm is still measured.
            norms.append(
                nn.utils.clip_grad_norm_(model.parameters(), self.config.grad_clip or math.inf)
            )
            losses.append(loss.detach())
        # One host sync per update, before any optimiser step.
        loss_vals, norm_vals = torch.stack([torch.stack(losses), torch.stack(norms)]).tolist()
        if not all(math.isfinite(v) for v in loss_vals + norm_vals):
            for opt in self.optimizers:
                opt.zero_grad(set_to_none=True)
            raise FloatingPointError(
                f"Decision Transformer update {self.updates}: non-finite loss {loss_vals} or"
                f" gradient norm {norm_vals} (seeds {self.seeds})"
            )
        lr = self.optimizers[0].param_groups[0]["lr"]
        for opt, sched in zip(self.optimizers, self.schedulers, strict=True):
            opt.step()
            sched.step()
        self.updates += 1
        return {"loss": float(np.mean(loss_vals)), "grad_norm": float(np.mean(norm_vals)), "lr": lr}

    def policy(self, n_envs: int, target_return: float | None = None) -> DTPolicy:
        """A policy for ``n_envs`` envs per seed asking for ``target_return`` (None: resolved)."""
        target = self.target_return if target_return is None else float(target_return)
        return DTPolicy(self, n_envs, target)

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue identically (live tensors, not copies)."""
        return {
            "seeds": list(self.seeds),
            "updates": self.updates,
            "info": dict(self.info),
            "models": [m.state_dict() for m in self.models],
            "optimizers": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() for s in self.schedulers],
            "batch_generators": [g.get_state() for g in self.batch_generators],
            "dropout_generators": [g.get_state() for g in self.dropout_generators],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output of a learner with the same seeds and dataset.

        Raises:
            ValueError: The seeds or the resolved ``rtg_scale`` differ.
        """
        if list(state["seeds"]) != self.seeds:
            raise ValueError(f"state is for seeds {state['seeds']}, this learner has {self.seeds}")
        # The target return only steers acting; the scale changes what the models learnt.
        if not math.isclose(state["info"]["rtg_scale"], self.rtg_scale, rel_tol=1e-6):
            raise ValueError(
                f"state has rtg_scale {state['info']['rtg_scale']}, this learner"
                f" {self.rtg_scale}: another dataset or config"
            )
        for i in range(self.n_seeds):
            self.models[i].load_state_dict(state["models"][i])
            self.optimizers[i].load_state_dict(state["optimizers"][i])
            self.schedulers[i].load_state_dict(state["schedulers"][i])
            self.batch_generators[i].set_state(state["batch_generators"][i].cpu())
            self.dropout_generators[i].set_state(state["dropout_generators"][i].cpu())
        self.updates = int(state["updates"])
