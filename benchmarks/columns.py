"""The column vocabulary of run folders and results folders, defined once.

One name per quantity, in ``metrics.csv`` (a run's evaluations), ``records.csv`` (a
suite's long-format records), ``summary.json``, the CLI flags and the configs:

================ ===============================================================
name             meaning
================ ===============================================================
``steps``        budget units used so far (control tasks: environment steps)
``label_budget`` teacher labels the run may ask for (the ``--label-budget`` flag)
``labels_used``  teacher labels asked for so far
``true_return``  mean true return of the policy on fresh evaluation episodes
``rm_accuracy``  reward-model accuracy on fresh oracle-labelled pairs
``d4rl_score``   offline tasks: 100 * (return - random) / (expert - random)
``agent``        the agent's registry id or import path
``agent_name``   the agent's display name in a suite's tables and plots
================ ===============================================================

Folders written before this vocabulary used other names; :func:`migrate_metrics` and
:func:`migrate_records` read them under the current ones.
"""

from __future__ import annotations

import pandas as pd

STEPS = "steps"
LABEL_BUDGET = "label_budget"
LABELS_USED = "labels_used"
TRUE_RETURN = "true_return"
TRUE_RETURN_STD = "true_return_std"
RM_ACCURACY = "rm_accuracy"
#: Episodes the accuracy pairs were cut from (more than ``eval_episodes`` where clips
#: are whole episodes, so the pairs are distinct).
RM_ACCURACY_EPISODES = "rm_accuracy_episodes"
#: Offline tasks: D4RL's normalised return, 100 * (R - random) / (expert - random).
D4RL_SCORE = "d4rl_score"
WALL_TIME = "wall_time"
TRAIN_TIME = "train_time"
AGENT = "agent"
AGENT_NAME = "agent_name"

# Text tasks (prefbench.benchmarks.text_evaluation and the text agents' compute count).
LEARNED_SCORE = "learned_score"
KL_PER_TOKEN = "kl_per_token"
DISTINCT_1 = "distinct_1"
DISTINCT_2 = "distinct_2"
FLOPS = "flops"
CONDITION_SPEARMAN = "condition_spearman"
#: Conditioning values (in labelled-sample standard deviations) a conditioned text policy
#: is scored at: the training range and the +5 of the offline-RLHF authors' code.
CONDITIONS = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 5.0)


def condition_column(value: float) -> str:
    """``true_return_z+2``: the true return of a conditioned policy at condition ``value``."""
    return f"true_return_z{value:+g}"


#: The text columns a language-model suite copies from ``metrics.csv`` into its records.
TEXT_RECORD_METRICS = (
    LEARNED_SCORE,
    KL_PER_TOKEN,
    DISTINCT_1,
    DISTINCT_2,
    FLOPS,
    *(f"{FLOPS}_{kind}" for kind in ("generate", "score", "train")),
    CONDITION_SPEARMAN,
    *(condition_column(v) for v in CONDITIONS),
)

#: Columns of every ``metrics.csv`` row; agents' own metrics (losses...) follow them.
METRIC_COLUMNS = (
    STEPS,
    LABELS_USED,
    TRUE_RETURN,
    TRUE_RETURN_STD,
    RM_ACCURACY,
    WALL_TIME,
    TRAIN_TIME,
)

#: Versions recorded with every record.
VERSION_COLUMNS = ("prefbench", "torch", "stable_baselines3", "gymnasium", "git_commit")

#: Columns of ``records.csv``, in order.
RECORD_COLUMNS = (
    "suite",
    "cell",
    "task",
    AGENT,
    AGENT_NAME,
    "teacher",
    LABEL_BUDGET,
    "seed",
    STEPS,
    LABELS_USED,
    TRUE_RETURN,
    "normalized_score",
    D4RL_SCORE,
    RM_ACCURACY,
    WALL_TIME,
    *VERSION_COLUMNS,
)

# Names in folders written before this vocabulary (up to commit 15869ba).
_OLD_METRICS = {
    "step": STEPS,
    "labels": LABELS_USED,
    "eval_true_return": TRUE_RETURN,
    "eval_true_return_std": TRUE_RETURN_STD,
}
_OLD_RECORDS = {"agent": AGENT_NAME, "agent_id": AGENT, "labels": LABELS_USED}


def migrate_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """``metrics.csv`` rows under the current names (old folders said ``step``, ...)."""
    if STEPS in frame.columns:
        return frame
    return frame.rename(columns=_OLD_METRICS)


def migrate_summary(summary: dict) -> dict:
    """A ``summary.json`` under the current names and values.

    Old runs said ``labels`` for ``labels_used``, and NaN for a missing rm accuracy (now
    null).
    """
    summary = {(LABELS_USED if k == "labels" else k): v for k, v in summary.items()}
    acc = summary.get("final_rm_accuracy")
    if isinstance(acc, float) and acc != acc:
        summary["final_rm_accuracy"] = None
    return summary


def migrate_records(frame: pd.DataFrame) -> pd.DataFrame:
    """``records.csv`` rows under the current names.

    The old format named the display name ``agent`` and the id ``agent_id``; its
    ``agent_id`` column tells it apart. Records from before offline tasks get an empty
    ``d4rl_score``.
    """
    if "agent_id" in frame.columns:
        frame = frame.rename(columns=_OLD_RECORDS)
    if D4RL_SCORE not in frame.columns:  # records from before offline tasks
        frame = frame.assign(**{D4RL_SCORE: float("nan")})
    return frame
