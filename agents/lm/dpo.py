"""Direct preference optimisation (Rafailov et al. 2023) on the teacher's labelled pairs.

DPO skips the reward model: on each labelled pair of responses to one prompt it
maximises ``log sigmoid(beta * ((log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log
ref(y_l))))``, log-likelihoods summed over response tokens, ``y_w`` the response the
teacher preferred. This is trl 1.16's ``DPOTrainer`` with its defaults (``loss_type
"sigmoid"``, ``beta 0.1``, no label smoothing); ``tests/test_lm_dpo.py`` checks the loss
against trl's on one batch. Pairs the teacher called equal (0.5) or skipped are dropped;
a preference of 0 swaps the pair. As in trl, dropout is off in both models. trl's bf16
and gradient-checkpointing defaults are for GPUs; here everything runs in fp32 without
checkpointing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from prefbench.agents.lm.offline_align import StepState
from prefbench.agents.lm.policy import CausalLMPolicy, TokenBatch, sequence_log_prob
from prefbench.agents.lm.samples import TextSamples
from prefbench.agents.offline.objectives import warmup_scheduler
from prefbench.envs.seeding import make_torch_generator


def dpo_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> torch.Tensor:
    """Mean DPO loss over ``(B,)`` summed log-likelihoods of chosen and rejected responses.

    Raises:
        FloatingPointError: If the loss is not finite.
    """
    delta = (chosen - ref_chosen) - (rejected - ref_rejected)
    loss = -F.logsigmoid(beta * delta).mean()
    if not bool(torch.isfinite(loss)):
        raise FloatingPointError(f"DPO loss is not finite: {loss.item()}")
    return loss


@dataclass(frozen=True)
class DPOConfig:
    """DPO settings (trl 1.16's defaults where it has them).

    Attributes:
        beta: Strength of the implicit KL penalty (trl: 0.1).
        updates: Optimiser steps.
        batch_size: Pairs per step.
        lr: AdamW learning rate after warm-up.
        warmup_steps: Linear warm-up steps.
        seed: Minibatch order.
    """

    beta: float = 0.1
    updates: int = 500
    batch_size: int = 16
    lr: float = 3e-4
    warmup_steps: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.beta) and self.beta > 0 and self.lr > 0):
            raise ValueError("beta and lr must be finite and > 0")
        if self.updates < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            raise ValueError("updates and batch_size must be >= 1, warmup_steps >= 0")


def decided_pairs(pairs: np.ndarray, prefs: np.ndarray) -> np.ndarray:
    """``(M, 2)`` ``(chosen, rejected)`` sample indices of the pairs with a strict preference."""
    pairs, prefs = np.asarray(pairs), np.asarray(prefs, dtype=np.float64)
    if pairs.shape != (len(prefs), 2):
        raise ValueError(f"pairs must be ({len(prefs)}, 2), got {pairs.shape}")
    keep = prefs != 0.5
    ordered = np.where((prefs[keep] > 0.5)[:, None], pairs[keep], pairs[keep][:, ::-1])
    return ordered.astype(np.int64)


class DPO(StepState):
    """Trains ``policy``'s first model with DPO against a frozen ``reference``.

    Args:
        policy: The policy (changed in place).
        reference: The frozen reference (the base model).
        samples: The samples the pairs index.
        pairs: ``(M, 2)`` ``(chosen, rejected)`` indices (:func:`decided_pairs`).
        config: Settings.
    """

    def __init__(
        self,
        policy: CausalLMPolicy,
        reference: CausalLMPolicy,
        samples: TextSamples,
        pairs: np.ndarray,
        config: DPOConfig,
    ) -> None:
        if len(pairs) == 0:
            raise ValueError("DPO needs at least one decided pair")
        self.policy, self.reference, self.samples, self.config = policy, reference, samples, config
        self.pairs = torch.as_tensor(pairs)
        self.generator = make_torch_generator(config.seed, "lm_dpo")
        model = policy.models[0]
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
        self.scheduler = warmup_scheduler(self.optimizer, config.warmup_steps)
        self.updates = 0

    def _batch(self, rows: np.ndarray) -> TokenBatch:
        prompts = self.samples.sample_prompts
        return self.policy.encode(
            [prompts[i] for i in rows], [self.samples.response_ids[i] for i in rows]
        )

    def update(self) -> dict[str, float]:
        """One optimiser step on a minibatch of pairs."""
        pick = torch.randint(
            0, len(self.pairs), (self.config.batch_size,), generator=self.generator
        )
        chosen, rejected = self.pairs[pick].T.numpy()
        # One padded batch of [chosen; rejected], as trl concatenates them.
        batch = vars(self._batch(np.concatenate([chosen, rejected])))
        with torch.no_grad():
            ref = sequence_log_prob(self.reference.models[0].eval(), batch)
        model = self.policy.models[0]
        model.eval()  # dropout off, as trl's DPO (disable_dropout=True)
        logp = sequence_log_prob(model, batch)
        b = len(chosen)
        loss = dpo_loss(logp[:b], logp[b:], ref[:b], ref[b:], self.config.beta)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.updates += 1
        margin = ((logp[:b] - ref[:b]) - (logp[b:] - ref[b:])).detach()
        margin_reward = float(self.config.beta * margin.mean())
        return {
            "loss": float(loss.detach()),
            "reward_margin": margin_reward,
            "trained_tokens": float((batch["targets"] != -100).sum()),
            "sequence_tokens": float(batch["attention_mask"].sum()),
        }
