"""The agent protocol and the agent registry.

An agent is anything that trains on a task for a number of steps and then acts. The
runner builds it with ``cls(ctx, teacher, config)`` (or ``cls(ctx, teacher)`` when the
class has no ``Config``), calls :meth:`Agent.learn`, and evaluates it through
:meth:`Agent.predict` on fresh environments that report the true reward, so an agent
never needs to (and should not) look at the true reward itself. A user's class plugs in
by import path: ``prefbench train --agent mypkg.module:MyAgent``.

During ``learn`` the agent calls ``reporter.report(step, ...)`` at its natural points
(e.g. after each rollout); the runner decides there whether an evaluation is due and
writes metrics. ``report`` returns nothing; it raises nothing unless the run must stop.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from prefbench.agents.config import apply_overrides
from prefbench.envs.data import ClipPairs
from prefbench.envs.registry import Registry
from prefbench.envs.tasks import TaskSpec
from prefbench.envs.teachers import Teacher


@dataclass(frozen=True)
class RunContext:
    """What every agent is given.

    Attributes:
        task: The task to solve.
        seed: The run's seed; derive named streams with ``prefbench.envs.seeding``.
        total_steps: Environment steps to train for.
        label_budget: Teacher labels the agent may ask for (0 for non-preference agents).
        device: Torch device string (``auto``, ``cpu``, ``cuda``).
        run_dir: Folder for the agent's own files (checkpoints go in ``run_dir / "checkpoints"``).
        logger: Where to log progress messages.
    """

    task: TaskSpec
    seed: int
    total_steps: int
    label_budget: int
    device: str
    run_dir: Path
    logger: logging.Logger


class PreferencePredictor(Protocol):
    """A reward model the runner can score on fresh labelled pairs."""

    def member_preferences(self, pairs: ClipPairs) -> np.ndarray:
        """``(K, N)`` each member's P(first clip preferred)."""
        ...

    def preference_accuracy(self, pairs: ClipPairs, prefs: np.ndarray) -> float:
        """Share of decided pairs where the model agrees with ``prefs``."""
        ...


class Reporter(Protocol):
    """Receives an agent's progress."""

    def report(
        self,
        step: int,
        *,
        labels: int = 0,
        reward_model: PreferencePredictor | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record progress at ``step`` environment steps.

        Args:
            step: Environment steps taken so far.
            labels: Teacher labels used so far.
            reward_model: The current reward model, if any (its accuracy is measured on
                fresh pairs from evaluation rollouts).
            metrics: Agent-specific scalars to log (losses, ...).
        """
        ...


@runtime_checkable
class Agent(Protocol):
    """What the runner needs from an agent."""

    def learn(self, reporter: Reporter) -> None:
        """Train for ``ctx.total_steps`` steps, reporting progress."""
        ...

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Evaluation actions for a batch of observations ``(n, *O) -> (n, A...)``.

        Deterministic, except on tasks with ``stochastic_eval`` (Atari), where a
        deterministic policy can stall an episode (never pressing FIRE in Breakout).
        """
        ...

    def save(self, directory: Path) -> None:
        """Write checkpoints into ``directory``."""
        ...


@runtime_checkable
class Resumable(Protocol):
    """An agent whose training can stop and go on from a saved state.

    The runner calls :meth:`save_state` after evaluations and, when an unfinished run is
    started again, :meth:`load_state` before :meth:`Agent.learn`, which then trains only
    the remaining steps.
    """

    def save_state(self, directory: Path) -> None:
        """Write everything needed to continue training into ``directory``."""
        ...

    def load_state(self, directory: Path) -> int:
        """Restore from ``directory``; returns the environment steps already taken."""
        ...


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent: the class and its default config.

    Attributes:
        cls: The agent class.
        config: Default config (a dataclass instance) or ``None`` if ``cls`` takes none.
        description: One line for ``prefbench list agents``.
        uses_teacher: Whether the agent asks a teacher for labels.
    """

    cls: type
    config: Any = None
    description: str = ""
    uses_teacher: bool = False

    def build(
        self, ctx: RunContext, teacher: Teacher | None, overrides: Iterable[str] = ()
    ) -> Agent:
        """Instantiate the agent with ``key=value`` config overrides applied.

        Raises:
            ConfigError: For a bad override.
            TypeError: If the built object does not follow the :class:`Agent` protocol.
        """
        overrides = list(overrides)
        if self.config is None:
            if overrides:
                raise ValueError(f"agent {self.cls.__name__} takes no config, got {overrides}")
            agent = self.cls(ctx, teacher)
        else:
            agent = self.cls(ctx, teacher, apply_overrides(self.config, overrides))
        if not isinstance(agent, Agent):
            raise TypeError(f"{self.cls.__name__} lacks learn/predict/save of the Agent protocol")
        return agent


def _agent_from_import(obj: object, path: str) -> AgentSpec:
    if isinstance(obj, AgentSpec):
        return obj
    if not inspect.isclass(obj):
        raise TypeError(f"{path!r} is not an agent class")
    config_cls = getattr(obj, "Config", None)
    config = (
        config_cls() if config_cls is not None and dataclasses.is_dataclass(config_cls) else None
    )
    doc = (inspect.getdoc(obj) or "").splitlines()
    return AgentSpec(obj, config, doc[0] if doc else "", bool(getattr(obj, "uses_teacher", True)))


AGENTS: Registry[AgentSpec] = Registry("agent", _agent_from_import)


def register_agent(name: str, spec: AgentSpec) -> AgentSpec:
    """Add an agent under ``name``."""
    return AGENTS.register(name, spec)
