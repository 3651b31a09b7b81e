"""Offline alignment of a causal LM on pre-generated, reward-scored samples (arXiv 2308.12050).

Every method fine-tunes the policy with the supervised loss of
:func:`~prefbench.agents.offline.objectives.weighted_nll` on response tokens only
(each sample's log-likelihood divided by its response tokens: the per-token loss), the
objectives the control track's learners use, on samples scored by the learned reward
and z-scored over the labelled ones (``z``):

``mle-filter``
    Keep the samples with ``z > filter_threshold`` (default 0, as the authors' code)
    and maximise their likelihood.
``rwr``
    Weight every sample by :func:`~prefbench.agents.offline.objectives.rwr_weights` of
    ``z`` (``exp(z / beta)``, normalised to mean 1, clipped at ``max_weight``).
``dt``
    Conditional ("Decision Transformer") alignment: each prompt is preceded by
    :func:`reward_prefix` of its sample's ``z`` and every sample is learned; generation
    conditions on ``condition`` (the authors: +5 standard deviations).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from prefbench.agents.lm.policy import CausalLMPolicy
from prefbench.agents.lm.samples import TextSamples
from prefbench.agents.offline.objectives import rwr_weights, warmup_scheduler, weighted_nll
from prefbench.envs.seeding import make_torch_generator

METHODS = ("mle-filter", "rwr", "dt")
_PREFIX = re.compile(r"^<rm_score>: (-?\d+\.\d{2}) ")


def reward_prefix(z: float) -> str:
    """The conditioning text put before a prompt: ``"<rm_score>: 1.23 "``."""
    if not math.isfinite(z):
        raise ValueError(f"a reward condition must be finite, got {z}")
    return f"<rm_score>: {z:.2f} "


def parse_reward_prefix(text: str) -> tuple[float, str]:
    """``(z, prompt)`` of a conditioned prompt.

    Raises:
        ValueError: If ``text`` does not start with a reward prefix.
    """
    match = _PREFIX.match(text)
    if match is None:
        raise ValueError(f"no reward prefix in {text[:40]!r}")
    return float(match.group(1)), text[match.end() :]


@dataclass(frozen=True)
class AlignConfig:
    """Offline alignment settings.

    Attributes:
        method: One of :data:`METHODS`.
        updates: Optimiser steps.
        batch_size: Samples per step.
        lr: AdamW learning rate (constant after a linear warm-up).
        warmup_steps: Warm-up steps.
        weight_decay: AdamW weight decay.
        filter_threshold: ``mle-filter`` keeps ``z`` above this.
        beta: ``rwr`` temperature.
        max_weight: ``rwr`` weight clip (after normalising).
        condition: ``dt``'s ``z`` at generation.
        seed: Minibatch order.
    """

    method: str = "dt"
    updates: int = 500
    batch_size: int = 32
    lr: float = 3e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    filter_threshold: float = 0.0
    beta: float = 1.0
    max_weight: float = 20.0
    condition: float = 5.0
    seed: int = 0

    def __post_init__(self) -> None:
        problems = []
        if self.method not in METHODS:
            problems.append(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.updates < 1 or self.batch_size < 1 or self.warmup_steps < 0:
            problems.append("updates and batch_size must be >= 1, warmup_steps >= 0")
        if not (self.lr > 0 and self.beta > 0 and self.max_weight > 0):
            problems.append("lr, beta and max_weight must be > 0")
        if not (math.isfinite(self.condition) and math.isfinite(self.filter_threshold)):
            problems.append("condition and filter_threshold must be finite")
        if problems:
            raise ValueError("; ".join(problems))


class StepState:
    """``state_dict``/``load_state_dict`` of a supervised-style text trainer.

    What continuing needs besides the policy's weights: the optimiser, the warm-up
    scheduler, the minibatch generator and the update count.
    """

    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    updates: int

    def state_dict(self) -> dict[str, Any]:
        """The trainer's state (tensors and plain values, for ``torch.save``)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "generator": self.generator.get_state(),
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generator"])
        self.updates = int(state["updates"])


class OfflineAligner(StepState):
    """Fine-tunes ``policy`` (its first model) on ``samples`` scored ``z``.

    Args:
        policy: The policy to train (changed in place).
        samples: The pre-generated samples.
        z: ``(N,)`` z-scored learned rewards of the samples.
        config: Settings.

    Attributes:
        updates: Steps done.
        kept: ``(N,)`` bool, the samples trained on.
        weights: ``(N,)`` float64 per-sample loss weights.
    """

    def __init__(
        self, policy: CausalLMPolicy, samples: TextSamples, z: np.ndarray, config: AlignConfig
    ) -> None:
        z = np.asarray(z, dtype=np.float64)
        if z.shape != (len(samples),) or not np.isfinite(z).all():
            raise ValueError(f"need {len(samples)} finite z-scores, got shape {z.shape}")
        self.policy, self.samples, self.z, self.config = policy, samples, z, config
        if config.method == "mle-filter":
            self.kept = z > config.filter_threshold
            if not self.kept.any():
                raise ValueError(f"no sample has z > {config.filter_threshold}")
            self.weights = self.kept.astype(np.float64)
        elif config.method == "rwr":
            self.kept = np.ones(len(z), dtype=bool)
            self.weights = rwr_weights(z, config.beta, config.max_weight)
        else:
            self.kept = np.ones(len(z), dtype=bool)
            self.weights = np.ones(len(z))
        self.prompts = self.training_prompts()
        self.pool = torch.as_tensor(np.flatnonzero(self.kept))
        self.generator = make_torch_generator(config.seed, "lm_align")
        model = policy.models[0]
        self.optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
        self.scheduler = warmup_scheduler(self.optimizer, config.warmup_steps)
        self.updates = 0

    def training_prompts(self) -> list[str]:
        """``(N,)`` each sample's prompt as trained on (with its reward prefix for ``dt``)."""
        prompts = self.samples.sample_prompts
        if self.config.method != "dt":
            return prompts
        return [reward_prefix(z) + p for z, p in zip(self.z, prompts, strict=True)]

    def generation_prompt(self, prompt: str, condition: float | None = None) -> str:
        """What the aligned policy is given for ``prompt`` (``dt``: the prefix of ``condition``)."""
        if self.config.method != "dt":
            return prompt
        return reward_prefix(self.config.condition if condition is None else condition) + prompt

    def update(self) -> dict[str, float]:
        """One optimiser step on a minibatch of kept samples."""
        pick = torch.randint(0, len(self.pool), (self.config.batch_size,), generator=self.generator)
        rows = self.pool[pick].numpy()
        batch = self.policy.encode(
            [self.prompts[i] for i in rows], [self.samples.response_ids[i] for i in rows]
        )
        model = self.policy.models[0]
        model.train()
        inputs = {"input_ids": batch.input_ids[None], "attention_mask": batch.attention_mask[None]}
        log_prob = self.policy.log_prob(inputs, batch.targets[None])  # (1, B)
        per_token = log_prob / batch.response_tokens.clamp(min=1)
        weights = torch.as_tensor(self.weights[rows], dtype=torch.float32)[None]
        loss = weighted_nll(per_token, weights)  # raises on a non-finite loss
        self.optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.updates += 1
        return {
            "loss": float(loss.item()),
            "trained_tokens": float(batch.response_tokens.sum()),
            "sequence_tokens": float(batch.attention_mask.sum()),
        }
