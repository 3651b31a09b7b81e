"""One training run: build the agent, train it, evaluate it, write a run folder.

A run folder holds:

* ``config.json``: the resolved run and agent config, seeds, versions, the command;
* ``metrics.csv``: one row per evaluation point (long format): steps, labels used, true
  return of the deterministic policy on fresh episodes, reward-model accuracy on fresh
  oracle-labelled pairs from those episodes, wall time, and the agent's own metrics;
* ``checkpoints/``: what the agent saves (policy, reward model, label dataset);
* ``tb/``: TensorBoard curves of the evaluation metrics;
* ``rl_log/``: the RL learner's own log (CSV and TensorBoard);
* ``summary.json``: written last, so its presence marks a finished run.

Every file is written to a temporary name and renamed into place, so a killed run never
leaves a half-written file that reads as data.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from stable_baselines3.common.vec_env import VecEnv
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from prefbench.agents import AGENTS, Agent, RunContext
from prefbench.agents.config import to_plain
from prefbench.agents.device import resolve_device
from prefbench.agents.protocol import PreferencePredictor, Resumable
from prefbench.envs.data import CheckpointError
from prefbench.envs.files import write_csv, write_json, write_text
from prefbench.envs.rollout import make_vec_env, rollout
from prefbench.envs.seeding import int31_seed, make_rng, stream_seed
from prefbench.envs.segments import sample_clip_pairs
from prefbench.envs.tasks import get_task
from prefbench.envs.teachers import BPREF_TEACHERS, BPrefTeacher, make_teacher


@dataclass(frozen=True)
class TrainConfig:
    """A single run.

    Attributes:
        task: Task id or import path.
        agent: Agent id or import path.
        teacher: Teacher id or import path (ignored by agents without a teacher).
        labels: Label budget.
        steps: Environment steps.
        seed: Run seed.
        out: Parent folder of run folders.
        device: Torch device for the reward model (``auto`` picks CUDA when present).
        eval_every: Steps between evaluations (0: a tenth of ``steps``).
        eval_episodes: Episodes per evaluation.
        accuracy_pairs: Fresh oracle-labelled pairs per reward-model accuracy measurement.
        threads: Torch CPU threads.
        overrides: ``key=value`` agent config overrides.
        progress: Show a progress bar.
        run_name: Folder name under ``out`` (default: derived from task, agent, teacher,
            labels and seed).
    """

    task: str
    agent: str
    teacher: str = "oracle"
    labels: int = 1500
    steps: int = 300_000
    seed: int = 0
    out: Path = Path("runs")
    device: str = "auto"
    eval_every: int = 0
    eval_episodes: int = 5
    accuracy_pairs: int = 500
    threads: int = 1
    overrides: tuple[str, ...] = field(default_factory=tuple)
    progress: bool = True
    run_name: str = ""

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.labels >= 0, f"labels must be >= 0, got {self.labels}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.eval_every >= 0, f"eval-every must be >= 0, got {self.eval_every}"),
            (self.eval_episodes >= 1, f"eval-episodes must be >= 1, got {self.eval_episodes}"),
            (self.accuracy_pairs >= 1, f"accuracy-pairs must be >= 1, got {self.accuracy_pairs}"),
            (self.threads >= 1, f"threads must be >= 1, got {self.threads}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the numbers."""
    import gymnasium
    import sb3_contrib
    import stable_baselines3

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
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    out["git_commit"] = _git_commit()
    return out


def _git_commit() -> str:
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


def run_name(cfg: TrainConfig, uses_teacher: bool) -> str:
    """Folder name of a run: ``task-agent-teacher-labels-sSEED``."""
    if uses_teacher:
        return (
            f"{safe_name(cfg.task)}-{safe_name(cfg.agent)}-{safe_name(cfg.teacher)}"
            f"-{cfg.labels}-s{cfg.seed}"
        )
    return f"{safe_name(cfg.task)}-{safe_name(cfg.agent)}-s{cfg.seed}"


class RunReporter:
    """Evaluates the agent on schedule and writes ``metrics.csv``.

    Args:
        agent: The agent (evaluated through ``predict``).
        cfg: The run config.
        run_dir: Where ``metrics.csv`` goes.
        logger: Progress log.
        on_progress: Called with the step count at every report.
    """

    def __init__(
        self,
        agent: Agent,
        cfg: TrainConfig,
        run_dir: Path,
        logger: logging.Logger,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.agent = agent
        self.cfg = cfg
        self.task = get_task(cfg.task)
        self.run_dir = run_dir
        self.logger = logger
        self.every = cfg.eval_every or max(1, cfg.steps // 10)
        self.next_eval = 0
        self.rows: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.eval_time = 0.0
        self._latest: dict[str, float] = {}
        self._labels = 0
        self._model: PreferencePredictor | None = None
        self._oracle = BPrefTeacher(BPREF_TEACHERS["oracle"], make_rng(cfg.seed, "accuracy_oracle"))
        self._pair_rng = make_rng(cfg.seed, "accuracy_pairs")
        self._eval_round = 0
        self._step = 0
        self._eval_env: VecEnv | None = None
        self.on_progress = on_progress
        self._tb = SummaryWriter(str(run_dir / "tb"))
        self.bar = tqdm(
            total=cfg.steps,
            unit="step",
            disable=not cfg.progress,
            dynamic_ncols=True,
            desc=run_dir.name,
            file=sys.stderr,
        )

    def report(
        self,
        step: int,
        *,
        labels: int = 0,
        reward_model: PreferencePredictor | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """See :class:`prefbench.agents.protocol.Reporter`."""
        # NaN in a metric means "not available" (e.g. no held-out labels yet); losses
        # that diverge are caught where they are computed.
        for key, value in (metrics or {}).items():
            self._latest[key] = float(value)
        self._labels = labels
        self._model = reward_model
        self._step = step
        self.bar.update(max(0, min(step, self.cfg.steps) - self.bar.n))
        if self.on_progress is not None:
            self.on_progress(step)
        if step >= self.next_eval:
            self._evaluate(step)
            self.next_eval = (step // self.every + 1) * self.every

    def _save_state(self, step: int) -> None:
        """Let a resumable agent save its state; keep only the newest one."""
        if not isinstance(self.agent, Resumable) or step >= self.cfg.steps:
            return
        root = self.run_dir / RESUME_DIR
        name = f"step-{step:012d}"
        target = root / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        self.agent.save_state(target)
        write_text(root / "latest", name)
        for old in root.iterdir():
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    def resume(self, step: int) -> None:
        """Continue after a restored ``step``: keep earlier metrics rows, drop later ones."""
        path = self.run_dir / "metrics.csv"
        rows = pd.read_csv(path).to_dict("records") if path.is_file() else []
        self.rows = [r for r in rows if r["step"] <= step]
        write_csv(path, self.rows)
        self._eval_round = len(self.rows)
        self._step = step
        self.next_eval = (step // self.every + 1) * self.every
        if self.rows:
            last = self.rows[-1]
            self.start = time.perf_counter() - float(last["wall_time"])
            self.eval_time = float(last["wall_time"]) - float(last["train_time"])
            self._labels = int(last["labels"])
            base = {
                "step",
                "labels",
                "eval_true_return",
                "eval_true_return_std",
                "rm_accuracy",
                "wall_time",
                "train_time",
            }
            self._latest = {k: float(v) for k, v in last.items() if k not in base}
        self.bar.update(min(step, self.cfg.steps))

    def finish(self) -> None:
        """Evaluate the trained agent as it ended, then close the bar.

        Learners report before their last update, so the final policy gets its own
        evaluation; it replaces a row taken at the same step.
        """
        if self.rows and self.rows[-1]["step"] == self._step:
            self.rows.pop()
        self._evaluate(self._step)
        self.close()

    def close(self) -> None:
        """Release the evaluation environments and the progress bar."""
        if self._eval_env is not None:
            self._eval_env.close()
            self._eval_env = None
        self._tb.close()
        self.bar.close()

    def _evaluate(self, step: int) -> None:
        t0 = time.perf_counter()
        seed = int31_seed(self.cfg.seed, f"eval{self._eval_round}")
        self._eval_round += 1
        if self._eval_env is None:
            self._eval_env = make_vec_env(self.task, self.cfg.eval_episodes, seed)
        self._eval_env.seed(seed)
        trajs = rollout(self._eval_env, self.agent.predict, frame_stack=self.task.frame_stack)
        returns = [t.true_return for t in trajs]
        accuracy = math.nan
        if self._model is not None:
            clip = self.task.clip_length
            pairs = sample_clip_pairs(trajs, self.cfg.accuracy_pairs, clip, self._pair_rng)
            accuracy = self._model.preference_accuracy(pairs, self._oracle.label(pairs).prefs)
        self.eval_time += time.perf_counter() - t0
        wall = time.perf_counter() - self.start
        row = {
            "step": step,
            "labels": self._labels,
            "eval_true_return": float(np.mean(returns)),
            "eval_true_return_std": float(np.std(returns)),
            "rm_accuracy": accuracy,
            "wall_time": wall,
            "train_time": wall - self.eval_time,
            **self._latest,
        }
        self.rows.append(row)
        self._save_state(step)
        for key, value in row.items():
            if key != "step" and math.isfinite(value):
                self._tb.add_scalar(f"eval/{key}", value, step)
        self._tb.flush()
        write_csv(self.run_dir / "metrics.csv", self.rows)
        self.bar.set_postfix(
            ret=f"{row['eval_true_return']:.1f}", acc=f"{accuracy:.2f}", labels=self._labels
        )
        self.logger.info(
            "step %d labels %d true return %.2f rm accuracy %.3f",
            step,
            self._labels,
            row["eval_true_return"],
            accuracy,
        )


def _logger(run_dir: Path) -> logging.Logger:
    logger = logging.getLogger(f"prefbench.run.{run_dir.name}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger.addHandler(handler)
    return logger


def train(
    cfg: TrainConfig,
    command: str | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Run one training job and return its summary.

    A finished run folder (one with ``summary.json``) is not run again: its summary is
    returned. An unfinished one goes on from its last saved state when the agent is
    :class:`~prefbench.agents.protocol.Resumable` and the config is unchanged (metrics
    rows after that state are dropped; the environments start fresh episodes, so the
    numbers differ from an uninterrupted run); otherwise it is cleared and started over.

    Raises:
        UnknownIdError: Unknown task, agent or teacher.
        ConfigError / ValueError: Bad values.
        FloatingPointError: A NaN loss.
    """
    task = get_task(cfg.task)
    spec = AGENTS.get(cfg.agent)
    if spec.uses_teacher:
        make_teacher(cfg.teacher, make_rng(0, "check"))  # validate the id before any work
        if cfg.labels < 1:
            raise ValueError(f"agent {cfg.agent!r} needs labels >= 1, got {cfg.labels}")
    device = str(resolve_device(cfg.device))
    run_dir = cfg.out / (cfg.run_name or run_name(cfg, spec.uses_teacher))
    summary_path = run_dir / "summary.json"
    if summary_path.is_file():
        return json.loads(summary_path.read_text())
    state_dir = _resume_point(run_dir, cfg)
    if state_dir is None:
        try:
            cfg.out.mkdir(parents=True, exist_ok=True)
            if run_dir.exists():
                shutil.rmtree(run_dir)
            run_dir.mkdir()
        except OSError as exc:
            raise ValueError(f"cannot write to {cfg.out}: {exc.strerror or exc}") from exc
    torch.set_num_threads(cfg.threads)
    logger = _logger(run_dir)
    ctx = RunContext(
        task=task,
        seed=cfg.seed,
        total_steps=cfg.steps,
        label_budget=cfg.labels if spec.uses_teacher else 0,
        device=device,
        run_dir=run_dir,
        logger=logger,
    )
    teacher = (
        make_teacher(cfg.teacher, make_rng(cfg.seed, "teacher")) if spec.uses_teacher else None
    )
    torch.manual_seed(stream_seed(cfg.seed, "torch_global"))
    agent = spec.build(ctx, teacher, cfg.overrides)
    config_record = {
        "run": to_plain(cfg),
        "agent_config": to_plain(getattr(agent, "config", None)),
        "clip_length": task.clip_length,
        "device": device,
        "versions": versions(),
        "command": command or " ".join(sys.argv),
        "cwd": os.getcwd(),
    }
    reporter = RunReporter(agent, cfg, run_dir, logger, on_progress)
    if state_dir is not None:
        try:
            step = agent.load_state(state_dir)  # type: ignore[attr-defined]
        except CheckpointError as exc:
            reporter.close()
            logger.warning("cannot resume (%s); starting over", exc)
            shutil.rmtree(state_dir.parent)
            return train(cfg, command, on_progress)
        reporter.resume(step)
        logger.info("resumed at step %d from %s", step, state_dir)
        config_record["resumed_at"] = [*_previous_resumes(run_dir), step]
    write_json(run_dir / "config.json", config_record)
    try:
        agent.learn(reporter)
        reporter.finish()
    finally:
        reporter.close()
    agent.save(run_dir / "checkpoints")
    final = reporter.rows[-1]
    summary = {
        "task": cfg.task,
        "agent": cfg.agent,
        "teacher": cfg.teacher if spec.uses_teacher else None,
        "labels": final["labels"],
        "label_budget": ctx.label_budget,
        "seed": cfg.seed,
        "steps": final["step"],
        "final_true_return": final["eval_true_return"],
        "final_rm_accuracy": final["rm_accuracy"],
        "wall_time": time.perf_counter() - reporter.start,
        "train_time": final["train_time"],
        "eval_time": reporter.eval_time,
        "run_dir": str(run_dir),
    }
    write_json(summary_path, summary)
    shutil.rmtree(run_dir / RESUME_DIR, ignore_errors=True)  # checkpoints/ holds the end state
    return summary


RESUME_DIR = "resume"


def _resume_point(run_dir: Path, cfg: TrainConfig) -> Path | None:
    """The saved state to continue an unfinished run from, if any and if configs match."""
    latest = run_dir / RESUME_DIR / "latest"
    try:
        previous = json.loads((run_dir / "config.json").read_text())["run"]
        state_dir = run_dir / RESUME_DIR / latest.read_text().strip()
    except (OSError, KeyError, TypeError, json.JSONDecodeError):
        return None
    mine = json.loads(json.dumps(to_plain(cfg), default=str))
    same = {k: v for k, v in previous.items() if k != "progress"} == {
        k: v for k, v in mine.items() if k != "progress"
    }
    return state_dir if same and state_dir.is_dir() else None


def _previous_resumes(run_dir: Path) -> list[int]:
    try:
        return list(json.loads((run_dir / "config.json").read_text()).get("resumed_at", []))
    except (OSError, json.JSONDecodeError):
        return []
