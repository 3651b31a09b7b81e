"""Task kinds and the budgets they are trained for.

A run trains an agent on a task for a budget counted in the unit of the task's kind:

======== ============================================== ==============
kind     what the agent gets                            budget unit
======== ============================================== ==============
control  a Gymnasium environment to act in (built)      ``env_steps``
offline  a fixed dataset of trajectories (next)         ``updates``
text     prompts for a language model (next)            ``tokens``
======== ============================================== ==============

Each kind gets one evaluator (``prefbench.benchmarks.evaluation``; ``control``'s is
built), so the run writer and the runner never assume an environment with steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

#: The budget unit of each task kind.
BUDGET_UNITS: dict[str, str] = {"control": "env_steps", "offline": "updates", "text": "tokens"}


@runtime_checkable
class Task(Protocol):
    """What every task says about itself, whatever its kind.

    Attributes:
        id: The task's registry id.
        kind: One of :data:`BUDGET_UNITS`' keys.
    """

    id: str
    kind: str


@dataclass(frozen=True)
class Budget:
    """How long a run trains.

    Attributes:
        amount: Units to train for (>= 1).
        unit: One of :data:`BUDGET_UNITS`' values.
    """

    amount: int
    unit: str

    def __post_init__(self) -> None:
        if self.amount < 1:
            raise ValueError(f"a budget must be >= 1 {self.unit}, got {self.amount}")
        if self.unit not in BUDGET_UNITS.values():
            raise ValueError(
                f"unknown budget unit {self.unit!r}; valid: {', '.join(BUDGET_UNITS.values())}"
            )

    @staticmethod
    def for_task(task: Task, amount: int) -> Budget:
        """``amount`` in the unit of ``task``'s kind."""
        if task.kind not in BUDGET_UNITS:
            raise ValueError(
                f"task {task.id!r} has unknown kind {task.kind!r}; "
                f"valid kinds: {', '.join(BUDGET_UNITS)}"
            )
        return Budget(amount, BUDGET_UNITS[task.kind])
