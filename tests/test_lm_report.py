"""The text track's report: return at matched KL, the method and conditioning tables."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from prefbench.benchmarks.columns import (
    CONDITIONS,
    RECORD_COLUMNS,
    TEXT_RECORD_METRICS,
    condition_column,
)
from prefbench.benchmarks.lm_report import condition_table, return_at_kl, text_table
from prefbench.benchmarks.report import write_report


def _path(kls, returns):
    return pd.DataFrame({"steps": range(len(kls)), "kl_per_token": kls, "true_return": returns})


def test_return_at_kl_interpolates_along_the_training_path():
    path = _path([0.0, 0.1, 0.3], [0.5, 0.6, 0.8])
    assert return_at_kl(path, 0.2) == pytest.approx(0.7)  # halfway between 0.1 and 0.3
    assert return_at_kl(path, 0.1) == pytest.approx(0.6)
    assert math.isnan(return_at_kl(path, 0.5))  # never reached
    assert return_at_kl(_path([0.4, 0.5], [0.9, 1.0]), 0.2) == pytest.approx(0.9)  # starts past
    # the first crossing counts, even if the path comes back below
    back = _path([0.0, 0.4, 0.1, 0.5], [0.0, 0.4, 9.0, 9.0])
    assert return_at_kl(back, 0.2) == pytest.approx(0.2)


def _records() -> pd.DataFrame:
    """Two seeds of sft (no training), dt and ppo; dt conditioned, ppo 10x dt's FLOPs."""
    rows = []
    for agent, kl_end, ret_end, flops in (
        ("lm-sft", 0.0, 0.5, 0.0),
        ("lm-dt", 0.2, 0.7, 1e9),
        ("lm-ppo", 0.4, 0.9, 1e10),
    ):
        for seed in (0, 1):
            cell = f"{agent}-s{seed}"
            steps = [0] if agent == "lm-sft" else [0, 100]
            for step in steps:
                frac = step / 100
                row = dict.fromkeys(RECORD_COLUMNS, "")
                row |= dict.fromkeys(TEXT_RECORD_METRICS, math.nan)
                row |= {
                    "suite": "lm-quick",
                    "cell": cell,
                    "task": "digit-parity",
                    "agent": agent,
                    "agent_name": agent,
                    "teacher": "" if agent == "lm-sft" else "oracle",
                    "label_budget": 0 if agent == "lm-sft" else 200,
                    "seed": seed,
                    "steps": step,
                    "labels_used": 0,
                    "true_return": 0.5 + frac * (ret_end - 0.5) + 0.01 * seed,
                    "rm_accuracy": 0.8,
                    "wall_time": 10.0,
                    "kl_per_token": frac * kl_end,
                    "learned_score": 1.0,
                    "distinct_2": 0.5,
                    "flops": frac * flops,
                }
                if agent == "lm-dt":
                    for value in CONDITIONS:
                        row[condition_column(value)] = 0.5 + 0.05 * value
                    row["condition_spearman"] = 1.0
                rows.append(row)
    frame = pd.DataFrame(rows)
    frame["normalized_score"] = (frame["true_return"] - 0.505) / (0.905 - 0.505)
    return frame


def test_text_table_compares_at_matched_kl_and_ppo_compute():
    table = text_table(_records(), "lm-ppo", "lm-sft").set_index("agent_name")
    assert table["matched_kl"].iloc[0] == pytest.approx(0.2)  # dt's final KL, the smallest
    dt, ppo = table.loc["lm-dt"], table.loc["lm-ppo"]
    assert dt["flops_share"] == pytest.approx(0.1) and ppo["flops_share"] == pytest.approx(1.0)
    # ppo's path reaches KL 0.2 halfway: return 0.5 + 0.5 * 0.4, seeds 0.70 and 0.71
    assert ppo["true_return_at_kl"][0] == pytest.approx(0.705)
    assert dt["true_return_at_kl"][0] == pytest.approx(0.705)
    assert ppo["normalized_score"][0] == pytest.approx(1.0)
    assert math.isnan(table.loc["lm-sft", "true_return_at_kl"][0])  # sft never moves


def test_condition_table_and_the_report_files(tmp_path):
    records = _records()
    conditions = condition_table(records)
    assert conditions["agent_name"].tolist() == ["lm-dt"]
    assert conditions[condition_column(5.0)].iloc[0][0] == pytest.approx(0.75)
    (tmp_path / "suite.json").write_text(json.dumps({"suite": "lm-quick", "version": 1}))
    records.to_csv(tmp_path / "records.csv", index=False)
    markdown = write_report(tmp_path)
    assert "return at matched KL" in markdown and "Spearman" in markdown
    assert "| lm-dt | 200 | 2 |" in markdown and "10.0% |" in markdown
    for name in ("frontier", "compute", "conditions"):
        assert (tmp_path / f"{name}_digit-parity.png").stat().st_size > 1000
    assert np.isfinite(conditions["runs"]).all()
