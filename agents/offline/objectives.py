"""The objectives of offline preference learning as pure functions.

They are written against :class:`SequencePolicy`, which a batched-seed control policy
(:class:`prefbench.agents.offline.mlp.GaussianPolicy`) and a causal language model can both
implement, so the same math trains either. Shapes use ``S`` seeds (independent models
trained side by side), ``B`` samples per seed, ``n`` scored items (episodes or steps).

* Behaviour cloning and *MLE with filtering* ("10% BC") maximise the likelihood of the
  data, the latter only of the top fraction of trajectories by return
  (:func:`top_fraction_mask`).
* Reward-weighted regression (Peters & Schaal 2007) weights each sample's log-likelihood
  by ``exp(score / beta)`` (:func:`rwr_weights`).
* Implicit Q-learning (Kostrikov et al. 2021) fits a value function by expectile
  regression (:func:`expectile_loss`) and the policy by advantage-weighted likelihood
  (:func:`advantage_weights`).

:func:`warmup_scheduler` is the linear learning-rate warm-up the sequence learners share.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class SequencePolicy(Protocol):
    """A policy whose log-likelihood of given targets can be maximised.

    Control policies take ``inputs = {"obs": (S, B, O)}``, plus ``"condition": (S, B, 1)``
    for a return-conditioned policy, and ``targets`` the dataset actions ``(S, B, A)``.
    A text policy takes token ids and attention masks (``(S, B, T)`` each) and targets the
    response tokens ``(S, B, T)``; its log-likelihood sums over response tokens only (the
    prompt is masked out).
    """

    def log_prob(self, inputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``(S, B)`` log-likelihood of each sample's targets given its inputs."""
        ...


def top_fraction_mask(
    scores: np.ndarray, fraction: float, tiebreak: np.ndarray | None = None
) -> np.ndarray:
    """Keep the ``ceil(fraction * n)`` highest scores.

    Ties are broken by ``tiebreak`` (the higher value is kept) where given, else by index
    (the earlier item is kept), so the mask is deterministic.
    ``fraction * n`` is rounded to 9 decimals before the ceiling, so that float error
    (``0.1 * 30 = 3.0000000000000004``) does not keep an extra item.

    Args:
        scores: ``(n,)`` finite scores, e.g. episode returns.
        fraction: Share to keep, in ``(0, 1]``.
        tiebreak: ``(n,)`` secondary key for equal scores (e.g. a fixed random order, so
            that all-equal scores, as under a zero reward, do not keep the first items).

    Returns:
        ``(n,)`` bool, True for the kept items (at least one).

    Raises:
        ValueError: For a fraction outside ``(0, 1]``, empty, non-1-d or non-finite scores.
    """
    scores = np.asarray(scores)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"scores must be a non-empty 1-d array, got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    n_keep = math.ceil(round(fraction * len(scores), 9))
    if tiebreak is None:
        # A stable sort of the negated scores keeps equal scores in index order.
        order = np.argsort(-scores.astype(np.float64), kind="stable")
    else:
        tiebreak = np.asarray(tiebreak, dtype=np.float64)
        if tiebreak.shape != scores.shape:
            raise ValueError(f"tiebreak must be {scores.shape}, got {tiebreak.shape}")
        order = np.lexsort((-tiebreak, -scores.astype(np.float64)))
    mask = np.zeros(len(scores), dtype=bool)
    mask[order[:n_keep]] = True
    return mask


def rwr_weights(scores: np.ndarray, beta: float, max_weight: float) -> np.ndarray:
    """Reward-weighted regression weights ``exp(s / beta)``, normalised, then clipped.

    In this order: ``w = exp((s - max(s)) / beta)`` (subtracting the maximum changes
    nothing after normalising and keeps ``exp`` from overflowing; the largest weight is
    1 before normalising, so the mean is at least ``1 / n`` and never underflows to 0),
    ``w /= mean(w)`` (mean 1: the loss keeps the scale of plain likelihood), then
    ``w = min(w, max_weight)``. The clipped weights have mean at most 1.

    Args:
        scores: ``(n,)`` finite scores (returns or returns-to-go, standardised or not).
        beta: Temperature, > 0: smaller concentrates the weight on the best scores.
        max_weight: Upper clip applied after normalising, > 0.

    Returns:
        ``(n,)`` float64 weights.

    Raises:
        ValueError: For ``beta <= 0``, ``max_weight <= 0``, empty or non-finite scores.
    """
    s = np.asarray(scores, dtype=np.float64)
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not max_weight > 0:
        raise ValueError(f"max_weight must be > 0, got {max_weight}")
    if s.ndim != 1 or len(s) == 0:
        raise ValueError(f"scores must be a non-empty 1-d array, got shape {s.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    w = np.exp((s - s.max()) / beta)
    w /= w.mean()
    return np.minimum(w, max_weight)


def advantage_weights(
    advantages: torch.Tensor, temperature: float, max_weight: float
) -> torch.Tensor:
    """IQL's (and AWR's) policy weights ``min(exp(temperature * A), max_weight)``.

    Not normalised, as in the paper and CORL; an overflowing ``exp`` gives ``inf``, which
    the clip turns into ``max_weight``.

    Args:
        advantages: ``(...)`` advantages ``Q(s, a) - V(s)``, treated as constants.
        temperature: IQL's ``beta`` (inverse temperature), >= 0.
        max_weight: Upper clip (CORL: 100).

    Returns:
        ``(...)`` weights without gradient.
    """
    return torch.exp(temperature * advantages.detach()).clamp(max=max_weight)


def weighted_nll(log_probs: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the last axis of ``-w * log p``: (weighted) maximum likelihood.

    Args:
        log_probs: ``(..., B)`` log-likelihood of each sample, e.g. ``(S, B)`` from
            :meth:`SequencePolicy.log_prob`.
        weights: Per-sample weights broadcastable to ``log_probs`` (treated as
            constants), or None for plain likelihood.

    Returns:
        ``(...)`` loss, e.g. ``(S,)``: one per seed. Sum it over seeds before
        ``backward`` so that each seed's gradient is its own loss's.

    Raises:
        FloatingPointError: If any loss is NaN or infinite.
    """
    nll = -log_probs if weights is None else -weights.detach() * log_probs
    loss = nll.mean(dim=-1)
    if not bool(torch.isfinite(loss).all()):
        raise FloatingPointError(f"weighted NLL loss is not finite: {loss.detach().cpu()}")
    return loss


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Elementwise asymmetric squared loss ``|tau - 1(diff < 0)| * diff**2`` of IQL.

    Minimising its mean over ``diff = target - v`` makes ``v`` the ``tau``-expectile of the
    targets: ``tau = 0.5`` is the mean, ``tau -> 1`` approaches the maximum.

    Args:
        diff: ``(...)`` target minus prediction.
        expectile: ``tau`` in ``(0, 1)``.

    Returns:
        ``(...)`` loss per element (not reduced).
    """
    if not 0 < expectile < 1:
        raise ValueError(f"expectile must be in (0, 1), got {expectile}")
    weight = torch.where(diff < 0, 1 - expectile, expectile)
    return weight * diff.square()


def td_target(
    rewards: torch.Tensor,
    terminations: torch.Tensor,
    next_values: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """One-step targets ``r + discount * (1 - terminated) * V(s')`` (no gradient).

    A terminated step has no future; a truncated one (a time limit) bootstraps like any
    other step, so pass terminations, not ``terminations | truncations``.

    Args:
        rewards: ``(...)`` rewards.
        terminations: ``(...)`` bool or 0/1, True where the episode reached a terminal state.
        next_values: ``(...)`` value of the next observation.
        discount: In ``[0, 1]``.

    Returns:
        ``(...)`` targets.
    """
    alive = 1.0 - terminations.to(rewards.dtype)
    return rewards + discount * alive * next_values.detach()


def warmup_scheduler(optimizer: torch.optim.Optimizer, steps: int) -> Any:
    """Learning rate ``lr * min((i + 1) / steps, 1)`` at update ``i`` (constant for 0 steps)."""
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min((i + 1) / steps, 1.0) if steps > 0 else 1.0
    )
