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

Best-of-``n`` (``best_of > 1``) samples ``n`` responses per prompt and keeps the one the
learned reward scores highest; its ``kl_per_token`` is the analytic value
``(log n - (n - 1) / n)`` per response (Stiennon et al. 2020) divided by the mean kept
response length, since the selected distribution has no tractable likelihood.

A conditioned policy (Decision-Transformer alignment) is also scored at each value of
:data:`CONDITIONS`: ``true_return_z<value>`` columns and ``condition_spearman``, the
Spearman correlation of achieved score against the conditioning value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from prefbench.agents.lm.policy import CausalLMPolicy, sequence_log_prob
from prefbench.benchmarks.columns import (
    CONDITION_SPEARMAN,
    CONDITIONS,
    DISTINCT_1,
    DISTINCT_2,
    KL_PER_TOKEN,
    LEARNED_SCORE,
    RM_ACCURACY,
    TRUE_RETURN,
    TRUE_RETURN_STD,
    condition_column,
)
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.envs.seeding import int31_seed
from prefbench.envs.text_tasks import TextTask


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties; NaN if either is constant)."""
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def best_of_n_kl(n: int) -> float:
    """The KL of best-of-``n`` selection to the sampling distribution, ``log n - (n-1)/n``."""
    return float(np.log(n) - (n - 1) / n)


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
    best_of: int = 1,
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
        best_of: Responses sampled per prompt, the best by ``learned`` kept (1: plain).

    Raises:
        ValueError: If ``best_of`` is not >= 1, or is > 1 without ``learned``.
    """
    if best_of < 1 or (best_of > 1 and learned is None):
        raise ValueError("best_of must be >= 1, and best-of-n needs a learned reward")
    prompts = list(prompts)
    seen = [shown(p) for p in prompts]
    lengths = task.response_lengths(len(prompts), seed).tolist()
    if best_of > 1:
        assert learned is not None
        ids = _best_of(policy, seen, prompts, lengths, seed, learned, best_of)
    else:
        ids = policy.generate(seen, lengths, seed, temperature=temperature)
    true = task.score(prompts, policy.decode(ids))
    out: dict[str, Any] = {
        TRUE_RETURN: float(true.mean()),
        TRUE_RETURN_STD: float(true.std()),
        "response_tokens": float(np.mean([len(r) for r in ids])),
        DISTINCT_1: distinct_n(ids, 1),
        DISTINCT_2: distinct_n(ids, 2),
        LEARNED_SCORE: float(np.mean(learned(prompts, ids))) if learned else float("nan"),
    }
    tokens = sum(len(r) for r in ids)
    if not tokens:
        return {**out, KL_PER_TOKEN: float("nan")}
    if best_of > 1:
        return {**out, KL_PER_TOKEN: best_of_n_kl(best_of) * len(ids) / tokens}
    diff = 0.0
    for start in range(0, len(prompts), 64):
        rows = slice(start, start + 64)
        pi = policy.encode(seen[rows], ids[rows])
        ref = reference.encode(prompts[rows], ids[rows])
        diff += float(
            sequence_log_prob(policy.models[0].eval(), vars(pi)).sum()
            - sequence_log_prob(reference.models[0].eval(), vars(ref)).sum()
        )
    return {**out, KL_PER_TOKEN: diff / tokens}


def _best_of(
    policy: CausalLMPolicy,
    shown: list[str],
    prompts: list[str],
    lengths: list[int],
    seed: int,
    learned: Callable[[list[str], list[list[int]]], np.ndarray],
    n: int,
) -> list[list[int]]:
    """Per prompt, the best of ``n`` sampled responses by the learned reward."""
    rep = [i for i in range(len(prompts)) for _ in range(n)]  # prompt-major: (P * n,)
    ids = policy.generate([shown[i] for i in rep], [lengths[i] for i in rep], seed)
    scores = np.asarray(learned([prompts[i] for i in rep], ids)).reshape(len(prompts), n)
    best = scores.argmax(axis=1)
    return [ids[i * n + int(j)] for i, j in enumerate(best)]


#: Held-out prompts per evaluation round.
EVAL_PROMPTS = 128


class TextEvaluator:
    """Text tasks: :func:`evaluate_text` on held-out prompts, seeded by the round.

    The prompts are the same every round (``test`` split, the run's seed); sampling is
    seeded by the round, so a resumed run scores as an uninterrupted one. The agent
    provides ``text_policy()`` and its reward model's ``rm_accuracy`` (on pairs of
    held-out prompts, measured when it was fit). A policy with a ``conditioned``
    part (``condition -> shown``) is also scored at every value of :data:`CONDITIONS`.

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
        seed = int31_seed(self.spec.seed, f"text_eval{round_index}")
        row = evaluate_text(
            parts["policy"],
            parts["reference"],
            self.task,
            self.prompts,
            seed,
            shown=parts["shown"],
            learned=parts["learned"],
            best_of=int(parts.get("best_of", 1)),
        )
        conditioned = parts.get("conditioned")
        if conditioned is not None:
            achieved = []
            for value in CONDITIONS:
                # The same prompts and sampling seed at every value: only the condition moves.
                at = evaluate_text(
                    parts["policy"],
                    parts["reference"],
                    self.task,
                    self.prompts,
                    seed,
                    shown=conditioned(value),
                )
                row[condition_column(value)] = at[TRUE_RETURN]
                achieved.append(at[TRUE_RETURN])
            row[CONDITION_SPEARMAN] = spearman(CONDITIONS, achieved)
        row[RM_ACCURACY] = float(getattr(agent, "rm_accuracy", float("nan")))
        return row

    def close(self) -> None:
        """Nothing to release."""
