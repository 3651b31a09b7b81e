"""The offline suites' part of a report: each learner on every reward source, and the targets.

An offline suite trains every learner on the true reward (the upper reference), on a
reward learned from preferences (``pref-*``) and on the zero and random controls. The
tables here put them side by side, a row per learner and a column per reward source
(learned rewards by label budget, and by teacher where not the oracle's), as the
interquartile mean of the final normalised score (D4RL / 100) with a 95%
stratified-bootstrap interval (:func:`~prefbench.benchmarks.report.iqm_stratified_ci`),
per dataset and over all datasets (for the columns every dataset has).

:func:`target_checks` then reads the suite's targets off the same numbers:

* the true-reward gate, per dataset: ``dt >= mle-filter >= bc`` (point estimates), and
  the zero-reward DT below DT beyond the intervals (its upper bound under DT's lower);
* each learned reward at a share of its learner's true-reward score (``pref-dt`` and
  ``pref-mle-filter`` 0.8, ``pref-iql`` 0.9);
* each learned reward above its learner's zero-reward control beyond the intervals;
* the Spearman correlation of learned and true episode returns on the dataset >= 0.9.

Which learner and reward source an agent is comes from its registered config
(:class:`~prefbench.agents.offline.agent.OfflineAgentConfig`), not from its name.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from prefbench.agents.offline.rewards import RM_RETURN_SPEARMAN, RM_RETURN_SPEARMAN_TRUE_REWARD
from prefbench.benchmarks.columns import AGENT, LABEL_BUDGET
from prefbench.benchmarks.report import _fmt, iqm_stratified_ci
from prefbench.benchmarks.runner import final_rows

#: Reward sources in table order; ``none`` is behaviour cloning's (it reads no reward).
SOURCES = ("none", "true", "learned", "zero", "random")
#: Learners in table order (others follow in name order).
LEARNER_ORDER = ("bc", "mle-filter", "rwr", "iql", "dt")
#: The issue's shares of the true-reward score a learned reward must reach, by learner.
LEARNED_SHARE = {"dt": 0.8, "mle-filter": 0.8, "iql": 0.9}
#: Least Spearman correlation of learned and true episode returns.
SPEARMAN_TARGET = 0.9
#: Row name of the aggregate over datasets.
ALL_TASKS = "all datasets"


def agent_roles(agents: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``agent id -> (learner, reward source)`` for the registered offline agents among ``agents``.

    Agents that are not offline agents (or not registered) are left out.
    """
    from prefbench.agents import AGENTS
    from prefbench.agents.offline.agent import OfflineAgentConfig

    roles = {}
    for agent in agents:
        try:
            config = AGENTS.get(agent).config
        except Exception:  # noqa: BLE001 - an unknown or unimportable agent has no role
            continue
        if isinstance(config, OfflineAgentConfig):
            source = "none" if config.learner_id == "bc" else config.reward.source
            roles[agent] = (config.learner_id, source)
    return roles


def _column(source: str, label_budget: int, teacher: str) -> str:
    """The table column: the source, and for a learned reward its labels (and teacher)."""
    if source != "learned":
        return source
    if teacher in ("", "oracle"):
        return f"learned ({label_budget})"
    return f"learned ({label_budget}, {teacher})"


def _learned_parts(column: str) -> tuple[int, str]:
    """``(label budget, teacher)`` of a ``learned (...)`` column."""
    budget, _, teacher = column.removeprefix("learned (").removesuffix(")").partition(", ")
    return int(budget), teacher or "oracle"


def _finals(records: pd.DataFrame) -> pd.DataFrame:
    """Final rows of the offline agents' cells with ``learner`` and ``column`` added."""
    final = final_rows(records)
    roles = agent_roles(final[AGENT].unique())
    final = final[final[AGENT].isin(roles)].copy()
    final["learner"] = [roles[a][0] for a in final[AGENT]]
    teachers = final["teacher"].fillna("").astype(str) if "teacher" in final else [""] * len(final)
    final["column"] = [
        _column(roles[a][1], int(b), t)
        for a, b, t in zip(final[AGENT], final[LABEL_BUDGET], teachers, strict=True)
    ]
    return final


def is_offline(records: pd.DataFrame) -> bool:
    """Whether any record is of a registered offline agent."""
    return bool(agent_roles(records[AGENT].unique())) if len(records) else False


#: What the report shows of each learned reward (``metrics.csv`` columns).
REWARD_METRICS = ("rm_accuracy", RM_RETURN_SPEARMAN, RM_RETURN_SPEARMAN_TRUE_REWARD)


def _reward_note(column: str, means: pd.Series) -> str:
    """``learned (B): rm accuracy ..., Spearman ...`` and, where recorded, the true reward's."""
    note = (
        f"{column}: rm accuracy {_fmt(means['rm_accuracy'], 3)}, Spearman of learned and true "
        f"episode returns {_fmt(means[RM_RETURN_SPEARMAN], 3)}"
    )
    bar = means[RM_RETURN_SPEARMAN_TRUE_REWARD]
    if math.isfinite(bar):
        note += f" (the true reward with the learned reward's zero: {_fmt(bar, 3)})"
    return note


def source_table(records: pd.DataFrame) -> pd.DataFrame:
    """IQM and 95% interval of the final normalised score per dataset, learner and source.

    Returns:
        Columns ``task`` (a dataset, or :data:`ALL_TASKS` pooling them by stratified
        bootstrap where there are several), ``learner``, ``column`` (``none``, ``true``,
        ``learned (B)``, or ``learned (B, teacher)`` for a teacher other than the
        oracle, ``zero``, ``random``), ``runs``, ``iqm``, ``low``, ``high``, and
        for learned rewards ``rm_accuracy``, ``rm_return_spearman`` and
        ``rm_return_spearman_true_reward`` (means over runs; NaN where not recorded).
    """
    final = _finals(records)
    rows = []
    tasks = sorted(final["task"].unique())
    for (learner, column), g in final.groupby(["learner", "column"], sort=True):
        per_task = {t: g.loc[g["task"] == t] for t in tasks}
        # Pooled only over every dataset: a column some lack would be set beside
        # another pooled over more of them.
        covered = all(per_task[t]["normalized_score"].notna().any() for t in tasks)
        pooled = [(ALL_TASKS, g)] if len(tasks) > 1 and covered else []
        for task, part in [*per_task.items(), *pooled]:
            scores = [
                p["normalized_score"].dropna().to_numpy()
                for p in (per_task.values() if task == ALL_TASKS else [part])
            ]
            scores = [s for s in scores if len(s)]
            if not scores:
                continue
            point, low, high = iqm_stratified_ci(scores)
            row = {
                "task": task,
                "learner": learner,
                "column": column,
                "runs": int(sum(len(s) for s in scores)),
                "iqm": point,
                "low": low,
                "high": high,
            }
            for key in REWARD_METRICS:
                values = part[key].to_numpy(dtype=float) if key in part else np.array([])
                values = values[np.isfinite(values)]
                row[key] = float(values.mean()) if len(values) else math.nan
            rows.append(row)
    return pd.DataFrame(
        rows,
        columns=[
            "task",
            "learner",
            "column",
            "runs",
            "iqm",
            "low",
            "high",
            *REWARD_METRICS,
        ],
    )


def _cell(table: pd.DataFrame, task: str, learner: str, column: str) -> pd.Series | None:
    hit = table[
        (table["task"] == task) & (table["learner"] == learner) & (table["column"] == column)
    ]
    return None if hit.empty else hit.iloc[0]


def _learned_columns(table: pd.DataFrame) -> list[str]:
    """The ``learned`` columns by label budget, the oracle's first at each budget."""
    cols = table["column"][table["column"].str.startswith("learned")].unique()

    def order(column: str) -> tuple[int, bool, str]:
        budget, teacher = _learned_parts(column)
        return budget, teacher != "oracle", teacher

    return sorted(cols, key=order)


def target_checks(table: pd.DataFrame) -> pd.DataFrame:
    """The suite's targets, one row per check and dataset (see the module docstring).

    Values are shown to three decimals so that a comparison reads as decided (the
    tables round to two).

    Args:
        table: :func:`source_table`'s output.

    Returns:
        Columns ``task``, ``check``, ``value`` (text), ``target`` (text), ``met`` (bool).
        A check whose agents are not in the table is left out.
    """
    rows = []

    def add(task: str, check: str, value: str, target: str, met: bool) -> None:
        rows.append({"task": task, "check": check, "value": value, "target": target, "met": met})

    for task in table["task"].unique():
        dt, mle, bc = (
            _cell(table, task, x, c)
            for x, c in (("dt", "true"), ("mle-filter", "true"), ("bc", "none"))
        )
        if dt is not None and mle is not None and bc is not None:
            add(
                task,
                "gate: dt >= mle-filter >= bc (true reward)",
                f"{dt.iqm:.3f} / {mle.iqm:.3f} / {bc.iqm:.3f}",
                "ordered",
                bool(dt.iqm >= mle.iqm >= bc.iqm),
            )
        zero_dt = _cell(table, task, "dt", "zero")
        if dt is not None and zero_dt is not None:
            add(
                task,
                "gate: zero-dt below dt beyond the intervals",
                f"{_fmt(zero_dt.high, 3)} < {_fmt(dt.low, 3)}",
                "upper < lower",
                bool(zero_dt.high < dt.low),
            )
        for column in _learned_columns(table):
            budget, teacher = _learned_parts(column)
            labels = f"{budget} labels" + ("" if teacher == "oracle" else f" of {teacher}")
            for learner in sorted({*LEARNED_SHARE, *table["learner"]} - {"bc"}):
                pref = _cell(table, task, learner, column)
                if pref is None:
                    continue
                true = _cell(table, task, learner, "true")
                share = LEARNED_SHARE.get(learner)
                if true is not None and share is not None:
                    ratio = pref.iqm / true.iqm if true.iqm > 0 else math.nan
                    add(
                        task,
                        f"pref-{learner} / {learner} ({labels})",
                        f"{pref.iqm:.3f} / {true.iqm:.3f} = {_fmt(ratio, 3)}",
                        f">= {share}",
                        bool(ratio >= share),
                    )
                zero = _cell(table, task, learner, "zero")
                if zero is not None:
                    add(
                        task,
                        f"pref-{learner} above zero-{learner} beyond the intervals ({labels})",
                        f"{_fmt(pref.low, 3)} > {_fmt(zero.high, 3)}",
                        "lower > upper",
                        bool(pref.low > zero.high),
                    )
            if task != ALL_TASKS:
                rho = table[(table["task"] == task) & (table["column"] == column)][
                    RM_RETURN_SPEARMAN
                ].dropna()
                if len(rho):
                    add(
                        task,
                        f"Spearman of learned and true episode returns ({labels})",
                        f"{rho.mean():.3f}",
                        f">= {SPEARMAN_TARGET}",
                        bool(rho.mean() >= SPEARMAN_TARGET),
                    )
    return pd.DataFrame(rows, columns=["task", "check", "value", "target", "met"])


def _order(learners: Iterable[str]) -> list[str]:
    known = [x for x in LEARNER_ORDER if x in set(learners)]
    return known + sorted(set(learners) - set(known))


def to_markdown(table: pd.DataFrame, checks: pd.DataFrame) -> str:
    """A learner-by-source table per dataset and over all of them, then the target checks."""
    if table.empty:
        return ""
    columns = [c for c in ("none", "true") if c in set(table["column"])]
    columns += _learned_columns(table) + [
        c for c in ("zero", "random") if c in set(table["column"])
    ]
    lines: list[str] = []
    for task in table["task"].unique():
        part = table[table["task"] == task]
        lines += [
            f"### {task}: normalised score by learner and reward source, IQM [95% CI]",
            "",
            "| learner | " + " | ".join("no reward" if c == "none" else c for c in columns) + " |",
            "|---|" + "---|" * len(columns),
        ]
        for learner in _order(part["learner"].unique()):
            cells = []
            for column in columns:
                r = _cell(part, task, learner, column)
                cells.append(
                    "" if r is None else f"{r.iqm:.2f} [{_fmt(r.low, 2)}, {_fmt(r.high, 2)}]"
                )
            lines.append(f"| {learner} | " + " | ".join(cells) + " |")
        learned = part[part["column"].str.startswith("learned")]
        if task != ALL_TASKS and not learned.empty:
            by_budget = learned.groupby("column")[list(REWARD_METRICS)].mean()
            notes = [_reward_note(c, by_budget.loc[c]) for c in _learned_columns(learned)]
            lines += ["", "; ".join(notes) + "."]
        lines.append("")
    if not checks.empty:
        lines += [
            "### Targets",
            "",
            "| dataset | check | value | target | met |",
            "|---|---|---|---|---|",
        ]
        for r in checks.itertuples():
            met = "yes" if r.met else "**no**"
            lines.append(f"| {r.task} | {r.check} | {r.value} | {r.target} | {met} |")
        lines.append("")
    return "\n".join(lines)
