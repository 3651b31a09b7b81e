"""A sentiment scorer trained here: the ground truth of ``imdb-positive``.

RL4LMs, trl and the DPO paper score IMDB continuations with a pretrained sentiment
classifier from a model hub; nothing can be downloaded here, so the scorer is trained on
this machine from the labelled reviews: logistic regression on binary unigram and bigram
features (words of at least ``min_count`` training reviews, at most ``max_features``),
L2-regularised, fit by L-BFGS (deterministic: same data, same weights). Its held-out
accuracy on the ``test`` split is recorded with it. A text's score is the classifier's
log-odds of "positive" (trl's IMDB example rewards the positive logit too).

Fitting takes seconds; the fitted scorer is cached as ``.npz`` under
:func:`prefbench.envs.cache.cache_dir` by a key of its settings and data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import sparse
from scipy.optimize import minimize

from prefbench.envs.cache import cache_dir
from prefbench.envs.data import CheckpointError
from prefbench.envs.files import atomic_path
from prefbench.envs.reviews import Reviews, load_reviews

_WORD = re.compile(r"[a-z0-9']+|[!?]")
FORMAT = "prefbench.sentiment.v1"


def ngrams(text: str) -> list[str]:
    """Lowercased words and ``!``/``?``, then the bigrams of consecutive ones."""
    words = _WORD.findall(text.lower())
    return words + [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]


@dataclass(frozen=True)
class SentimentConfig:
    """Settings of the scorer.

    Attributes:
        min_count: A feature needs this many training reviews containing it.
        max_features: Keep the most frequent features up to this many.
        l2: L2 penalty on the weights (not the bias), per training review.
        max_iter: L-BFGS iterations.
    """

    min_count: int = 5
    max_features: int = 100_000
    l2: float = 1e-3
    max_iter: int = 300

    def __post_init__(self) -> None:
        if self.min_count < 1 or self.max_features < 1 or self.max_iter < 1:
            raise ValueError("min_count, max_features and max_iter must be >= 1")
        if not self.l2 >= 0:
            raise ValueError(f"l2 must be >= 0, got {self.l2}")


class SentimentScorer:
    """Log-odds that a text is a positive review.

    Args:
        vocabulary: Feature strings, in weight order.
        weights: ``(F,)`` float64 weights of the features.
        bias: The intercept.
        info: Settings, data source and held-out accuracy, for the record.
    """

    def __init__(
        self, vocabulary: Sequence[str], weights: np.ndarray, bias: float, info: dict
    ) -> None:
        if len(vocabulary) != len(weights):
            raise ValueError(f"{len(vocabulary)} features but {len(weights)} weights")
        self.vocabulary = list(vocabulary)
        self.index = {f: i for i, f in enumerate(self.vocabulary)}
        self.weights = np.asarray(weights, dtype=np.float64)
        self.bias = float(bias)
        self.info = dict(info)

    def features(self, texts: Iterable[str]) -> sparse.csr_matrix:
        """``(n, F)`` binary presence of each feature in each text."""
        return _features(texts, self.index)

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """``(n,)`` float64 log-odds of "positive" for each text."""
        return self.features(texts) @ self.weights + self.bias

    @property
    def test_accuracy(self) -> float:
        """Accuracy on the ``test`` split's reviews."""
        return float(self.info["test_accuracy"])


def _features(texts: Iterable[str], index: dict[str, int]) -> sparse.csr_matrix:
    indptr, cols = [0], []
    for text in texts:
        cols.extend(sorted({index[g] for g in ngrams(text) if g in index}))
        indptr.append(len(cols))
    data = np.ones(len(cols), dtype=np.float64)
    return sparse.csr_matrix(
        (data, np.asarray(cols, dtype=np.int64), np.asarray(indptr)),
        shape=(len(indptr) - 1, len(index)),
    )


def fit_sentiment(
    config: SentimentConfig | None = None,
    train: Reviews | None = None,
    test: Reviews | None = None,
) -> SentimentScorer:
    """Fit the scorer on ``train`` and measure it on ``test`` (default: the IMDB splits)."""
    config = config or SentimentConfig()
    train = train or load_reviews("train")
    test = test or load_reviews("test")
    counts: Counter[str] = Counter()
    for text in train.texts:
        counts.update(set(ngrams(text)))
    kept = sorted(
        (f for f, c in counts.items() if c >= config.min_count), key=lambda f: (-counts[f], f)
    )[: config.max_features]
    vocabulary = sorted(kept)
    index = {f: i for i, f in enumerate(vocabulary)}
    x = _features(train.texts, index)
    y = train.labels.astype(np.float64)
    n = x.shape[0]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        # Mean logistic loss, stably: log(1 + e^z) - y z.
        value = np.logaddexp(0.0, z).mean() - (y * z).mean() + 0.5 * config.l2 * w @ w
        p = 0.5 * (1.0 + np.tanh(0.5 * z))  # the sigmoid, without overflow
        g = (p - y) / n
        grad = np.append(x.T @ g + config.l2 * w, g.sum())
        return float(value), grad

    result = minimize(
        loss,
        np.zeros(len(vocabulary) + 1),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": config.max_iter},
    )
    w, b = result.x[:-1], float(result.x[-1])
    scorer = SentimentScorer(vocabulary, w, b, {})
    test_acc = float(((scorer.score(test.texts) > 0) == (test.labels == 1)).mean())
    train_acc = float(((x @ w + b > 0) == (y == 1)).mean())
    scorer.info = {
        "config": asdict(config),
        "source": train.source,
        "train_reviews": len(train),
        "test_reviews": len(test),
        "features": len(vocabulary),
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "iterations": int(result.nit),
    }
    return scorer


def _key(config: SentimentConfig) -> str:
    source = load_reviews("train").source  # names the data file's hash
    text = json.dumps({"format": FORMAT, "source": source, **asdict(config)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def save_scorer(scorer: SentimentScorer, path: str | Path) -> None:
    """Write ``scorer`` to ``path`` (``.npz``, atomically)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(
            handle,
            format=np.array(FORMAT),
            vocabulary=np.array(scorer.vocabulary),
            weights=scorer.weights,
            bias=np.array(scorer.bias),
            info=np.array(json.dumps(scorer.info)),
        )


def load_scorer(path: str | Path) -> SentimentScorer:
    """Read a scorer written by :func:`save_scorer`.

    Raises:
        CheckpointError: If the file is missing, corrupt or not a scorer.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) != FORMAT:
                raise ValueError(f"format {data['format']}")
            return SentimentScorer(
                [str(v) for v in data["vocabulary"]],
                data["weights"],
                float(data["bias"]),
                json.loads(str(data["info"])),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a prefbench sentiment scorer ({exc})") from exc


def sentiment_scorer(config: SentimentConfig | None = None) -> SentimentScorer:
    """The cached scorer of ``config`` (fitting and caching it the first time)."""
    config = config or SentimentConfig()
    path = cache_dir("text") / f"imdb-sentiment-{_key(config)}.npz"
    if path.is_file():
        return load_scorer(path)
    scorer = fit_sentiment(config)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_scorer(scorer, path)
    return scorer
