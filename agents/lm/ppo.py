"""PPO for a causal LM on a learned reward, with a KL penalty against the frozen reference.

The online baseline of the text track (trl 1.16 no longer ships PPO; this follows the
classic trl ``PPOTrainer`` and Ziegler et al. 2019). One iteration:

1. *sample* a response to each of ``batch_size`` training prompts;
2. *score*: the learned reward of each (prompt, response), z-scored like the offline
   methods' scores, and per token ``log pi(y_t) - log ref(y_t)``;
3. *rewards* per response token: ``-kl_coef`` times that log-ratio, plus the score on the
   last token (:func:`kl_penalised_rewards`);
4. *advantages* by GAE over the response tokens with values from a linear value head on
   the policy's last hidden layer (:func:`gae`), whitened over the batch;
5. *update*: ``ppo_epochs`` passes over minibatches of the clipped surrogate plus
   ``vf_coef`` times the clipped value loss, token-averaged, with dropout off.

Token layout as :mod:`prefbench.agents.lm.policy`: position ``t`` of the ``(B, T - 1)``
arrays is the state before token ``t + 1``, and ``mask`` marks response tokens.
Compute is counted in a :class:`~prefbench.agents.lm.compute.FlopCounter`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from prefbench.agents.lm.compute import FlopCounter, non_embedding_parameters
from prefbench.agents.lm.policy import IGNORE, CausalLMPolicy, token_log_probs
from prefbench.envs.seeding import make_rng, stream_seed
from prefbench.envs.text_tasks import TextTask

#: ``(prompts, response ids) -> (B,)`` scores of the responses (the learned reward).
ScoreFn = Callable[[list[str], list[list[int]]], np.ndarray]


def kl_penalised_rewards(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    scores: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """``(B, L)`` per-token rewards: ``-kl_coef * (logp - ref_logp)``, the score on the last.

    Args:
        logp: ``(B, L)`` the sampling policy's token log-probabilities.
        ref_logp: ``(B, L)`` the reference's.
        mask: ``(B, L)`` bool, response tokens (one contiguous block per row, non-empty).
        scores: ``(B,)`` sequence scores.
        kl_coef: Penalty coefficient, >= 0.
    """
    rewards = -kl_coef * (logp - ref_logp) * mask
    last = mask.long().cumsum(dim=1).argmax(dim=1)  # the last response position
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns over each row's response tokens.

    The value after a row's last response token is 0 (the episode ends there).

    Returns:
        ``(advantages, returns)``, both ``(B, L)``, 0 outside ``mask``.
    """
    m = mask.float()
    b, length = rewards.shape
    adv = torch.zeros_like(rewards)
    running = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    next_value = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    next_alive = torch.zeros(b, dtype=rewards.dtype, device=rewards.device)
    for t in reversed(range(length)):
        delta = rewards[:, t] + gamma * next_value * next_alive - values[:, t]
        running = (delta + gamma * lam * next_alive * running) * m[:, t]
        adv[:, t] = running
        next_value, next_alive = values[:, t], m[:, t]
    return adv, (adv + values) * m


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over ``mask``."""
    m = mask.float()
    return (x * m).sum() / m.sum().clamp(min=1)


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` standardised over ``mask`` (0 elsewhere)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


@dataclass(frozen=True)
class PPOConfig:
    """PPO settings (trl's classic defaults where they fit a small model).

    Attributes:
        iterations: Rollout-and-update rounds.
        batch_size: Prompts per rollout.
        mini_batch_size: Responses per gradient step.
        ppo_epochs: Passes over each rollout.
        lr: Adam learning rate of the policy and value head.
        kl_coef: KL penalty per token.
        gamma: Discount over tokens.
        lam: GAE lambda.
        cliprange: Policy ratio clip.
        cliprange_value: Value clip.
        vf_coef: Weight of the value loss.
        temperature: Sampling temperature of rollouts.
        seed: Prompts, sampling and minibatches.
    """

    iterations: int = 100
    batch_size: int = 64
    mini_batch_size: int = 16
    ppo_epochs: int = 4
    lr: float = 1e-4
    kl_coef: float = 0.05
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        ints = ("iterations", "batch_size", "mini_batch_size", "ppo_epochs")
        problems = [f"{k} must be >= 1" for k in ints if getattr(self, k) < 1]
        if self.mini_batch_size > self.batch_size:
            problems.append("mini_batch_size must be <= batch_size")
        if not (self.lr > 0 and self.kl_coef >= 0 and self.temperature > 0):
            problems.append("lr and temperature must be > 0, kl_coef >= 0")
        if not (0 < self.gamma <= 1 and 0 <= self.lam <= 1):
            problems.append("gamma must be in (0, 1] and lam in [0, 1]")
        if not (self.cliprange > 0 and self.cliprange_value > 0 and self.vf_coef >= 0):
            problems.append("clip ranges must be > 0 and vf_coef >= 0")
        if problems:
            raise ValueError("; ".join(problems))


class PPO:
    """Trains ``policy``'s first model by PPO on ``score_fn`` against ``reference``.

    Args:
        policy: The policy (changed in place).
        reference: The frozen reference.
        task: Gives training prompts and response lengths.
        score_fn: The learned reward (z-scored).
        config: Settings.
        counter: Where compute is counted; ``score_parameters`` is the reward model's
            non-embedding size.
        score_parameters: Non-embedding parameters of the reward model.
    """

    def __init__(
        self,
        policy: CausalLMPolicy,
        reference: CausalLMPolicy,
        task: TextTask,
        score_fn: ScoreFn,
        config: PPOConfig,
        counter: FlopCounter | None = None,
        score_parameters: int = 0,
    ) -> None:
        self.policy, self.reference, self.task = policy, reference, task
        self.score_fn, self.config = score_fn, config
        self.counter = counter or FlopCounter()
        self.score_parameters = score_parameters
        model = policy.models[0]
        width = model.get_input_embeddings().embedding_dim
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(stream_seed(config.seed, "ppo_value_head"))
            self.value_head = nn.Linear(width, 1)
            nn.init.normal_(self.value_head.weight, 0.0, 1 / math.sqrt(width + 1))
            nn.init.zeros_(self.value_head.bias)
        params = [*model.parameters(), *self.value_head.parameters()]
        self.optimizer = torch.optim.Adam(params, lr=config.lr)
        self.n_policy = non_embedding_parameters(model)
        self.rng = make_rng(config.seed, "ppo")
        self.updates = 0
        self.iterations = 0

    def state_dict(self) -> dict[str, Any]:
        """What continuing needs besides the policy's weights (for ``torch.save``)."""
        return {
            "value_head": self.value_head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": self.rng.bit_generator.state,
            "updates": self.updates,
            "iterations": self.iterations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.value_head.load_state_dict(state["value_head"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.updates, self.iterations = int(state["updates"]), int(state["iterations"])

    def _forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        logp, hidden = token_log_probs(self.policy.models[0], batch, hidden=True)
        values = self.value_head(hidden[:, :-1]).squeeze(-1)
        return logp, values

    def iteration(self) -> dict[str, float]:
        """One rollout and its PPO updates; returns scalar metrics."""
        c = self.config
        seed = int(self.rng.integers(0, 2**31))
        prompts = self.task.prompts("train", c.batch_size, seed)
        lengths = self.task.response_lengths(c.batch_size, seed).tolist()
        ids = self.policy.generate(prompts, lengths, seed, temperature=c.temperature)
        batch = vars(self.policy.encode(prompts, ids))
        tokens = int(batch["attention_mask"].sum())
        self.counter.add("generate", self.n_policy, tokens)
        model = self.policy.models[0]
        model.eval()
        with torch.no_grad():
            old_logp, old_values = self._forward(batch)
            ref_logp = token_log_probs(self.reference.models[0].eval(), batch)
            scores = torch.as_tensor(self.score_fn(prompts, ids), dtype=torch.float32)
        self.counter.add(
            "score",
            self.n_policy
            + non_embedding_parameters(self.reference.models[0])
            + self.score_parameters,
            tokens,
        )
        mask = batch["targets"][:, 1:] != IGNORE
        rewards = kl_penalised_rewards(old_logp, ref_logp, mask, scores, c.kl_coef)
        adv, returns = gae(rewards, old_values, mask, c.gamma, c.lam)
        adv = whiten(adv, mask)
        # Dropout stays off (as trl's): the ratio must compare the same function.
        n = len(prompts)
        stats: dict[str, list[float]] = {"policy_loss": [], "value_loss": [], "clip_fraction": []}
        trained = 0
        for _ in range(c.ppo_epochs):
            order = self.rng.permutation(n)
            for start in range(0, n, c.mini_batch_size):
                rows = torch.as_tensor(order[start : start + c.mini_batch_size])
                mb = {k: v[rows] for k, v in batch.items()}
                logp, values = self._forward(mb)
                m = mask[rows]
                ratio = torch.exp(logp - old_logp[rows])
                a = adv[rows]
                pg = torch.max(-a * ratio, -a * ratio.clamp(1 - c.cliprange, 1 + c.cliprange))
                v_old = old_values[rows]
                v_clip = v_old + (values - v_old).clamp(-c.cliprange_value, c.cliprange_value)
                r = returns[rows]
                vf = 0.5 * torch.max((values - r) ** 2, (v_clip - r) ** 2)
                policy_loss, value_loss = masked_mean(pg, m), masked_mean(vf, m)
                loss = policy_loss + c.vf_coef * value_loss
                if not bool(torch.isfinite(loss)):
                    raise FloatingPointError(f"PPO loss is not finite: {loss.item()}")
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(
                    [*model.parameters(), *self.value_head.parameters()], 1.0
                )
                self.optimizer.step()
                self.updates += 1
                self.counter.add("train", self.n_policy, int(mb["attention_mask"].sum()))
                trained += int(m.sum())
                stats["policy_loss"].append(float(policy_loss.detach()))
                stats["value_loss"].append(float(value_loss.detach()))
                clipped = ((ratio - 1).abs() > c.cliprange).float()
                stats["clip_fraction"].append(float(masked_mean(clipped, m)))
        self.iterations += 1
        kl = masked_mean(old_logp - ref_logp, mask)
        return {
            "score": float(scores.mean()),
            "kl_per_token": float(kl),
            **{k: float(np.mean(v)) for k, v in stats.items()},
            "trained_tokens": float(trained),
            **self.counter.as_dict(),
        }
