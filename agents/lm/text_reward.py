"""The learned reward of the text track: the control tracks' ensemble on token sequences.

:func:`fit_text_reward` labels ``label_budget`` pairs of two responses to one prompt
(uniformly drawn from the prompts not held out) with a teacher, fits a
:class:`~prefbench.agents.reward_model.RewardModel` with the ``tokens`` encoder, and
measures it: accuracy on decided pairs of held-out prompts (``rm_accuracy``) and the
Spearman correlation of learned and ground-truth scores over all samples
(``rm_spearman``). :func:`learned_scores` gives every sample's score (each member's
output normalised, then averaged, as for control), and :func:`zscore` standardises
scores by their mean and deviation over the labelled samples (the authors' z-scores).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from prefbench.agents.lm.policy import CausalLMPolicy
from prefbench.agents.lm.samples import (
    TextSamples,
    ask_about,
    same_prompt_pairs,
    sequence_ids,
    text_pairs,
)
from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.envs.data import PreferenceDataset
from prefbench.envs.seeding import make_rng
from prefbench.envs.teachers import CalibratedTeacher, ReturnScale, Teacher


def _default_model() -> RewardModelConfig:
    return RewardModelConfig(
        encoder="tokens",
        encoder_kwargs={"n_embd": 64, "n_layer": 2, "n_head": 2},
        use_actions=False,
        input_norm=False,
        lr=1e-3,
        batch_size=32,
    )


@dataclass(frozen=True)
class TextRewardConfig:
    """How the text reward model is fit.

    Attributes:
        epochs: Passes over the labels.
        test_prompts: Share of prompts held out of labelling (accuracy pairs come from them).
        test_pairs: Accuracy pairs.
        model: The ensemble's settings; ``encoder_kwargs`` gets the policy's vocabulary.
    """

    epochs: int = 60
    test_prompts: float = 0.2
    test_pairs: int = 500
    model: RewardModelConfig = field(default_factory=_default_model)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.test_pairs < 1:
            raise ValueError("epochs and test_pairs must be >= 1")
        if not 0 < self.test_prompts < 1:
            raise ValueError(f"test_prompts must be in (0, 1), got {self.test_prompts}")
        if self.model.encoder != "tokens":
            raise ValueError("the text reward model needs the tokens encoder")


@dataclass(frozen=True)
class TextReward:
    """A fitted text reward model and what was measured.

    Attributes:
        model: The ensemble.
        labelled: ``(L,)`` sample indices in labelled pairs (z-scores refer to them).
        metrics: ``rm_accuracy``, ``rm_spearman``, ``labels``.
    """

    model: RewardModel
    labelled: np.ndarray
    metrics: dict[str, float]


def _subset(samples: TextSamples, prompts: np.ndarray) -> tuple[TextSamples, np.ndarray]:
    """The samples of ``prompts`` (all prompts kept, so indices stay valid) and their rows."""
    keep = np.flatnonzero(np.isin(samples.prompt_index, prompts))
    return replace(
        samples,
        prompt_index=samples.prompt_index[keep],
        responses=tuple(samples.responses[i] for i in keep),
        response_ids=tuple(samples.response_ids[i] for i in keep),
        scores=samples.scores[keep],
    ), keep


def fit_text_reward(
    policy: CausalLMPolicy,
    samples: TextSamples,
    teacher: Teacher,
    label_budget: int,
    config: TextRewardConfig,
    seed: int,
    device: str = "cpu",
) -> TextReward:
    """Label, fit and measure (module docstring).

    Raises:
        ValueError: For a label budget below 1.
    """
    if label_budget < 1:
        raise ValueError(f"label_budget must be >= 1, got {label_budget}")
    rng = make_rng(seed, "text_reward")
    order = rng.permutation(len(samples.prompts))
    n_test = max(1, round(config.test_prompts * len(order)))
    test_prompts, train_prompts = order[:n_test], order[n_test:]
    train, train_rows = _subset(samples, train_prompts)
    test, _ = _subset(samples, test_prompts)
    if isinstance(teacher, CalibratedTeacher):
        scores = train.scores
        teacher.calibrate(ReturnScale(float(np.mean(np.abs(scores))), float(scores.std()) or 1.0))
    pairs_idx = same_prompt_pairs(train, label_budget, rng)
    pairs = text_pairs(policy, train, pairs_idx)
    labels = ask_about(teacher, pairs, train, pairs_idx)
    kwargs: dict[str, Any] = {"vocab_size": len(policy.tokenizer), **config.model.encoder_kwargs}
    model_config = replace(config.model, encoder_kwargs=kwargs)
    model = RewardModel((policy.max_length,), 0, model_config, seed=seed, device=device)
    data = PreferenceDataset.from_labels(pairs, labels)
    if len(data) == 0:
        raise ValueError("the teacher answered none of the pairs")
    model.fit(data, epochs=config.epochs)
    labelled = np.unique(train_rows[pairs_idx.reshape(-1)])
    # Output normalisation from the labelled samples, as control does from its clips.
    no_acts = np.zeros((len(labelled), 0), np.float32)
    model.update_normalization(sequence_ids(policy, samples, labelled), no_acts)
    test_pairs = text_pairs(policy, test, same_prompt_pairs(test, config.test_pairs, rng))
    test_prefs = np.sign(test_pairs.true_rewards[:, 0, 0] - test_pairs.true_rewards[:, 1, 0])
    accuracy = model.preference_accuracy(test_pairs, (test_prefs + 1) / 2)
    learned = learned_scores(model, policy, samples)
    rho = spearmanr(learned, samples.scores).statistic
    metrics = {
        "rm_accuracy": float(accuracy),
        "rm_spearman": float(rho) if math.isfinite(rho) else math.nan,
        "labels": float(len(data)),
    }
    return TextReward(model, labelled, metrics)


def learned_scores(
    model: RewardModel, policy: CausalLMPolicy, samples: TextSamples, batch: int = 256
) -> np.ndarray:
    """``(N,)`` float64 learned score of every sample."""
    out = []
    for start in range(0, len(samples), batch):
        rows = np.arange(start, min(start + batch, len(samples)))
        out.append(model.reward(sequence_ids(policy, samples, rows), np.zeros((len(rows), 0))))
    return np.concatenate(out).astype(np.float64)


def zscore(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``scores`` standardised by the mean and standard deviation of ``reference``."""
    ref = np.asarray(reference, dtype=np.float64)
    std = ref.std()
    return (np.asarray(scores, dtype=np.float64) - ref.mean()) / (std if std > 0 else 1.0)


def response_scorer(
    model: RewardModel, policy: CausalLMPolicy, reference: np.ndarray
) -> Callable[[list[str], list[list[int]]], np.ndarray]:
    """``(prompts, response ids) -> (B,)`` learned scores z-scored by ``reference`` scores.

    Online methods (PPO, best-of-n) score fresh responses on the scale the offline
    methods' samples were z-scored on.
    """

    def score(prompts: list[str], ids: list[list[int]]) -> np.ndarray:
        samples = TextSamples(
            tuple(prompts),
            np.arange(len(prompts), dtype=np.int64),
            tuple("" for _ in prompts),
            tuple(tuple(r) for r in ids),
            np.zeros(len(prompts)),
        )
        return zscore(learned_scores(model, policy, samples), reference)

    return score
