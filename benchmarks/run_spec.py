"""What a run is: the settings that shape its numbers, and how it is executed.

:class:`RunSpec` is defined once and used by ``prefbench train`` (its flags and their
defaults come from it), by suites (a cell is a suite's name for a spec) and by
``prefbench perf overhead``. :class:`TrainConfig` adds where and how the run executes,
which never changes its numbers on one machine.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunSpec:
    """Everything that shapes a run's numbers.

    Attributes:
        task: Task id or import path.
        agent: Agent id or import path.
        teacher: Teacher id or import path (``""`` or ignored for agents without one).
        label_budget: Teacher labels the agent may ask for.
        steps: Budget in the unit of the task's kind (control: environment steps).
        seed: Run seed.
        eval_every: Budget units between evaluations (0: a tenth of ``steps``).
        eval_episodes: Episodes per evaluation.
        accuracy_pairs: Fresh oracle-labelled pairs per reward-model accuracy measurement.
        overrides: ``key=value`` agent config overrides.
        preset: RL preset id (``prefbench list presets``) whose per-task settings go
            before ``overrides``; ``""`` keeps the agent's own defaults (the paper's).
            Agents without RL settings (``random``) ignore it.
    """

    task: str
    agent: str
    teacher: str = "oracle"
    label_budget: int = 1500
    steps: int = 300_000
    seed: int = 0
    eval_every: int = 0
    eval_episodes: int = 5
    accuracy_pairs: int = 500
    overrides: tuple[str, ...] = field(default_factory=tuple)
    preset: str = ""

    def agent_overrides(self, task_id: str, agent_config: object) -> tuple[str, ...]:
        """The preset's overrides for ``task_id``, then the run's own.

        The preset applies only where the agent's config has ``rl`` settings.

        Raises:
            UnknownIdError: For an unknown preset.
        """
        if not self.preset:
            return self.overrides
        from prefbench.agents.presets import RL_PRESETS

        preset = RL_PRESETS.get(self.preset)
        if not hasattr(agent_config, "rl"):
            return self.overrides
        return (*preset.overrides(task_id), *self.overrides)

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 1, f"steps must be >= 1, got {self.steps}"),
            (self.label_budget >= 0, f"label-budget must be >= 0, got {self.label_budget}"),
            (self.seed >= 0, f"seed must be >= 0, got {self.seed}"),
            (self.eval_every >= 0, f"eval-every must be >= 0, got {self.eval_every}"),
            (self.eval_episodes >= 1, f"eval-episodes must be >= 1, got {self.eval_episodes}"),
            (self.accuracy_pairs >= 1, f"accuracy-pairs must be >= 1, got {self.accuracy_pairs}"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    @property
    def eval_interval(self) -> int:
        """Budget units between evaluations."""
        return self.eval_every or max(1, self.steps // 10)


@dataclass(frozen=True)
class TrainConfig:
    """One run: its spec and how it executes.

    Attributes:
        spec: What the run is.
        out: Parent folder of run folders.
        device: Torch device for the reward model and CNN policies (``auto``: CUDA if present).
        threads: Torch CPU threads during the run (restored afterwards).
        progress: Show a progress bar.
        run_name: Folder name under ``out`` (default: from task, agent, teacher, budget, seed).
        label_queue: The human teacher's label queue (``""``: ``$PREFBENCH_LABEL_QUEUE``,
            else ``label-queue`` in the prefbench cache).
        label_timeout: Seconds the human teacher waits for a batch's answers.
    """

    spec: RunSpec
    out: Path = Path("runs")
    device: str = "auto"
    threads: int = 1
    progress: bool = True
    run_name: str = ""
    label_queue: str = ""
    label_timeout: float = 600.0

    def __post_init__(self) -> None:
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if not (math.isfinite(self.label_timeout) and self.label_timeout >= 0):
            raise ValueError(
                f"label timeout must be a finite number >= 0, got {self.label_timeout}"
            )


#: ``TrainConfig`` fields that say how a run executes, not what it computes: a run
#: resumes when only these changed.
EXECUTION_FIELDS = ("progress", "label_queue", "label_timeout")


def spec_defaults() -> dict[str, Any]:
    """Default values of the optional :class:`RunSpec` fields, by name (for CLI help)."""
    out = {}
    for f in dataclasses.fields(RunSpec):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out
