"""One training run: check it, build the agent, train it, evaluate it, write its run folder.

:func:`train` is orchestration only. The parts: the run folder's files
(``benchmarks/run_folder.py``), the evaluator of the task's kind
(``benchmarks/evaluation.py``), the agent (``agents/``), and :class:`RunRecorder`, which
receives the agent's progress reports and records a metrics row whenever an evaluation
is due.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from prefbench.agents import AGENTS, Agent, AgentSpec, RunContext
from prefbench.agents.config import to_plain
from prefbench.agents.device import resolve_device
from prefbench.agents.protocol import PreferencePredictor, Resumable
from prefbench.benchmarks.columns import (
    LABELS_USED,
    METRIC_COLUMNS,
    RM_ACCURACY,
    STEPS,
    TRAIN_TIME,
    TRUE_RETURN,
    WALL_TIME,
    migrate_summary,
)
from prefbench.benchmarks.evaluation import EVALUATORS, Evaluator, make_evaluator
from prefbench.benchmarks.run_folder import (
    ResumeStates,
    close_logger,
    finite_items,
    keep_rows_until,
    previous_resumes,
    read_metrics,
    resume_point,
    run_logger,
    run_name,
    versions,
    write_metrics,
)
from prefbench.benchmarks.run_spec import RunSpec, TrainConfig
from prefbench.envs.data import CheckpointError
from prefbench.envs.files import write_json
from prefbench.envs.human.media import check_renderable, control_renderer
from prefbench.envs.human.teacher import HumanSettings, HumanTeacher, default_queue
from prefbench.envs.kinds import Budget, Task
from prefbench.envs.offline_tasks import resolve_task
from prefbench.envs.seeding import make_rng, scoped_torch
from prefbench.envs.teachers import ShowsPairs, Teacher, make_teacher


def check_run(spec: RunSpec) -> tuple[Task, AgentSpec]:
    """Check every id and setting of a run before any work; returns its task and agent.

    Raises:
        UnknownIdError: Unknown task, agent or teacher.
        TypeError: An import path that names no agent, task or teacher.
        ConfigError / ValueError: A bad value (also inside ``--set`` overrides).
    """
    task = resolve_task(spec.task)
    agent = AGENTS.get(spec.agent)
    Budget.for_task(task, spec.steps)
    if task.kind not in EVALUATORS:
        raise ValueError(f"task {spec.task!r} is of kind {task.kind!r}, which has no evaluator yet")
    missing = getattr(task, "missing_extra", lambda: None)()
    if missing:
        raise ValueError(
            f"task {spec.task!r} needs the {missing} extra: pip install 'prefbench[{missing}]'"
        )
    getattr(task, "check", lambda: None)()  # an offline task's dataset is installed
    kinds = getattr(agent.cls, "task_kinds", None)
    if kinds is not None and task.kind not in kinds:
        raise ValueError(
            f"agent {spec.agent!r} trains on {'/'.join(kinds)} tasks; {spec.task!r} is a "
            f"{task.kind} task"
        )
    agent.configure(spec.agent_overrides(task.id, agent.config))
    if agent.uses_teacher:
        teacher = make_teacher(spec.teacher, make_rng(0, "check"))
        if isinstance(teacher, ShowsPairs) and task.kind != "text":
            check_renderable(task)
        if spec.label_budget < 1:
            raise ValueError(
                f"agent {spec.agent!r} needs a label budget >= 1, got {spec.label_budget}"
            )
    return task, agent


def run_parts(
    spec: RunSpec,
    task: Task,
    agent_spec: AgentSpec,
    device: str,
    run_dir: Path,
    logger: logging.Logger,
) -> tuple[RunContext, Teacher | None]:
    """The context an agent of ``spec`` is built with, and its teacher (if it takes one)."""
    ctx = RunContext(
        task=task,
        seed=spec.seed,
        budget=Budget.for_task(task, spec.steps),
        label_budget=spec.label_budget if agent_spec.uses_teacher else 0,
        device=device,
        run_dir=run_dir,
        logger=logger,
    )
    teacher = (
        make_teacher(spec.teacher, make_rng(spec.seed, "teacher"))
        if agent_spec.uses_teacher
        else None
    )
    return ctx, teacher


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
        UnknownIdError / TypeError / ConfigError / ValueError: Bad input (see
            :func:`check_run`), before anything is written.
        FloatingPointError: A NaN loss.
    """
    spec = cfg.spec
    task, agent_spec = check_run(spec)
    device = str(resolve_device(cfg.device))
    run_dir = cfg.out / (cfg.run_name or run_name(spec, agent_spec.uses_teacher))
    if (run_dir / "summary.json").is_file():
        return migrate_summary(json.loads((run_dir / "summary.json").read_text()))
    record = to_plain(cfg)
    state_dir = resume_point(run_dir, record)
    out_existed = run_dir.parent.exists()
    if state_dir is None:
        _fresh_folder(run_dir)
    logger = run_logger(run_dir)
    ctx, teacher = run_parts(spec, task, agent_spec, device, run_dir, logger)
    if isinstance(teacher, HumanTeacher):
        queue = Path(cfg.label_queue) if cfg.label_queue else default_queue()
        # The run folder names the run: a rerun of it reuses its queries and answers.
        teacher.bind(str(run_dir.resolve()), HumanSettings(queue, cfg.label_timeout), logger)
    if isinstance(teacher, ShowsPairs) and task.kind != "text":
        teacher.use_renderer(control_renderer(task))  # text agents draw their own pairs
    with scoped_torch(spec.seed, cfg.threads):
        try:
            agent = agent_spec.build(ctx, teacher, spec.agent_overrides(task.id, agent_spec.config))
        except ValueError:
            # Bad input found only with the data at hand (an offline dataset that does not
            # fit the task, a label budget it cannot give): a new run leaves no folder.
            close_logger(logger)
            if state_dir is None:
                shutil.rmtree(run_dir, ignore_errors=True)
                if not out_existed:
                    with contextlib.suppress(OSError):
                        run_dir.parent.rmdir()  # the --out folder this run made, if empty
            raise
        recorder = RunRecorder(
            agent, make_evaluator(task, spec), run_dir, spec, logger, cfg.progress, on_progress
        )
        config_record = {
            "run": record,
            "agent_config": to_plain(getattr(agent, "config", None)),
            "task_kind": task.kind,
            "budget": to_plain(ctx.budget),
            "clip_length": getattr(task, "clip_length", None),
            "device": device,
            "versions": versions(),
            "command": command or " ".join(sys.argv),
            "cwd": os.getcwd(),
        }
        if state_dir is not None:
            try:
                step = agent.load_state(state_dir)  # type: ignore[attr-defined]
            except CheckpointError as exc:
                recorder.close()
                logger.warning("cannot resume (%s); starting over", exc)
                ResumeStates(run_dir).clear()
                return train(cfg, command, on_progress)
            recorder.resume(step)
            logger.info("resumed at step %d from %s", step, state_dir)
            config_record["resumed_at"] = [*previous_resumes(run_dir), step]
        write_json(run_dir / "config.json", config_record)
        try:
            agent.learn(recorder)
            recorder.finish()
        finally:
            recorder.close()
        if isinstance(agent, Resumable) and task.kind != "text":
            # The whole end state: `prefbench evaluate` restores the agent from it.
            agent.save_state(run_dir / "checkpoints")
        else:
            agent.save(run_dir / "checkpoints")
    final = recorder.rows[-1]
    summary = {
        "task": spec.task,
        "agent": spec.agent,
        "teacher": spec.teacher if agent_spec.uses_teacher else None,
        LABELS_USED: final[LABELS_USED],
        "label_budget": ctx.label_budget,
        "seed": spec.seed,
        STEPS: final[STEPS],
        "budget_unit": ctx.budget.unit,
        "final_true_return": final[TRUE_RETURN],
        # JSON has no NaN: a run without a reward model records null.
        "final_rm_accuracy": final[RM_ACCURACY] if math.isfinite(final[RM_ACCURACY]) else None,
        WALL_TIME: time.perf_counter() - recorder.start,
        TRAIN_TIME: final[TRAIN_TIME],
        "eval_time": recorder.eval_time,
        "run_dir": str(run_dir),
    }
    write_json(run_dir / "summary.json", summary)
    ResumeStates(run_dir).clear()  # checkpoints/ holds the end state
    return summary


def _fresh_folder(run_dir: Path) -> None:
    """An empty ``run_dir`` (an old unfinished attempt is removed)."""
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir()
    except OSError as exc:
        raise ValueError(f"cannot write to {run_dir.parent}: {exc.strerror or exc}") from exc


class RunRecorder:
    """The agent's reporter: records a metrics row whenever an evaluation is due.

    Evaluations fall every ``spec.eval_interval`` budget units (at the first report at or
    past each multiple). A row holds the evaluator's metrics, the labels used, wall and
    training time (wall time less evaluation), and the agent's latest own metrics; after
    it the agent's resumable state is saved (except at the end, where ``checkpoints/``
    takes over).

    Args:
        agent: The agent (evaluated through ``predict``).
        evaluator: The evaluator of the task's kind.
        run_dir: The run folder.
        spec: The run.
        logger: Progress log.
        progress: Show a progress bar.
        on_progress: Called with the step count at every report.
    """

    def __init__(
        self,
        agent: Agent,
        evaluator: Evaluator,
        run_dir: Path,
        spec: RunSpec,
        logger: logging.Logger,
        progress: bool = True,
        on_progress: Callable[[int], None] | None = None,
    ) -> None:
        self.agent = agent
        self.evaluator = evaluator
        self.run_dir = run_dir
        self.spec = spec
        self.logger = logger
        self.on_progress = on_progress
        self.states = ResumeStates(run_dir) if isinstance(agent, Resumable) else None
        self.rows: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        self.eval_time = 0.0
        self.next_eval = 0
        self._latest: dict[str, float] = {}
        self._labels_used = 0
        self._model: PreferencePredictor | None = None
        self._step = 0
        self._rounds = 0  # evaluations so far (a replaced row still used its round's seed)
        self._tb = SummaryWriter(str(run_dir / "tb"))
        self.bar = tqdm(
            total=spec.steps,
            unit="step",
            disable=not progress,
            dynamic_ncols=True,
            desc=run_dir.name,
            file=sys.stderr,
        )

    def report(
        self,
        step: int,
        *,
        labels_used: int = 0,
        reward_model: PreferencePredictor | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """See :class:`prefbench.agents.protocol.Reporter`."""
        # NaN in a metric means "not available" (e.g. no held-out labels yet); losses
        # that diverge are caught where they are computed.
        for key, value in (metrics or {}).items():
            self._latest[key] = float(value)
        self._labels_used = labels_used
        self._model = reward_model
        self._step = step
        self.bar.update(max(0, min(step, self.spec.steps) - self.bar.n))
        if self.on_progress is not None:
            self.on_progress(step)
        if step >= self.next_eval:
            self._record(step)
            self.next_eval = self._eval_after(step)

    def resume(self, step: int) -> None:
        """Continue after a restored ``step``: keep earlier metrics rows, drop later ones."""
        self.rows = keep_rows_until(read_metrics(self.run_dir), step)
        write_metrics(self.run_dir, self.rows)
        self._step = step
        self._rounds = len(self.rows)
        self.next_eval = self._eval_after(step)
        if self.rows:
            last = self.rows[-1]
            self.start = time.perf_counter() - float(last[WALL_TIME])
            self.eval_time = float(last[WALL_TIME]) - float(last[TRAIN_TIME])
            self._labels_used = int(last[LABELS_USED])
            self._latest = {k: float(v) for k, v in last.items() if k not in METRIC_COLUMNS}
        self.bar.update(min(step, self.spec.steps))

    def finish(self) -> None:
        """Evaluate the trained agent as it ended.

        Learners report before their last update, so the final policy gets its own
        evaluation; it replaces a row taken at the same step.
        """
        if self.rows and self.rows[-1][STEPS] == self._step:
            self.rows.pop()
        self._record(self._step)

    def close(self) -> None:
        """Release the evaluator, TensorBoard writer and progress bar."""
        self.evaluator.close()
        self._tb.close()
        self.bar.close()

    def _eval_after(self, step: int) -> int:
        """The first multiple of the evaluation interval past ``step``."""
        return (step // self.spec.eval_interval + 1) * self.spec.eval_interval

    def _record(self, step: int) -> None:
        t0 = time.perf_counter()
        scores = self.evaluator.evaluate(self.agent, self._model, self._rounds)
        self._rounds += 1
        self.eval_time += time.perf_counter() - t0
        wall = time.perf_counter() - self.start
        row = {
            STEPS: step,
            LABELS_USED: self._labels_used,
            **scores,
            WALL_TIME: wall,
            TRAIN_TIME: wall - self.eval_time,
            **self._latest,
            # The evaluation's own columns win over the agent's latest metrics (after a
            # resume those hold the last row's values, evaluator columns included).
            **scores,
        }
        self.rows.append(row)
        if self.states is not None and step < self.spec.steps:
            self.states.save(self.agent, step)  # type: ignore[arg-type]
        for key, value in finite_items(row).items():
            if key != STEPS:
                self._tb.add_scalar(f"eval/{key}", value, step)
        self._tb.flush()
        write_metrics(self.run_dir, self.rows)
        accuracy = row.get(RM_ACCURACY, math.nan)
        self.bar.set_postfix(
            ret=f"{row.get(TRUE_RETURN, math.nan):.1f}",
            acc=f"{accuracy:.2f}",
            labels=self._labels_used,
        )
        self.logger.info(
            "step %d labels %d true return %.2f rm accuracy %.3f",
            step,
            self._labels_used,
            row.get(TRUE_RETURN, math.nan),
            accuracy,
        )
