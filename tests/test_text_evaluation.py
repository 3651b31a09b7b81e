"""The text evaluation's pure parts: Spearman, best-of-n selection and its KL, columns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("transformers")

from prefbench.benchmarks.columns import (  # noqa: E402
    CONDITIONS,
    TEXT_RECORD_METRICS,
    condition_column,
)
from prefbench.benchmarks.runner import build_records  # noqa: E402
from prefbench.benchmarks.text_evaluation import (  # noqa: E402
    _best_of,
    best_of_n_kl,
    spearman,
)


def test_spearman_on_hand_computed_ranks():
    # ranks (1, 2, 3) vs (1, 3, 2): 1 - 6 * 2 / (3 * 8) = 0.5
    assert spearman([1, 2, 3], [10, 30, 20]) == pytest.approx(0.5)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # ties take average ranks: (1.5, 1.5, 3) vs (1, 2, 3) -> corr 0.866
    assert spearman([5, 5, 7], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 2, 3], [4, 4, 4]))


def test_best_of_n_kl_is_the_analytic_value():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)
    assert best_of_n_kl(16) == pytest.approx(math.log(16) - 15 / 16)


class _ListPolicy:
    """Generates fixed responses in order; records what it was asked."""

    def __init__(self, responses):
        self.responses, self.asked = responses, None

    def generate(self, shown, lengths, seed, temperature=1.0):
        self.asked = (list(shown), list(lengths))
        return self.responses[: len(shown)]


def test_best_of_keeps_each_prompts_highest_learned_score():
    responses = [[1], [2, 2], [3], [4, 4, 4], [5], [6]]  # 2 prompts x 3 samples, prompt-major
    policy = _ListPolicy(responses)

    def learned(prompts, ids):  # score = sum of tokens, minus 10 on the second prompt
        penalty = [10 if p == "b" else 0 for p in prompts]
        return np.array([sum(r) - k for r, k in zip(ids, penalty, strict=True)])

    best = _best_of(policy, ["<a>", "<b>"], ["a", "b"], [5, 7], 0, learned, 3)
    assert best == [[2, 2], [4, 4, 4]]
    assert policy.asked == (["<a>"] * 3 + ["<b>"] * 3, [5, 5, 5, 7, 7, 7])


def test_condition_columns_are_named_once():
    assert condition_column(5.0) == "true_return_z+5"
    assert condition_column(-2.0) == "true_return_z-2"
    assert condition_column(0.0) == "true_return_z+0"
    assert len(CONDITIONS) >= 5
    for value in CONDITIONS:
        assert condition_column(value) in TEXT_RECORD_METRICS


def test_records_carry_a_suites_text_metrics(tmp_path):
    import json

    from prefbench.benchmarks.lm_suites import LM_QUICK

    cells = LM_QUICK.cells(seeds=1)[:2]
    for i, cell in enumerate(cells):
        folder = tmp_path / "cells" / cell.key
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text("{}")
        (folder / "config.json").write_text(json.dumps({"versions": {}}))
        row = {"steps": 0, "labels_used": 0, "true_return": 0.1 * i, "rm_accuracy": 0.5}
        row |= {"wall_time": 1.0, "kl_per_token": 0.25 * i, "flops": 1e9}
        pd.DataFrame([row]).to_csv(folder / "metrics.csv", index=False)
    records = build_records(tmp_path, LM_QUICK, cells)
    assert list(records.columns[-len(TEXT_RECORD_METRICS) :]) == list(TEXT_RECORD_METRICS)
    assert records["kl_per_token"].tolist() == [0.0, 0.25]
    assert records["flops"].tolist() == [1e9, 1e9]
    assert records["condition_spearman"].isna().all()  # a run without the column: NaN
