"""Settings of a base model (no heavy imports: the command line builds flags from them)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

from prefbench.envs.text_tasks import TextTask


@dataclass(frozen=True)
class PretrainConfig:
    """Base-model settings (GPT-2's architecture, small).

    Attributes:
        n_layer: Transformer blocks.
        n_embd: Width.
        n_head: Attention heads.
        n_positions: Longest sequence the model takes (prompt, reward prefix, response).
        dropout: GPT-2's residual, embedding and attention dropout.
        block_size: Tokens per training window.
        batch_size: Windows per step.
        steps: Optimiser steps.
        lr: Peak AdamW learning rate.
        warmup_steps: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        eval_every: Steps between held-out losses and checkpoints.
        eval_windows: Held-out windows per evaluation.
        seed: Initial weights and windows.
    """

    n_layer: int = 4
    n_embd: int = 128
    n_head: int = 4
    n_positions: int = 128
    dropout: float = 0.1
    block_size: int = 64
    batch_size: int = 32
    steps: int = 3000
    lr: float = 1e-3
    warmup_steps: int = 100
    weight_decay: float = 0.01
    eval_every: int = 250
    eval_windows: int = 256
    seed: int = 0

    def __post_init__(self) -> None:
        ints = ("n_layer", "n_embd", "n_head", "n_positions", "block_size", "batch_size")
        ints += ("steps", "eval_every", "eval_windows")
        problems = [f"{k} must be >= 1" for k in ints if getattr(self, k) < 1]
        if self.n_embd % max(self.n_head, 1):
            problems.append(f"n_embd {self.n_embd} must divide by n_head {self.n_head}")
        if self.block_size > self.n_positions:
            problems.append("block_size must be <= n_positions")
        if not (0 <= self.dropout < 1):
            problems.append("dropout must be in [0, 1)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            problems.append("lr must be finite and > 0")
        if self.warmup_steps < 0 or self.weight_decay < 0 or self.seed < 0:
            problems.append("warmup_steps, weight_decay and seed must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


#: Per-task defaults: the synthetic task's model trains in seconds.
DEFAULT_CONFIGS: dict[str, PretrainConfig] = {
    "digit-parity": PretrainConfig(
        n_layer=2, n_embd=64, n_head=2, n_positions=64, block_size=32, steps=400, eval_every=100
    ),
}


def default_config(task: TextTask, **overrides: Any) -> PretrainConfig:
    """The task's default settings with ``overrides`` (``None`` values ignored)."""
    base = DEFAULT_CONFIGS.get(task.id, PretrainConfig())
    return replace(base, **{k: v for k, v in overrides.items() if v is not None})
