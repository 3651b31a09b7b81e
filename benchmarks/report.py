"""Tables and plots from a results folder's long-format records.

Aggregates are pure functions of the records:

* per task: final true return, mean and 95% Student-t confidence interval over seeds;
* across tasks: normalised score (0 = random policy, 1 = true-reward RL at the same
  budget) as the interquartile mean over all runs of all tasks, with a 95% stratified
  bootstrap confidence interval (runs resampled within each task), as rliable
  (Agarwal et al. 2021) recommends. The bootstrap is ``scipy.stats.bootstrap`` with one
  sample per task (resampled independently, i.e. stratified) and percentile intervals.

Outputs: ``report.md`` (Markdown), ``report.tex`` (LaTeX tabulars), ``curves_<task>.png``
(true return over steps, mean and 95% CI band per agent) and ``labels_<task>.png``
(normalised final score against label budget); for text suites also the method table,
frontier, compute and conditioning plots of :mod:`prefbench.benchmarks.lm_report`; for
offline suites the learner-by-reward-source tables and target checks of
:mod:`prefbench.benchmarks.offline_report`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from prefbench.benchmarks.columns import AGENT_NAME, LABEL_BUDGET, RECORD_COLUMNS, migrate_records
from prefbench.benchmarks.runner import final_rows
from prefbench.envs.files import atomic_path, write_text

CONFIDENCE = 0.95


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50% of values."""
    return float(stats.trim_mean(np.asarray(values, dtype=float), 0.25))


def mean_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (NaN width for one value)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan
    if len(x) == 1:
        return float(x[0]), math.nan
    half = stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def iqm_stratified_ci(
    per_task: list[np.ndarray], *, reps: int = 2000, seed: int = 0, confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """IQM of all runs pooled over tasks, with a stratified bootstrap interval.

    Args:
        per_task: One array of run scores per task.
        reps: Bootstrap resamples.
        seed: Seed of the bootstrap.
        confidence: Interval coverage.

    Returns:
        ``(iqm, low, high)``; the interval is NaN when no task has two runs.
    """
    samples = [np.asarray(s, dtype=float) for s in per_task if len(s)]
    if not samples:
        return math.nan, math.nan, math.nan
    point = iqm(np.concatenate(samples))
    if max(len(s) for s in samples) < 2:
        return point, math.nan, math.nan

    def statistic(*xs: np.ndarray, axis: int = -1) -> np.ndarray:
        return stats.trim_mean(np.concatenate(xs, axis=axis), 0.25, axis=axis)

    res = stats.bootstrap(
        samples,
        statistic,
        n_resamples=reps,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    return point, float(res.confidence_interval.low), float(res.confidence_interval.high)


@dataclass(frozen=True)
class Tables:
    """Report tables as DataFrames.

    Attributes:
        per_task: Columns task, agent_name, teacher, label_budget, runs, true_return, ci,
            rm_accuracy.
        aggregate: Columns agent_name, teacher, label_budget, tasks, runs, iqm, low, high.
    """

    per_task: pd.DataFrame
    aggregate: pd.DataFrame


def _group_keys() -> list[str]:
    return [AGENT_NAME, "teacher", LABEL_BUDGET]


def make_tables(records: pd.DataFrame) -> Tables:
    """Per-task and aggregate tables from long-format records."""
    final = final_rows(records)
    rows = []
    for (task, agent, teacher, labels), g in final.groupby(["task", *_group_keys()], sort=True):
        mean, half = mean_ci(g["true_return"].to_numpy())
        acc = g["rm_accuracy"].to_numpy(dtype=float)
        rows.append(
            {
                "task": task,
                AGENT_NAME: agent,
                "teacher": teacher or "-",
                LABEL_BUDGET: int(labels),
                "runs": len(g),
                "true_return": mean,
                "ci": half,
                "rm_accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else math.nan,
            }
        )
    per_task = pd.DataFrame(rows)
    agg = []
    for (agent, teacher, labels), g in final.groupby(_group_keys(), sort=True):
        scores = [t["normalized_score"].dropna().to_numpy() for _, t in g.groupby("task")]
        scores = [s for s in scores if len(s)]
        point, low, high = iqm_stratified_ci(scores)
        agg.append(
            {
                AGENT_NAME: agent,
                "teacher": teacher or "-",
                LABEL_BUDGET: int(labels),
                "tasks": len(scores),
                "runs": int(sum(len(s) for s in scores)),
                "iqm": point,
                "low": low,
                "high": high,
            }
        )
    return Tables(per_task, pd.DataFrame(agg))


def _fmt(x: float, digits: int = 1) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


#: What the aggregate's normalised score means, by the suite's ``score``.
SCORE_MEANING = {
    "reference": "0 = random, 1 = true-reward RL",
    "d4rl": "D4RL score / 100: 0 = random, 1 = the dataset's expert",
}


def to_markdown(tables: Tables, score: str = "reference") -> str:
    """Markdown tables: one per task, then the aggregate."""
    lines: list[str] = []
    for task, g in tables.per_task.groupby("task", sort=True):
        lines += [f"### {task}: final true return (mean ± 95% CI over seeds)", ""]
        lines += ["| agent | teacher | labels | runs | true return | rm accuracy |"]
        lines += ["|---|---|---:|---:|---:|---:|"]
        for r in g.itertuples():
            lines.append(
                f"| {r.agent_name} | {r.teacher} | {r.label_budget or '-'} | {r.runs} | "
                f"{_fmt(r.true_return)} ± {_fmt(r.ci)} | {_fmt(r.rm_accuracy, 3)} |"
            )
        lines.append("")
    lines += [
        f"### Aggregate: normalised score ({SCORE_MEANING[score]}), IQM [95% CI]",
        "",
        "| agent | teacher | labels | tasks | runs | IQM | 95% CI |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    for r in tables.aggregate.itertuples():
        lines.append(
            f"| {r.agent_name} | {r.teacher} | {r.label_budget or '-'} | {r.tasks} | {r.runs} | "
            f"{_fmt(r.iqm, 2)} | [{_fmt(r.low, 2)}, {_fmt(r.high, 2)}] |"
        )
    return "\n".join(lines) + "\n"


def _tex_escape(text: str) -> str:
    return str(text).replace("_", r"\_").replace("&", r"\&").replace("%", r"\%")


def _tex_who(r: Any) -> str:
    """``agent & teacher & labels`` cells of a table row."""
    return f"{_tex_escape(r.agent_name)} & {_tex_escape(r.teacher)} & {r.label_budget or '-'}"


def to_latex(tables: Tables) -> str:
    """LaTeX tabulars (booktabs) of the same tables."""
    out: list[str] = []
    for task, g in tables.per_task.groupby("task", sort=True):
        out += [
            f"% {task}: final true return, mean $\\pm$ 95\\% CI over seeds",
            r"\begin{tabular}{lllrr}",
            r"\toprule",
            r"agent & teacher & labels & runs & true return \\",
            r"\midrule",
        ]
        for r in g.itertuples():
            out.append(f"{_tex_who(r)} & {r.runs} & ${_fmt(r.true_return)} \\pm {_fmt(r.ci)}$ \\\\")
        out += [r"\bottomrule", r"\end{tabular}", ""]
    out += [
        "% aggregate normalised score, IQM [95% stratified bootstrap CI]",
        r"\begin{tabular}{lllrrl}",
        r"\toprule",
        r"agent & teacher & labels & tasks & runs & IQM [95\% CI] \\",
        r"\midrule",
    ]
    for r in tables.aggregate.itertuples():
        out.append(
            f"{_tex_who(r)} & {r.tasks} & {r.runs} & "
            f"{_fmt(r.iqm, 2)} [{_fmt(r.low, 2)}, {_fmt(r.high, 2)}] \\\\"
        )
    out += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(out)


def _series_name(agent: str, teacher: str, labels: int) -> str:
    return agent if not teacher else f"{agent} ({teacher}, {labels} labels)"


def _pyplot() -> Any:
    """Pyplot on the non-interactive backend (imported late: plotting is optional work)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, ax: Any, path: Path) -> Path:
    """Add the legend, write the PNG atomically, close the figure."""
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    _pyplot().close(fig)
    return path


def _plot_over_steps(
    records: pd.DataFrame, column: str, ylabel: str, path_for: Any, chance: float | None = None
) -> list[Path]:
    """One PNG per task: ``column`` over steps, mean and 95% CI band per agent series."""
    plt = _pyplot()
    paths = []
    for task, g in records.groupby("task", sort=True):
        g = g[np.isfinite(g[column].to_numpy(dtype=float))]
        if g.empty:
            continue
        fig, ax = plt.subplots(figsize=(6, 4))
        means = []
        for (agent, teacher, labels), s in g.groupby(_group_keys(), sort=True):
            curve = s.groupby("steps")[column].apply(lambda v: mean_ci(v.to_numpy()))
            x = curve.index.to_numpy()
            mean = np.array([m for m, _ in curve])
            half = np.nan_to_num(np.array([h for _, h in curve]))
            runs = s["seed"].nunique()
            ax.plot(x, mean, label=f"{_series_name(agent, teacher, labels)}, {runs} runs")
            ax.fill_between(x, mean - half, mean + half, alpha=0.2)
            means.append(mean)
        if chance is not None:
            ax.axhline(chance, color="gray", linestyle=":", linewidth=1, label="chance")
            means.append(np.array([chance]))
        # With 2-3 seeds a 95% t-interval is wide; frame the means, let bands overflow.
        lo, hi = float(np.min(np.concatenate(means))), float(np.max(np.concatenate(means)))
        pad = 0.25 * (hi - lo) or 1.0
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_xlabel(_budget_label(task))
        ax.set_ylabel(ylabel)
        ax.set_title(task)
        paths.append(_save(fig, ax, path_for(task)))
    return paths


#: The x axis of a task kind's curves: its budget unit.
_BUDGET_LABELS = {
    "control": "environment steps",
    "offline": "gradient updates",
    "text": "response tokens trained on",
}


def _budget_label(task: str) -> str:
    """The budget unit of ``task``'s kind ("steps" for a task no longer registered)."""
    from prefbench.envs.offline_tasks import resolve_task

    try:
        return _BUDGET_LABELS.get(resolve_task(task).kind, "steps")
    except (ValueError, TypeError, ImportError):
        return "steps"


def plot_curves(records: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per task: true return over steps, mean and 95% CI band per agent."""
    return _plot_over_steps(
        records,
        "true_return",
        "true return (mean, 95% CI band)",
        lambda task: folder / f"curves_{task}.png",
    )


def plot_accuracy(records: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per task with preference agents: reward-model accuracy on fresh pairs."""
    return _plot_over_steps(
        records[records["label_budget"] > 0],
        "rm_accuracy",
        "reward-model accuracy on fresh pairs",
        lambda task: folder / f"accuracy_{task}.png",
        chance=0.5,
    )


def plot_labels(records: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per task with several label budgets: final normalised score vs labels."""
    plt = _pyplot()
    final = final_rows(records)
    prefs = final[final["label_budget"] > 0]
    paths = []
    for task, g in prefs.groupby("task", sort=True):
        if g["label_budget"].nunique() < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for (agent, teacher), s in g.groupby([AGENT_NAME, "teacher"], sort=True):
            pts = s.groupby("label_budget")["normalized_score"].apply(
                lambda v: mean_ci(v.to_numpy())
            )
            x = pts.index.to_numpy()
            ax.errorbar(
                x,
                [m for m, _ in pts],
                yerr=np.nan_to_num([h for _, h in pts]),
                marker="o",
                capsize=3,
                label=f"{agent} ({teacher})",
            )
        ax.axhline(1.0, color="gray", linestyle="--", linewidth=1, label="true-reward RL")
        ax.axhline(0.0, color="gray", linestyle=":", linewidth=1, label="random")
        ax.set_xscale("log")
        ax.set_xlabel("labels")
        ax.set_ylabel("normalised final score")
        ax.set_title(task)
        paths.append(_save(fig, ax, folder / f"labels_{task}.png"))
    return paths


def load_records(results: Path) -> pd.DataFrame:
    """Read ``records.csv`` of a results folder.

    Raises:
        ValueError: If the folder is not a results folder or the records are malformed.
    """
    path = results / "records.csv"
    if not (results / "suite.json").is_file() or not path.is_file():
        raise ValueError(
            f"{results} is not a prefbench results folder (no suite.json / records.csv)"
        )
    try:
        frame = pd.read_csv(path, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"{path} is unreadable: {exc}") from exc
    frame = migrate_records(frame)
    missing = set(RECORD_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}")
    frame["teacher"] = frame["teacher"].fillna("").astype(str)
    return frame


def write_report(results: Path) -> str:
    """Write tables and plots into ``results``; returns the Markdown tables.

    Raises:
        ValueError: If the folder holds no records.
    """
    records = load_records(results)
    if records.empty:
        raise ValueError(f"{results} has no finished cells yet")
    tables = make_tables(records)
    suite = json.loads((results / "suite.json").read_text())
    markdown = to_markdown(tables, _suite_score(suite))
    from prefbench.benchmarks import lm_report

    if lm_report.is_text(records):
        ref, floor = _suite_agents(suite)
        text = lm_report.text_table(records, ref, floor)
        markdown += "\n" + lm_report.to_markdown(text, lm_report.condition_table(records), ref)
        lm_report.plot_text(records, results)
    from prefbench.benchmarks import offline_report

    if offline_report.is_offline(records):
        table = offline_report.source_table(records)
        checks = offline_report.target_checks(table)
        markdown += "\n" + offline_report.to_markdown(table, checks)
    header = f"# {suite['suite']} (suite version {suite['version']})\n\n"
    for name, text in (("report.md", header + markdown), ("report.tex", to_latex(tables))):
        write_text(results / name, text)
    plot_curves(records, results)
    plot_accuracy(records, results)
    plot_labels(records, results)
    return markdown


def _suite_agents(marker: dict[str, Any]) -> tuple[str, str]:
    """The registered suite's ``(reference_agent, floor_agent)``; the LM suites' otherwise."""
    from prefbench.benchmarks.suites import SUITES

    try:
        suite = SUITES.get(str(marker.get("suite")))
    except (ValueError, TypeError, ImportError):
        return "lm-ppo", "lm-sft"
    return suite.reference_agent, suite.floor_agent


def _suite_score(marker: dict[str, Any]) -> str:
    """The suite's ``score``: from ``suite.json``, else the registered suite's, else reference."""
    if marker.get("score") in SCORE_MEANING:
        return str(marker["score"])
    from prefbench.benchmarks.suites import SUITES

    try:
        return SUITES.get(str(marker.get("suite"))).score
    except (ValueError, TypeError, ImportError):
        return "reference"
