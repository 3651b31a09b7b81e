"""The reward predictor of Christiano et al. 2017: a batched ensemble fit by Bradley-Terry.

The ensemble's ``K`` members are trained together: one forward and one backward pass
per minibatch covers every member, each member on its own bootstrap resample of the
labels (``(K, B)`` index arrays gather each member's pairs). Defaults follow the paper
(arXiv 1706.03741, section 2.2.3 and appendix A):

* 3 members, two hidden layers of 64 with leaky ReLU, input ``(observation, action)``
  standardised by running statistics of every labelled clip's steps (``input_norm``;
  not in the paper: imitation's reward nets do it, and the ablation in
  ``results/README.md`` measures it);
* ``P(a > b) = 0.9 * sigmoid(R_a - R_b) + 0.05``: Bradley-Terry on clip returns mixed with
  a 10% chance that the answer was uniformly random;
* each label is held out of each member's training set with probability ``1/e`` (that
  member's validation set); the member trains on a bootstrap resample of the rest;
* the L2 strength of each member adapts so its validation loss stays 1.1-1.5x its
  training loss;
* the reward handed to the agent is the mean over members of each member's output
  normalised to zero mean and unit standard deviation (times ``output_std``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from prefbench.agents.device import resolve_device
from prefbench.agents.encoders import EnsembleLinear, SeededDropout
from prefbench.agents.losses import bradley_terry_loss
from prefbench.agents.reward_nets import DeviceData, NumpyEnsemble, RewardEnsemble
from prefbench.agents.tensor_cache import TensorCache
from prefbench.envs.data import CheckpointError, ClipPairs, PreferenceDataset
from prefbench.envs.seeding import make_torch_generator


@dataclass(frozen=True)
class RewardModelConfig:
    """Reward-model hyperparameters (defaults: Christiano et al. 2017, MuJoCo).

    Attributes:
        ensemble_size: ``K`` members.
        hidden_sizes: Widths of the hidden layers of each member's MLP.
        encoder: Id in :data:`prefbench.agents.encoders.ENCODERS`.
        encoder_kwargs: Keyword arguments of the encoder (``tokens``: ``vocab_size``,
            ``n_embd``, ``n_layer``, ``n_head``, ``dropout``).
        use_actions: Feed the action next to the observation (MuJoCo: yes).
        input_norm: Standardise the flattened (observation, action) input with the
            running mean and variance of the steps of every clip labelled so far (each
            clip counted once, when its label arrives). Needs the ``flatten`` encoder.
        lr: Adam learning rate.
        batch_size: Pairs per member per minibatch.
        epochs_per_fit: Passes over the (resampled) labels per fit.
        random_answer_prob: Probability that a label was a uniformly random answer.
        holdout_prob: Probability a label is held out of a member's training set.
        l2_init: Initial L2 strength.
        l2_ratio_range: Target range of validation/training loss.
        l2_step: Multiplicative L2 change per fit when outside the range.
        output_std: Scale of the reward handed to the agent: each member's output is
            normalised to this standard deviation before the members are averaged (the
            paper's order), so the average's spread is at most ``output_std``.
        leaky_relu_slope: Negative slope of the activations.
        bn_calibration_pairs: Encoders with batch norm (the Atari conv net): after each
            fit, re-estimate its statistics with dropout off on up to this many of each
            member's newest training pairs (0: keep the running averages of training).
            Training normalises activations that dropout has made noisier; the agent's
            reward and all evaluation run without dropout, where those averages no longer
            fit and the predicted rewards can shrink toward a constant.
    """

    ensemble_size: int = 3
    hidden_sizes: tuple[int, ...] = (64, 64)
    encoder: str = "flatten"
    encoder_kwargs: dict[str, Any] = field(default_factory=dict)
    use_actions: bool = True
    input_norm: bool = True
    lr: float = 1e-3
    batch_size: int = 64
    epochs_per_fit: int = 3
    random_answer_prob: float = 0.1
    holdout_prob: float = 1 / math.e
    l2_init: float = 1e-4
    l2_ratio_range: tuple[float, float] = (1.1, 1.5)
    l2_step: float = 1.5
    output_std: float = 1.0
    leaky_relu_slope: float = 0.01
    bn_calibration_pairs: int = 128

    def __post_init__(self) -> None:
        problems = []
        if self.ensemble_size < 1:
            problems.append(f"ensemble_size must be >= 1, got {self.ensemble_size}")
        if not self.hidden_sizes or min(self.hidden_sizes) < 1:
            problems.append(f"hidden_sizes must be positive, got {self.hidden_sizes}")
        if not self.lr > 0:
            problems.append(f"lr must be > 0, got {self.lr}")
        if self.batch_size < 1 or self.epochs_per_fit < 0:
            problems.append("batch_size must be >= 1 and epochs_per_fit >= 0")
        if not 0 <= self.random_answer_prob < 1:
            problems.append(f"random_answer_prob must be in [0, 1), got {self.random_answer_prob}")
        if not 0 < self.holdout_prob < 1:
            problems.append(f"holdout_prob must be in (0, 1), got {self.holdout_prob}")
        lo, hi = self.l2_ratio_range
        if not (self.l2_init >= 0 and 0 < lo < hi and self.l2_step > 1):
            problems.append("need l2_init >= 0, 0 < l2_ratio_range[0] < [1], l2_step > 1")
        if not self.output_std > 0:
            problems.append(f"output_std must be > 0, got {self.output_std}")
        if self.input_norm and self.encoder != "flatten":
            problems.append(
                f"input_norm needs the flatten encoder, not {self.encoder!r} (set input_norm=false)"
            )
        if self.bn_calibration_pairs < 0:
            problems.append(f"bn_calibration_pairs must be >= 0, got {self.bn_calibration_pairs}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class FitStats:
    """What one fit did, per member where it says so.

    Attributes:
        train_loss: ``(K,)`` Bradley-Terry loss on each member's own training labels.
        val_loss: ``(K,)`` loss on each member's held-out labels (NaN if none).
        val_accuracy: Ensemble accuracy on labels held out of at least one member.
        l2: ``(K,)`` L2 strength after adaptation.
        steps: Gradient steps taken.
        n_labels: Labels available.
    """

    train_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: float
    l2: np.ndarray
    steps: int
    n_labels: int

    def summary(self) -> dict[str, float]:
        """Scalar metrics for logging."""
        return {
            "rm_train_loss": float(np.mean(self.train_loss)),
            "rm_val_loss": float(np.nanmean(self.val_loss))
            if np.isfinite(self.val_loss).any()
            else math.nan,
            "rm_val_accuracy": self.val_accuracy,
            "rm_l2": float(np.mean(self.l2)),
        }


class RewardModel:
    """A reward ensemble with its trainer and normalisation (files: ``reward_checkpoint``).

    Args:
        obs_shape: Shape of one observation.
        act_dim: Action vector length (continuous actions are flattened).
        config: Hyperparameters.
        seed: Seeds parameter initialisation, holdout flags and bootstrap draws.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        act_dim: int,
        config: RewardModelConfig | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "auto",
    ) -> None:
        self.config = config or RewardModelConfig()
        self.device = resolve_device(device)
        self.seed = seed
        torch_gen = make_torch_generator(seed, "reward_model_init")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=torch_gen)))
            self.net = RewardEnsemble(tuple(obs_shape), act_dim, self.config)
        self.net.to(self.device)
        # Dropout masks come from the model's own stream, saved with its checkpoints.
        self.dropout_gen = make_torch_generator(seed, "reward_model_dropout", self.device)
        for module in self.net.modules():
            if isinstance(module, SeededDropout):
                module.generator = self.dropout_gen
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)
        k = self.config.ensemble_size
        self.l2 = np.full(k, self.config.l2_init, dtype=np.float64)
        self._rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5EED]))
        # (N, K) True where label n is held out of member k; grows as labels arrive.
        self.holdout = np.zeros((0, k), dtype=bool)
        # A NumPy copy of a flatten-encoder ensemble on the CPU, rebuilt when weights change.
        self._numpy_net: TensorCache[NumpyEnsemble] = TensorCache()
        # The sources, gathered once (gathering per call doubles its cost): the net never
        # moves or changes dtype after this, so these stay its tensors.
        self._net_tensors = [*self.net.parameters(), *self.net.buffers()]

    # ----------------------------------------------------------------- training
    def _holdout_for(self, n: int) -> np.ndarray:
        """Extend the per-label holdout flags to ``n`` labels; earlier flags never change."""
        new = n - len(self.holdout)
        if new > 0:
            flags = self._rng.random((new, self.config.ensemble_size)) < self.config.holdout_prob
            self.holdout = np.concatenate([self.holdout, flags])
        return self.holdout[:n]

    def to_device(self, data: PreferenceDataset) -> DeviceData:
        """Copy labelled pairs to the model's device once, for many training steps."""
        acts = _flat(torch.as_tensor(data.pairs.acts, device=self.device), 3)
        pairs = data.pairs
        # Compact frames go to the device as they are; stacks are cut per batch.
        obs = pairs.obs if pairs.frames is None else pairs.frames
        taken = None
        if pairs.absorbing is not None:
            taken = torch.as_tensor(pairs.steps_taken, device=self.device)
        return DeviceData(
            self._obs_tensor(obs),
            acts.float(),
            torch.as_tensor(data.prefs, device=self.device, dtype=torch.float32),
            pairs.frame_stack,
            taken,
        )

    def _returns(self, d: DeviceData, idx: torch.Tensor) -> torch.Tensor:
        """Predicted returns ``(K, B, 2)`` for per-member index arrays ``idx`` ``(K, B)``."""
        k, b = idx.shape
        obs = d.clips(idx)  # (K, B, 2, H, *O)
        acts = d.acts[idx]
        h = obs.shape[3]
        taken = None if d.taken is None else d.taken[idx].reshape(k, b * 2, h)
        r = self.net.clip_returns(
            obs.reshape(k, b * 2, h, *obs.shape[4:]),
            acts.reshape(k, b * 2, h, acts.shape[-1]),
            taken,
        )
        return r.reshape(k, b, 2)

    def _l2_penalty(self) -> torch.Tensor:
        """``(K,)`` squared weight norms per member (linear and conv weights, not biases).

        Ensemble weights keep member ``k``'s slice first: ``(K, in, out)`` for linear
        layers and ``(K * out, in, kh, kw)`` for grouped convolutions.
        """
        k = self.config.ensemble_size
        total = torch.zeros(k, device=self.device)
        for module in self.net.modules():
            if isinstance(module, EnsembleLinear | nn.Conv2d):
                total = total + module.weight.reshape(k, -1).pow(2).sum(dim=1)
        return total

    def train_step(self, d: DeviceData, idx: torch.Tensor) -> torch.Tensor:
        """One batched gradient step for all members; returns the ``(K,)`` data losses.

        Raises:
            FloatingPointError: If the loss is not finite.
        """
        self.net.train()
        returns = self._returns(d, idx)
        losses = bradley_terry_loss(returns, d.prefs[idx], self.config.random_answer_prob).mean(
            dim=1
        )
        l2 = torch.as_tensor(self.l2, device=self.device, dtype=torch.float32)
        total = losses.sum() + (l2 * self._l2_penalty()).sum()
        if not torch.isfinite(total):
            raise FloatingPointError(f"reward-model loss is not finite ({total.item()})")
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        return losses.detach()

    def fit(
        self, data: PreferenceDataset, epochs: int | None = None, *, first_label: int = 0
    ) -> FitStats:
        """Train every member on its bootstrap resample of its non-held-out labels.

        Each label keeps its holdout flags for good, so a label held out of a member is
        never trained on by it, also when training on a window of the newest labels.

        Args:
            data: Labels in arrival order: labels ``first_label, ..., first_label + N - 1``
                of all labels so far (``first_label > 0`` for a window of the newest).
            epochs: Passes over the resample; defaults to ``config.epochs_per_fit``.
            first_label: Index of ``data``'s first label among all labels.
        """
        epochs = self.config.epochs_per_fit if epochs is None else epochs
        n = len(data)
        if n == 0:
            raise ValueError("cannot fit a reward model on zero labels")
        if first_label < 0:
            raise ValueError(f"first_label must be >= 0, got {first_label}")
        k, bsz = self.config.ensemble_size, self.config.batch_size
        holdout = self._holdout_for(first_label + n)[first_label:]
        d = self.to_device(data)
        self._absorb_inputs(d, first_label)
        train_pools = [np.flatnonzero(~holdout[:, m]) for m in range(k)]
        # Members with every label held out (tiny datasets) train on all of them.
        train_pools = [p if len(p) else np.arange(n) for p in train_pools]
        n_train = max(1, round(n * (1 - self.config.holdout_prob)))
        steps = 0
        for _ in range(epochs):
            boot = np.stack(
                [pool[self._rng.integers(0, len(pool), n_train)] for pool in train_pools]
            )
            for start in range(0, n_train, bsz):
                idx = torch.as_tensor(boot[:, start : start + bsz], device=self.device)
                self.train_step(d, idx)
                steps += 1
        self.calibrate_batch_norm(d, train_pools)
        train_loss, val_loss, val_acc = self._evaluate(d, holdout, train_pools)
        self._adapt_l2(train_loss, val_loss)
        return FitStats(train_loss, val_loss, val_acc, self.l2.copy(), steps, n)

    @torch.no_grad()
    def _absorb_inputs(self, d: DeviceData, first_label: int) -> None:
        """Add the steps of labels not seen before to the input statistics.

        ``in_labels`` (saved with the weights) counts the labels absorbed, so a refit on
        the same labels, a window of the newest, or a resumed run counts each clip once.
        """
        if not self.config.input_norm:
            return
        n = d.prefs.shape[0]
        start = max(0, int(self.net.in_labels.item()) - first_label)
        if start >= n:
            return
        obs = d.obs[start:]  # (N_new, 2, H, *O); input_norm implies no frame stack
        acts = d.acts[start:]
        flat_obs = obs.reshape(-1, *obs.shape[3:])
        flat_acts = acts.reshape(flat_obs.shape[0], acts.shape[-1])
        if d.taken is not None:  # absorbing steps are no experience
            keep = d.taken[start:].reshape(-1) > 0
            flat_obs, flat_acts = flat_obs[keep], flat_acts[keep]
        self.net.update_input_stats(self.net.trunk_inputs(flat_obs, flat_acts))
        self.net.in_labels.fill_(first_label + n)

    @torch.no_grad()
    def calibrate_batch_norm(
        self, d: DeviceData, pools: list[np.ndarray], pairs: int | None = None
    ) -> None:
        """Re-estimate batch-norm statistics with dropout off ("precise BN").

        Runs member ``k``'s newest ``pairs`` labels of ``pools[k]`` through the network in
        training mode with dropout disabled, and replaces each batch norm's running mean
        and variance by their averages over those batches. No-op for networks without
        batch norm or with ``pairs == 0``.

        Args:
            d: The labelled pairs on the device.
            pools: Per member, the indices into ``d`` it trains on.
            pairs: Pairs per member; ``None`` takes ``config.bn_calibration_pairs``.
        """
        pairs = self.config.bn_calibration_pairs if pairs is None else pairs
        norms = [m for m in self.net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        n = min(pairs, *(len(p) for p in pools))
        if not norms or n == 0:
            return
        pick = np.stack([pool[len(pool) - n :] for pool in pools])  # (K, n)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a plain average over the calibration batches
        self.net.train()
        for m in self.net.modules():
            if isinstance(m, SeededDropout):
                m.eval()
        try:
            for start in range(0, n, self.config.batch_size):
                idx = pick[:, start : start + self.config.batch_size]
                self._returns(d, torch.as_tensor(idx, device=self.device))
        finally:
            for m, momentum in zip(norms, momenta, strict=True):
                m.momentum = momentum
            self.net.eval()

    @torch.no_grad()
    def _evaluate(
        self, d: DeviceData, holdout: np.ndarray, train_pools: list[np.ndarray]
    ) -> tuple[np.ndarray, np.ndarray, float]:
        self.net.eval()
        n, k = holdout.shape
        returns = self._all_returns(d)  # (K, N, 2)
        losses = bradley_terry_loss(returns, d.prefs.expand(k, n), self.config.random_answer_prob)
        losses = losses.cpu().numpy()
        train_loss = np.array([losses[m, train_pools[m]].mean() for m in range(k)])
        val_loss = np.array(
            [losses[m, holdout[:, m]].mean() if holdout[:, m].any() else np.nan for m in range(k)]
        )
        # Accuracy of each held-out member on the labels it never trained on, pooled.
        prefs = d.prefs.cpu().numpy()
        margin = (returns[..., 0] - returns[..., 1]).cpu().numpy()  # (K, N)
        decided = prefs != 0.5
        hits = (margin > 0) == (prefs > 0.5)
        mask = holdout.T & decided[None, :]
        val_acc = float(hits[mask].mean()) if mask.any() else math.nan
        return train_loss, val_loss, val_acc

    def _all_returns(self, d: DeviceData) -> torch.Tensor:
        """``(K, N, 2)`` returns of every pair for every member, in chunks."""
        k, n = self.config.ensemble_size, d.prefs.shape[0]
        chunk = self._pairs_per_chunk(d.clip_shape)
        out = []
        for s in range(0, n, chunk):
            idx = torch.arange(s, min(n, s + chunk), device=self.device).expand(k, -1)
            out.append(self._returns(d, idx))
        return torch.cat(out, dim=1)

    def _adapt_l2(self, train_loss: np.ndarray, val_loss: np.ndarray) -> None:
        lo, hi = self.config.l2_ratio_range
        ratio = val_loss / np.maximum(train_loss, 1e-8)
        up = np.isfinite(ratio) & (ratio > hi)
        down = np.isfinite(ratio) & (ratio < lo)
        self.l2 = np.where(up, self.l2 * self.config.l2_step, self.l2)
        self.l2 = np.where(down, self.l2 / self.config.l2_step, self.l2)
        self.l2 = np.clip(self.l2, 1e-8, 10.0)

    # ---------------------------------------------------------------- inference
    @staticmethod
    def _pairs_per_chunk(clip_shape: tuple[int, ...]) -> int:
        """Pairs per inference chunk: about 2e7 input values (80 MB in float32), <= 1024."""
        per_pair = 2 * math.prod(clip_shape)
        return max(1, min(1024, int(2e7 // per_pair)))

    def _obs_tensor(self, obs: np.ndarray) -> torch.Tensor:
        """Observations on the device; integer frames stay integers (encoders scale them)."""
        if not obs.flags.writeable:  # e.g. a frame-stack view: copy just this batch
            obs = np.array(obs)
        t = torch.as_tensor(obs, device=self.device)
        return t.float() if t.is_floating_point() else t

    def _flat_acts(self, acts: np.ndarray, lead: int) -> torch.Tensor:
        return _flat(torch.as_tensor(acts, device=self.device, dtype=torch.float32), lead)

    def update_normalization(self, obs: np.ndarray, acts: np.ndarray) -> None:
        """Set output normalisation from ``(M, *O)`` states and ``(M, A...)`` actions."""
        self.net.eval()
        self.net.set_normalization(self._obs_tensor(obs), self._flat_acts(acts, 1))

    def normalized_zero(self) -> float:
        """:meth:`reward`'s value for an absorbing step (raw output 0 in every member)."""
        return self.net.normalized_zero()

    def reward(self, obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """The agent's reward for a batch of steps: ``(M, *O)``, ``(M, A...)`` -> ``(M,)`` float32.

        Called once per environment step with a handful of states, so on the CPU an MLP
        ensemble is evaluated in NumPy: for a few rows torch's per-op dispatch costs
        several times the arithmetic.
        """
        if self.device.type == "cpu" and self.config.encoder == "flatten":
            net = self._numpy_net.get(self._net_tensors, lambda: NumpyEnsemble(self.net))
            return net(obs, acts)
        self.net.eval()
        r = self.net.normalized_reward(self._obs_tensor(obs), self._flat_acts(acts, 1))
        return r.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def member_preferences(self, pairs: ClipPairs) -> np.ndarray:
        """``(K, N)``: each member's P(first clip preferred) (without the random-answer mixture)."""
        self.net.eval()
        k = self.config.ensemble_size
        n, _, h = pairs.obs.shape[:3]
        chunk = self._pairs_per_chunk(pairs.obs.shape[2:])
        steps_taken = None if pairs.absorbing is None else pairs.steps_taken
        out = []
        for s in range(0, n, chunk):
            # Chunk by chunk: compact frame stacks expand only one chunk at a time.
            o = self._obs_tensor(pairs.obs[s : s + chunk]).reshape(-1, h, *pairs.obs.shape[3:])
            a = self._flat_acts(pairs.acts[s : s + chunk], 3)
            a = a.reshape(o.shape[0], h, a.shape[-1])
            taken = None
            if steps_taken is not None:
                t = torch.as_tensor(steps_taken[s : s + chunk], device=self.device)
                taken = t.reshape(1, -1, h).expand(k, -1, -1)
            r = self.net.clip_returns(
                o.unsqueeze(0).expand(k, *o.shape), a.unsqueeze(0).expand(k, *a.shape), taken
            )
            r = r.reshape(k, -1, 2)
            out.append(torch.sigmoid(r[..., 0] - r[..., 1]))
        return torch.cat(out, dim=1).cpu().numpy()

    def preference_accuracy(self, pairs: ClipPairs, prefs: np.ndarray) -> float:
        """Share of decided pairs (label != 0.5) where the ensemble's mean choice agrees."""
        decided = prefs != 0.5
        if not decided.any():
            return math.nan
        p = self.member_preferences(pairs[np.flatnonzero(decided)]).mean(axis=0)
        return float(((p > 0.5) == (prefs[decided] > 0.5)).mean())


def _flat(x: torch.Tensor, lead: int) -> torch.Tensor:
    """``x`` with the axes after the first ``lead`` flattened into one (also when empty)."""
    return x.reshape(*x.shape[:lead], math.prod(x.shape[lead:]))


__all__ = ["CheckpointError", "FitStats", "RewardModel", "RewardModelConfig"]
