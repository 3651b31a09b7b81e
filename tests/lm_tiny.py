"""The tiny base-model settings the language-model tests build from (seconds on a CPU)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any


def tiny_config(**changes: Any) -> Any:
    """A one-block, 16-wide GPT-2 trained for a few steps, with ``changes`` applied."""
    from prefbench.agents.lm.config import PretrainConfig

    tiny = PretrainConfig(
        n_layer=1,
        n_embd=16,
        n_head=2,
        n_positions=32,
        block_size=16,
        batch_size=8,
        steps=20,
        lr=3e-3,
        warmup_steps=2,
        eval_every=10,
        eval_windows=16,
    )
    return replace(tiny, **changes)
