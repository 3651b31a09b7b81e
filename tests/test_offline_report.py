"""The offline report: learner-by-reward-source tables and the target checks."""

import math

import numpy as np
import pandas as pd
import pytest

from prefbench.benchmarks.offline_report import (
    ALL_TASKS,
    agent_roles,
    is_offline,
    source_table,
    target_checks,
    to_markdown,
)
from prefbench.benchmarks.report import iqm_stratified_ci


def _records(
    finals: dict[str, list[float]],
    tasks=("hopper-medium-replay",),
    spearman=0.95,
    budgets=(500,),
    bar=None,
):
    """Records of two evaluations per cell; the last one's score is given per agent.

    ``pref-*`` agents get a cell per label budget; ``rm_accuracy`` is ``budget / 1e4``.
    """
    rows = []
    for task in tasks:
        for agent, scores in finals.items():
            for budget in budgets if agent.startswith("pref-") else (0,):
                for seed, score in enumerate(scores):
                    for steps, value in ((0, 0.0), (1000, score)):
                        rows.append(
                            {
                                "task": task,
                                "cell": f"{task}-{agent}-{budget}-{seed}",
                                "agent": agent,
                                "agent_name": agent,
                                "label_budget": budget,
                                "seed": seed,
                                "steps": steps,
                                "normalized_score": value,
                                "rm_accuracy": budget / 1e4 if budget else math.nan,
                                "rm_return_spearman": spearman if budget else math.nan,
                            }
                        )
    frame = pd.DataFrame(rows)
    if bar is not None:  # cells that logged the true reward's Spearman
        frame["rm_return_spearman_true_reward"] = np.where(frame["label_budget"] > 0, bar, np.nan)
    return frame


FINALS = {
    "bc": [0.10, 0.12, 0.11],
    "mle-filter": [0.40, 0.42, 0.41],
    "dt": [0.60, 0.62, 0.61],
    "pref-dt": [0.55, 0.56, 0.57],
    "zero-dt": [0.10, 0.11, 0.12],
    "random-dt": [0.50, 0.50, 0.50],
    "iql": [0.50, 0.50, 0.50],
    "pref-iql": [0.40, 0.40, 0.40],
    "zero-iql": [0.45, 0.45, 0.45],
}


def test_roles_come_from_the_registered_configs():
    roles = agent_roles(["bc", "pref-iql", "zero-dt", "random-rwr", "mle-filter", "ppo", "nope"])
    assert roles == {
        "bc": ("bc", "none"),
        "pref-iql": ("iql", "learned"),
        "zero-dt": ("dt", "zero"),
        "random-rwr": ("rwr", "random"),
        "mle-filter": ("mle-filter", "true"),
    }
    assert is_offline(_records({"bc": [0.1]}))
    assert not is_offline(_records({"ppo": [0.1]}))


def test_table_holds_the_final_scores_iqm_and_interval():
    table = source_table(_records(FINALS))
    row = table[(table["learner"] == "dt") & (table["column"] == "learned (500)")].iloc[0]
    point, low, high = iqm_stratified_ci([np.array(FINALS["pref-dt"])])
    assert (row.runs, row.iqm, row.low, row.high) == (3, point, low, high)
    assert row.rm_accuracy == pytest.approx(0.05) and row.rm_return_spearman == pytest.approx(0.95)
    assert set(table["column"]) == {"none", "true", "learned (500)", "zero", "random"}
    assert ALL_TASKS not in set(table["task"])  # one dataset: nothing to pool


def test_pooled_rows_appear_with_several_datasets():
    table = source_table(_records(FINALS, tasks=("a-medium-replay", "b-medium-replay")))
    pooled = table[(table["task"] == ALL_TASKS) & (table["learner"] == "iql")]
    assert set(pooled["runs"]) == {6}


def test_checks_read_the_targets_off_the_table():
    checks = target_checks(source_table(_records(FINALS)))
    met = dict(zip(checks["check"], checks["met"], strict=True))
    assert met["gate: dt >= mle-filter >= bc (true reward)"]
    assert met["gate: zero-dt below dt beyond the intervals"]
    assert met["pref-dt / dt (500 labels)"]  # 0.56 / 0.61 >= 0.8
    assert met["pref-dt above zero-dt beyond the intervals (500 labels)"]
    assert not met["pref-iql / iql (500 labels)"]  # 0.40 / 0.50 < 0.9
    assert not met["pref-iql above zero-iql beyond the intervals (500 labels)"]
    assert met["Spearman of learned and true episode returns (500 labels)"]
    low_rho = target_checks(source_table(_records(FINALS, spearman=0.5)))
    assert not low_rho.set_index("check")["met"][
        "Spearman of learned and true episode returns (500 labels)"
    ]


def test_gate_fails_when_the_order_breaks():
    finals = dict(FINALS, bc=[0.5, 0.5, 0.5])
    checks = target_checks(source_table(_records(finals))).set_index("check")
    assert not checks.loc["gate: dt >= mle-filter >= bc (true reward)", "met"]


def test_markdown_has_a_row_per_learner_and_the_checks():
    table = source_table(_records(FINALS))
    text = to_markdown(table, target_checks(table))
    assert "| learner | no reward | true | learned (500) | zero | random |" in text
    assert text.index("| bc |") < text.index("| iql |") < text.index("| dt |")
    assert "### Targets" in text and "**no**" in text
    assert to_markdown(table.iloc[0:0], target_checks(table.iloc[0:0])) == ""


def test_label_budgets_read_in_numeric_order():
    table = source_table(_records(FINALS, budgets=(2000, 100, 500)))
    text = to_markdown(table, target_checks(table))
    assert "| true | learned (100) | learned (500) | learned (2000) | zero |" in text
    notes = next(line for line in text.splitlines() if line.startswith("learned (100): "))
    assert notes.index("(100): rm accuracy 0.010") < notes.index("(500): rm accuracy 0.050")
    assert notes.index("(500): ") < notes.index("(2000): rm accuracy 0.200")


def test_notes_show_the_true_rewards_spearman_where_recorded():
    def note(records):
        table = source_table(records)
        text = to_markdown(table, target_checks(table))
        return next(line for line in text.splitlines() if line.startswith("learned (500): "))

    assert note(_records(FINALS, spearman=0.8, bar=0.81)).endswith(
        "returns 0.800 (the true reward with the learned reward's zero: 0.810)."
    )
    assert note(_records(FINALS, spearman=0.8)).endswith("returns 0.800.")  # older records


def test_learned_rewards_of_other_teachers_get_their_own_columns():
    records = _records(FINALS)
    noisy = records[records["agent"] == "pref-dt"].copy()
    noisy["cell"] += "-stochastic"
    noisy["teacher"] = "stochastic"
    noisy.loc[noisy["steps"] > 0, "normalized_score"] = 0.2
    records["teacher"] = np.where(records["agent"].str.startswith("pref-"), "oracle", "")
    table = source_table(pd.concat([records, noisy], ignore_index=True))
    dt = table[(table["learner"] == "dt") & (table["task"] != ALL_TASKS)].set_index("column")
    assert dt.loc["learned (500, stochastic)", "iqm"] == pytest.approx(0.2)
    assert dt.loc["learned (500)", "iqm"] != pytest.approx(0.2)
    checks = target_checks(table)
    assert checks["check"].str.contains("500 labels of stochastic").any()
    text = to_markdown(table, checks)
    header = next(line for line in text.splitlines() if "| learner |" in line)
    assert header.index("learned (500) ") < header.index("learned (500, stochastic)")


def test_columns_some_datasets_lack_are_not_pooled():
    records = _records(FINALS, tasks=("hopper-medium-replay", "walker2d-medium-replay"))
    noisy = records[(records["agent"] == "pref-dt") & (records["task"] == "hopper-medium-replay")]
    noisy = noisy.assign(cell=noisy["cell"] + "-stochastic", teacher="stochastic")
    records["teacher"] = np.where(records["agent"].str.startswith("pref-"), "oracle", "")
    table = source_table(pd.concat([records, noisy], ignore_index=True))
    pooled = table[table["task"] == ALL_TASKS]
    assert "learned (500)" in set(pooled["column"])
    assert "learned (500, stochastic)" not in set(pooled["column"])
    assert "learned (500, stochastic)" in set(table["column"])
