"""Aggregates and report outputs."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from prefbench.benchmarks.report import (
    iqm,
    iqm_stratified_ci,
    load_records,
    make_tables,
    mean_ci,
    write_report,
)
from prefbench.benchmarks.runner import RECORD_COLUMNS, normalized_scores


def test_iqm_is_mean_of_middle_half():
    assert iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert iqm(np.array([0, 0, 1, 1, 1, 1, 100, -100])) == pytest.approx(0.75)


def test_mean_ci_matches_student_t():
    x = np.array([1.0, 2.0, 4.0])
    mean, half = mean_ci(x)
    expected = stats.t.ppf(0.975, 2) * np.std(x, ddof=1) / math.sqrt(3)
    assert mean == pytest.approx(7 / 3)
    assert half == pytest.approx(expected)
    single_mean, single_half = mean_ci(np.array([5.0]))
    assert single_mean == 5.0 and math.isnan(single_half)


def test_stratified_bootstrap_keeps_task_composition():
    # Constant scores within each task: a stratified resample can only reproduce them,
    # so the interval collapses to the point. Pooling runs across tasks would not.
    per_task = [np.full(4, 0.0), np.full(4, 1.0), np.full(4, 2.0)]
    point, low, high = iqm_stratified_ci(per_task, reps=500, seed=0)
    assert point == pytest.approx(1.0)
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)


def test_stratified_bootstrap_interval_is_reproducible_and_brackets_point():
    rng = np.random.default_rng(1)
    per_task = [rng.normal(0.5, 0.3, 5), rng.normal(1.0, 0.2, 5)]
    a = iqm_stratified_ci(per_task, reps=1000, seed=3)
    b = iqm_stratified_ci(per_task, reps=1000, seed=3)
    assert a == b
    point, low, high = a
    assert low < point < high
    one_run = iqm_stratified_ci([np.array([0.3])], reps=100)
    assert one_run[0] == pytest.approx(0.3) and math.isnan(one_run[1])


def _records():
    rows = []
    finals = {
        ("t1", "random", "", 0): [0.0, 10.0],
        ("t1", "ppo", "", 0): [100.0, 110.0],
        ("t1", "pref", "oracle", 50): [50.0, 60.0],
        ("t1", "pref", "oracle", 100): [100.0, 120.0],
        ("t2", "random", "", 0): [-10.0, -10.0],
        ("t2", "ppo", "", 0): [10.0, 10.0],
        ("t2", "pref", "oracle", 50): [0.0, 10.0],
        ("t2", "pref", "oracle", 100): [10.0, 10.0],
    }
    for (task, agent, teacher, labels), values in finals.items():
        for seed, value in enumerate(values):
            cell = f"{task}-{agent}-{labels}-s{seed}"
            for step, ret in ((0, -50.0), (100, value)):
                rows.append(
                    {
                        "suite": "s",
                        "cell": cell,
                        "task": task,
                        "agent": agent,
                        "agent_name": agent,
                        "teacher": teacher,
                        "label_budget": labels,
                        "seed": seed,
                        "steps": step,
                        "labels_used": labels,
                        "true_return": ret,
                        "d4rl_score": math.nan,
                        "rm_accuracy": 0.9 if teacher else math.nan,
                        "wall_time": 1.0,
                        "prefbench": "0",
                        "torch": "0",
                        "stable_baselines3": "0",
                        "gymnasium": "0",
                        "git_commit": "x",
                    }
                )
    frame = pd.DataFrame(rows)
    frame["normalized_score"] = normalized_scores(frame, "ppo", "random")
    return frame[list(RECORD_COLUMNS)]


def test_normalized_scores_use_mean_final_baselines():
    frame = _records()
    final = frame[frame["steps"] == 100].set_index("cell")["normalized_score"]
    # t1: random mean 5, ppo mean 105 -> (R - 5) / 100
    assert final["t1-pref-50-s0"] == pytest.approx(0.45)
    assert final["t1-pref-100-s1"] == pytest.approx(1.15)
    # t2: random -10, ppo 10 -> (R + 10) / 20
    assert final["t2-pref-50-s1"] == pytest.approx(1.0)
    assert final["t1-random-0-s0"] == pytest.approx(-0.05)


def test_tables_and_report_files(tmp_path):
    frame = _records()
    tables = make_tables(frame)
    row = tables.per_task.query(
        "task == 't1' and agent_name == 'pref' and label_budget == 100"
    ).iloc[0]
    assert row["true_return"] == pytest.approx(110.0)
    assert row["runs"] == 2 and row["rm_accuracy"] == pytest.approx(0.9)
    agg = tables.aggregate.query("agent_name == 'pref' and label_budget == 50").iloc[0]
    scores = np.array([0.45, 0.55, 0.5, 1.0])
    assert agg["iqm"] == pytest.approx(iqm(scores))
    assert agg["tasks"] == 2 and agg["runs"] == 4

    (tmp_path / "suite.json").write_text(json.dumps({"suite": "s", "version": 1, "format": 1}))
    frame.to_csv(tmp_path / "records.csv", index=False)
    markdown = write_report(tmp_path)
    assert "### t1" in markdown and "IQM" in markdown
    assert "| pref | oracle | 100 | 2 | 110.0 ±" in markdown
    assert (tmp_path / "report.md").read_text().startswith("# s (suite version 1)")
    assert r"\begin{tabular}" in (tmp_path / "report.tex").read_text()
    for name in ("curves_t1.png", "curves_t2.png", "labels_t1.png", "labels_t2.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    # Accuracy curves for tasks whose preference runs measured accuracy.
    measured = set(frame.loc[np.isfinite(frame["rm_accuracy"]), "task"])
    assert measured
    for task in ("t1", "t2"):
        assert (tmp_path / f"accuracy_{task}.png").is_file() == (task in measured)


def test_load_records_rejects_non_results(tmp_path):
    with pytest.raises(ValueError, match="not a prefbench results folder"):
        load_records(tmp_path)
    (tmp_path / "suite.json").write_text("{}")
    (tmp_path / "records.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="lacks columns"):
        load_records(tmp_path)
