"""Scoring a text policy on held-out prompts with fixed decoding settings.

:func:`evaluate_text` samples one response per held-out prompt and reports, under the
column names every text record uses:

- ``true_return``: the task's ground-truth score (mean; ``true_return_std`` its deviation):
  the text tasks' true return, a response being an episode;
- ``learned_score``: the learned reward model's score (mean), where one is given: its
  gap to the ground truth shows over-optimisation;
- ``kl_per_token``: the Monte-Carlo KL to the reference, ``mean(log pi(y) - log
  pi_ref(y))`` over the sampled response tokens (the policy may see a conditioned
  prompt, the reference sees the plain one, so a conditioned policy is compared as the
  distribution it really samples from);
- ``distinct_1``/``distinct_2``: distinct token uni- and bigrams over all responses
  divided by their number (diversity).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from prefbench.agents.lm.policy import CausalLMPolicy, sequence_log_prob
from prefbench.benchmarks.columns import RM_ACCURACY, TRUE_RETURN, TRUE_RETURN_STD
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.envs.seeding import int31_seed
from prefbench.envs.text_tasks import TextTask


def distinct_n(responses: Sequence[Sequence[int]], n: int) -> float:
    """Distinct ``n``-grams over all responses / all ``n``-grams (NaN without any)."""
    grams = [tuple(r[i : i + n]) for r in responses for i in range(len(r) - n + 1)]
    return len(set(grams)) / len(grams) if grams else float("nan")


@torch.no_grad()
def evaluate_text(
    policy: CausalLMPolicy,
    reference: CausalLMPolicy,
    task: TextTask,
    prompts: Sequence[str],
    seed: int,
    *,
    shown: Callable[[str], str] = lambda p: p,
    learned: Callable[[list[str], list[list[int]]], np.ndarray] | None = None,
    temperature: float = 1.0,
) -> dict[str, float]:
    """The columns of the module docstring for one response per prompt.

    Args:
        policy: The policy scored (its first model).
        reference: The frozen reference (the base model).
        task: Gives lengths and the ground truth.
        prompts: Held-out prompts.
        seed: Sampling seed (fixed per evaluation round).
        shown: What the policy is given for a prompt (a conditioning prefix).
        learned: ``(prompts, response ids) -> scores`` of the learned reward model.
        temperature: Sampling temperature (1: the policy's own distribution).
    """
    prompts = list(prompts)
    lengths = task.response_lengths(len(prompts), seed).tolist()
    ids = policy.generate([shown(p) for p in prompts], lengths, seed, temperature=temperature)
    texts = policy.decode(ids)
    true = task.score(prompts, texts)
    out: dict[str, Any] = {
        TRUE_RETURN: float(true.mean()),
        TRUE_RETURN_STD: float(true.std()),
        "response_tokens": float(np.mean([len(r) for r in ids])),
        "distinct_1": distinct_n(ids, 1),
        "distinct_2": distinct_n(ids, 2),
    }
    out["learned_score"] = float(np.mean(learned(prompts, ids))) if learned else float("nan")
    diff = 0.0
    tokens = sum(len(r) for r in ids)
    for start in range(0, len(prompts), 64):
        rows = slice(start, start + 64)
        pi = policy.encode([shown(p) for p in prompts[rows]], ids[rows])
        ref = reference.encode(prompts[rows], ids[rows])
        diff += float(
            sequence_log_prob(policy.models[0].eval(), vars(pi)).sum()
            - sequence_log_prob(reference.models[0].eval(), vars(ref)).sum()
        )
    out["kl_per_token"] = diff / tokens if tokens else float("nan")
    return out


#: Held-out prompts per evaluation round.
EVAL_PROMPTS = 128


class TextEvaluator:
    """Text tasks: :func:`evaluate_text` on held-out prompts, seeded by the round.

    The prompts are the same every round (``test`` split, the run's seed); sampling is
    seeded by the round, so a resumed run scores as an uninterrupted one. The agent
    provides ``text_policy()`` and its reward model's ``rm_accuracy`` (on pairs of
    held-out prompts, measured when it was fit).

    Args:
        task: The text task.
        spec: The run.
    """

    def __init__(self, task: TextTask, spec: RunSpec) -> None:
        self.task, self.spec = task, spec
        self.prompts = task.prompts("test", EVAL_PROMPTS, spec.seed)

    def evaluate(self, agent: Any, reward_model: Any, round_index: int) -> dict[str, float]:
        """See :class:`prefbench.benchmarks.evaluation.Evaluator`."""
        parts = agent.text_policy()
        row = evaluate_text(
            parts["policy"],
            parts["reference"],
            self.task,
            self.prompts,
            int31_seed(self.spec.seed, f"text_eval{round_index}"),
            shown=parts["shown"],
            learned=parts["learned"],
        )
        row[RM_ACCURACY] = float(getattr(agent, "rm_accuracy", float("nan")))
        return row

    def close(self) -> None:
        """Nothing to release."""
