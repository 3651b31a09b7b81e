"""The text track's part of a report: score, KL, compute and conditioning, per method.

Aggregates are pure functions of the long-format records of a language-model suite
(whose records carry :data:`~prefbench.benchmarks.columns.TEXT_RECORD_METRICS`):

* :func:`text_table`: per task and method, final ground-truth score (mean and 95%
  Student-t interval over seeds), share of PPO's gain over the base model
  (``normalized_score``), learned score, KL to the reference per token, distinct-2,
  FLOPs and their share of the reference agent's (PPO's), wall time, and the true return
  **at a matched KL** (:func:`return_at_kl`);
* :func:`condition_table`: for conditioned (DT) methods, the achieved score at each
  conditioning value and its Spearman correlation with the value.

Plots: ``frontier_<task>.png`` (true return against KL per token along each method's
training, the reward-KL frontier), ``compute_<task>.png`` (final true return against
FLOPs) and ``conditions_<task>.png`` (DT's achieved score against the conditioning value).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from prefbench.benchmarks.columns import (
    AGENT_NAME,
    CONDITION_SPEARMAN,
    CONDITIONS,
    DISTINCT_2,
    FLOPS,
    KL_PER_TOKEN,
    LABEL_BUDGET,
    LEARNED_SCORE,
    STEPS,
    TRUE_RETURN,
    WALL_TIME,
    condition_column,
)
from prefbench.benchmarks.report import _fmt, _pyplot, _save, mean_ci
from prefbench.benchmarks.runner import final_rows

_KEYS = ["task", AGENT_NAME, LABEL_BUDGET]


def is_text(records: pd.DataFrame) -> bool:
    """Whether the records carry the text track's columns."""
    return KL_PER_TOKEN in records.columns and FLOPS in records.columns


def return_at_kl(path: pd.DataFrame, kl: float) -> float:
    """True return where one run's training path first reaches ``kl`` (linear between evals).

    Args:
        path: One run's records (any order; sorted by ``steps`` here).
        kl: The KL per token to read the return at.

    Returns:
        The interpolated return; the first point's where it already starts at or above
        ``kl``; NaN if the run never reaches it.
    """
    p = path.sort_values(STEPS)
    x, y = p[KL_PER_TOKEN].to_numpy(dtype=float), p[TRUE_RETURN].to_numpy(dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) == 0:
        return math.nan
    if x[0] >= kl:
        return float(y[0])
    for i in range(1, len(x)):
        if x[i] >= kl:
            t = (kl - x[i - 1]) / (x[i] - x[i - 1])
            return float(y[i - 1] + t * (y[i] - y[i - 1]))
    return math.nan


def matched_kl(records: pd.DataFrame, task: str, floor_agent: str) -> float:
    """The KL per token the methods of ``task`` are compared at.

    The smallest mean final KL of any method other than ``floor_agent``, so that every
    method's training path reaches it (bar noise between seeds).
    """
    final = final_rows(records[records["task"] == task])
    final = final[final[AGENT_NAME] != floor_agent]
    means = final.groupby(AGENT_NAME)[KL_PER_TOKEN].mean()
    means = means[np.isfinite(means) & (means > 0)]
    return float(means.min()) if len(means) else math.nan


def text_table(records: pd.DataFrame, reference_agent: str, floor_agent: str) -> pd.DataFrame:
    """Per task and method: the columns of the module docstring (see :func:`to_markdown`)."""
    final = final_rows(records)
    rows = []
    for task, t in final.groupby("task", sort=True):
        ref_flops = t.loc[t[AGENT_NAME] == reference_agent, FLOPS].mean()
        kl = matched_kl(records, task, floor_agent)
        for (_, agent, labels), g in t.groupby(_KEYS, sort=True):
            at_kl = [
                return_at_kl(records[records["cell"] == cell], kl) for cell in g["cell"].unique()
            ]
            flops = float(g[FLOPS].mean())
            rows.append(
                {
                    "task": task,
                    AGENT_NAME: agent,
                    LABEL_BUDGET: int(labels),
                    "runs": len(g),
                    "true_return": mean_ci(g[TRUE_RETURN].to_numpy()),
                    "normalized_score": mean_ci(g["normalized_score"].to_numpy()),
                    "matched_kl": kl,
                    "true_return_at_kl": mean_ci(np.array(at_kl)),
                    LEARNED_SCORE: float(g[LEARNED_SCORE].mean()),
                    KL_PER_TOKEN: float(g[KL_PER_TOKEN].mean()),
                    DISTINCT_2: float(g[DISTINCT_2].mean()),
                    FLOPS: flops,
                    "flops_share": flops / ref_flops if ref_flops > 0 else math.nan,
                    WALL_TIME: float(g[WALL_TIME].mean()),
                }
            )
    return pd.DataFrame(rows)


def condition_table(records: pd.DataFrame) -> pd.DataFrame:
    """Per task and conditioned method: score at each condition, Spearman mean and CI."""
    final = final_rows(records)
    final = final[np.isfinite(final[CONDITION_SPEARMAN].to_numpy(dtype=float))]
    rows = []
    for (task, agent, labels), g in final.groupby(_KEYS, sort=True):
        row = {"task": task, AGENT_NAME: agent, LABEL_BUDGET: int(labels), "runs": len(g)}
        row[CONDITION_SPEARMAN] = mean_ci(g[CONDITION_SPEARMAN].to_numpy())
        for value in CONDITIONS:
            row[condition_column(value)] = mean_ci(g[condition_column(value)].to_numpy())
        rows.append(row)
    return pd.DataFrame(rows)


def _ci(pair: tuple[float, float], digits: int = 3) -> str:
    return f"{_fmt(pair[0], digits)} ± {_fmt(pair[1], digits)}"


def to_markdown(table: pd.DataFrame, conditions: pd.DataFrame, reference_agent: str) -> str:
    """Markdown: the method table per task, then the conditioning table."""
    lines: list[str] = []
    for task, g in table.groupby("task", sort=True):
        kl = g["matched_kl"].iloc[0]
        lines += [
            f"### {task}: text methods (final; mean ± 95% CI over seeds)",
            "",
            f"Share of gain: (R - base) / ({reference_agent} - base). Matched KL: "
            f"{_fmt(kl, 3)} nats/token, the smallest final KL of a trained method; "
            f"compute as a share of {reference_agent}'s FLOPs.",
            "",
            "| agent | labels | runs | true return | share of gain | return at matched KL | "
            "learned score | KL/token | distinct-2 | GFLOPs | FLOPs share | wall s |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in g.itertuples():
            lines.append(
                f"| {r.agent_name} | {r.label_budget or '-'} | {r.runs} | {_ci(r.true_return)} | "
                f"{_ci(r.normalized_score, 2)} | {_ci(r.true_return_at_kl)} | "
                f"{_fmt(r.learned_score, 2)} | {_fmt(r.kl_per_token, 3)} | "
                f"{_fmt(r.distinct_2, 3)} | {_fmt(r.flops / 1e9, 1)} | "
                f"{_fmt(100 * r.flops_share, 1)}% | {_fmt(r.wall_time, 0)} |"
            )
        lines.append("")
    for task, g in conditions.groupby("task", sort=True) if not conditions.empty else ():
        heads = " | ".join(f"z={v:+g}" for v in CONDITIONS)
        lines += [
            f"### {task}: achieved true return against the conditioning value",
            "",
            f"| agent | labels | runs | Spearman | {heads} |",
            "|---|---:|---:|---:|" + "---:|" * len(CONDITIONS),
        ]
        for r in g.to_dict("records"):
            cells = " | ".join(_ci(r[condition_column(v)], 2) for v in CONDITIONS)
            lines.append(
                f"| {r[AGENT_NAME]} | {r[LABEL_BUDGET] or '-'} | {r['runs']} | "
                f"{_ci(r[CONDITION_SPEARMAN], 2)} | {cells} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot_text(records: pd.DataFrame, folder: Path) -> list[Path]:
    """The frontier, compute and conditioning plots of every text task."""
    plt = _pyplot()
    paths: list[Path] = []
    final = final_rows(records)
    for task, g in records.groupby("task", sort=True):
        fig, ax = plt.subplots(figsize=(6, 4))
        for agent, s in g.groupby(AGENT_NAME, sort=True):
            path = s.groupby(STEPS)[[KL_PER_TOKEN, TRUE_RETURN]].mean()
            ax.plot(path[KL_PER_TOKEN], path[TRUE_RETURN], marker="o", markersize=3, label=agent)
        ax.set_xlabel("KL to the reference per token (nats)")
        ax.set_ylabel("true return (mean over seeds)")
        ax.set_title(f"{task}: reward-KL frontier (points: evaluations)")
        paths.append(_save(fig, ax, folder / f"frontier_{task}.png"))

        fig, ax = plt.subplots(figsize=(6, 4))
        for agent, s in final[final["task"] == task].groupby(AGENT_NAME, sort=True):
            flops = float(s[FLOPS].mean())
            mean, half = mean_ci(s[TRUE_RETURN].to_numpy())
            if not flops > 0:  # the base model: no compute to place on a log axis
                ax.axhline(mean, color="gray", linestyle=":", label=f"{agent} (no FLOPs)")
                continue
            yerr = [0.0 if math.isnan(half) else half]
            ax.errorbar([flops], [mean], yerr=yerr, marker="o", capsize=3, label=agent)
        ax.set_xscale("log")
        ax.set_xlabel("FLOPs (log scale)")
        ax.set_ylabel("final true return (mean, 95% CI)")
        ax.set_title(f"{task}: score against compute")
        paths.append(_save(fig, ax, folder / f"compute_{task}.png"))

    conditions = condition_table(records)
    for task, g in conditions.groupby("task", sort=True) if not conditions.empty else ():
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for r in g.to_dict("records"):
            pts = [r[condition_column(v)] for v in CONDITIONS]
            ax.errorbar(
                CONDITIONS,
                [m for m, _ in pts],
                yerr=np.nan_to_num([h for _, h in pts]),
                marker="o",
                capsize=3,
                label=f"{r[AGENT_NAME]} (Spearman {_fmt(r[CONDITION_SPEARMAN][0], 2)})",
            )
        ax.set_xlabel("conditioning value (labelled-sample sd)")
        ax.set_ylabel("achieved true return")
        ax.set_title(task)
        paths.append(_save(fig, ax, folder / f"conditions_{task}.png"))
    return paths
