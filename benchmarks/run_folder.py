"""A run folder and everything written into it.

A run folder holds:

* ``config.json``: the resolved run and agent config, versions and commit, the command;
* ``metrics.csv``: one row per evaluation (columns: ``prefbench.benchmarks.columns``);
* ``checkpoints/``: what the agent saves (policy, reward model, label dataset);
* ``resume/``: the newest resumable state of an unfinished run (``latest`` names it);
* ``tb/``: TensorBoard curves of the evaluation metrics;
* ``rl_log/``: the RL learner's own log (CSV and TensorBoard);
* ``log.txt``: progress messages;
* ``summary.json``: written last, so its presence marks a finished run.

Every file read back (all but the logs) goes through
:func:`prefbench.envs.files.atomic_path`, so a killed run never leaves a half-written file
that reads as data.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from prefbench.agents.protocol import Resumable
from prefbench.benchmarks.columns import STEPS, migrate_metrics
from prefbench.benchmarks.run_spec import EXECUTION_FIELDS, RunSpec
from prefbench.envs.files import atomic_path, write_text

RESUME_DIR = "resume"


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers, and the commit."""
    import gymnasium
    import numpy as np
    import sb3_contrib
    import stable_baselines3
    import torch

    import prefbench

    out = {
        "python": platform.python_version(),
        "prefbench": prefbench.__version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gymnasium": gymnasium.__version__,
        "stable_baselines3": stable_baselines3.__version__,
        "sb3_contrib": sb3_contrib.__version__,
        "platform": platform.platform(),
    }
    from importlib.metadata import PackageNotFoundError, version

    # Optional extras: MuJoCo for control, the LM track's libraries for text.
    for name in ("mujoco", "transformers", "tokenizers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    out["git_commit"] = git_commit()
    return out


def git_commit() -> str:
    """The source checkout's commit (with ``-dirty`` for local changes), or ``unknown``."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("-dirty" if dirty else "")


def safe_name(name: str) -> str:
    """An id or import path made safe as a folder name (``pkg.mod:Name`` -> ``pkg.mod.Name``)."""
    return name.replace(":", ".").replace("/", "_").replace("\\", "_")


def run_name(spec: RunSpec, uses_teacher: bool) -> str:
    """Folder name of a run: ``task-agent-teacher-labelbudget-sSEED``."""
    if uses_teacher:
        return (
            f"{safe_name(spec.task)}-{safe_name(spec.agent)}-{safe_name(spec.teacher)}"
            f"-{spec.label_budget}-s{spec.seed}"
        )
    return f"{safe_name(spec.task)}-{safe_name(spec.agent)}-s{spec.seed}"


def run_logger(run_dir: Path) -> logging.Logger:
    """A logger writing to ``run_dir/log.txt`` only (its own, not the root logger)."""
    logger = logging.getLogger(f"prefbench.run.{run_dir.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    close_logger(logger)
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def close_logger(logger: logging.Logger) -> None:
    """Detach and close the logger's handlers (its file is released)."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.csv`` under the current column names (none if absent)."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    return migrate_metrics(pd.read_csv(path)).to_dict("records")


def write_csv(path: Path, rows: list[dict[str, Any]] | pd.DataFrame) -> None:
    """Write rows (or a frame, whose columns are kept even when empty) as CSV atomically."""
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def write_metrics(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``metrics.csv`` (atomically)."""
    write_csv(run_dir / "metrics.csv", rows)


class ResumeStates:
    """The newest resumable state of an unfinished run, under ``run_dir/resume``.

    Each state is a folder ``step-NNNNNNNNNNNN``; ``latest`` names the newest complete
    one and is written last, so a crash while saving leaves the previous state readable.
    """

    def __init__(self, run_dir: Path) -> None:
        self.root = run_dir / RESUME_DIR

    def save(self, agent: Resumable, step: int) -> None:
        """Let ``agent`` save its state at ``step``; older states are removed after."""
        name = f"step-{step:012d}"
        target = self.root / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        agent.save_state(target)
        write_text(self.root / "latest", name)
        for old in self.root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def latest(self) -> Path | None:
        """The newest complete state folder, if any."""
        try:
            state = self.root / (self.root / "latest").read_text().strip()
        except OSError:
            return None
        return state if state.is_dir() else None

    def clear(self) -> None:
        """Remove every state (the run finished, or cannot resume from them)."""
        shutil.rmtree(self.root, ignore_errors=True)


def resume_point(run_dir: Path, record: dict[str, Any]) -> Path | None:
    """The state to continue an unfinished run from, if its recorded run config matches.

    Args:
        run_dir: The run folder.
        record: This run's config as ``config.json`` records it under ``"run"``.
    """
    try:
        previous = json.loads((run_dir / "config.json").read_text())["run"]
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    mine = json.loads(json.dumps(record, default=str))
    if {k: v for k, v in previous.items() if k not in EXECUTION_FIELDS} != {
        k: v for k, v in mine.items() if k not in EXECUTION_FIELDS
    }:
        return None
    return ResumeStates(run_dir).latest()


def previous_resumes(run_dir: Path) -> list[int]:
    """Steps at which earlier attempts of this run resumed (from ``config.json``)."""
    try:
        return list(json.loads((run_dir / "config.json").read_text()).get("resumed_at", []))
    except (OSError, json.JSONDecodeError):
        return []


def keep_rows_until(rows: list[dict[str, Any]], step: int) -> list[dict[str, Any]]:
    """The metrics rows taken at or before ``step`` (a resumed run redoes the rest)."""
    return [r for r in rows if r[STEPS] <= step]


def finite_items(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a row (what TensorBoard can plot)."""
    return {
        k: float(v)
        for k, v in row.items()
        if isinstance(v, int | float) and math.isfinite(float(v))
    }
