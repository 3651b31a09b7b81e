"""The agent protocol and the agent registry.

An agent is anything that trains on a task for a budget and then acts. The runner builds
it with ``cls(ctx, teacher, config)`` (or ``cls(ctx, teacher)`` when the class has no
``Config``), calls :meth:`Agent.learn`, and evaluates it through :meth:`Agent.predict`
with the evaluator of the task's kind (control: fresh environments that report the true
reward), so an agent never needs to (and should not) look at the true reward itself. A
user's class plugs in by import path: ``prefbench train --agent mypkg.module:MyAgent``.

During ``learn`` the agent calls ``reporter.report(step, ...)`` at its natural points
(e.g. after each rollout); the runner decides there whether an evaluation is due and
writes metrics. ``report`` returns nothing; it raises nothing unless the run must stop.

The built-in agents are registered below by import path, so listing them imports none.
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

from prefbench.agents.config import ConfigError, apply_overrides
from prefbench.envs.data import ClipPairs
from prefbench.envs.kinds import Budget, Task
from prefbench.envs.registry import Registry
from prefbench.envs.teachers import Teacher


@dataclass(frozen=True)
class RunContext:
    """What every agent is given.

    Attributes:
        task: The task to solve (its ``kind`` says what it offers: a control task is a
            :class:`~prefbench.envs.tasks.TaskSpec`).
        seed: The run's seed; derive named streams with ``prefbench.envs.seeding``.
        budget: How long to train, in the unit of the task's kind (control: env steps).
        label_budget: Teacher labels the agent may ask for (0 for non-preference agents).
        device: Torch device string (``auto``, ``cpu``, ``cuda``).
        run_dir: Folder for the agent's own files (checkpoints go in ``run_dir / "checkpoints"``).
        logger: Where to log progress messages.
    """

    task: Task
    seed: int
    budget: Budget
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
        labels_used: int = 0,
        reward_model: PreferencePredictor | None = None,
        metrics: Mapping[str, float] | None = None,
    ) -> None:
        """Record progress after ``step`` units of the budget.

        Args:
            step: Budget units used so far (control: environment steps).
            labels_used: Teacher labels used so far.
            reward_model: The current reward model, if any (its accuracy is measured on
                fresh pairs from evaluation rollouts).
            metrics: Agent-specific scalars to log (losses, ...).
        """
        ...


@runtime_checkable
class Agent(Protocol):
    """What the runner needs from an agent."""

    def learn(self, reporter: Reporter) -> None:
        """Train for ``ctx.budget``, reporting progress."""
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
        """Restore from ``directory``; returns the budget units already used."""
        ...


@dataclass(frozen=True)
class AgentSpec:
    """A registered agent: the class and its default config.

    Attributes:
        cls: The agent class.
        config: Default config (a dataclass instance) or ``None`` if ``cls`` takes none.
        description: One line for listings (registered agents keep theirs in the registry).
    """

    cls: type
    config: Any = None
    description: str = ""

    @property
    def uses_teacher(self) -> bool:
        """Whether the agent asks a teacher for labels (the class's ``uses_teacher``)."""
        return bool(getattr(self.cls, "uses_teacher", True))

    def build(
        self, ctx: RunContext, teacher: Teacher | None, overrides: Iterable[str] = ()
    ) -> Agent:
        """Instantiate the agent with ``key=value`` config overrides applied.

        Raises:
            ConfigError: For a bad override.
            TypeError: If the built object does not follow the :class:`Agent` protocol.
        """
        config = self.configure(overrides)
        agent = self.cls(ctx, teacher) if config is None else self.cls(ctx, teacher, config)
        if not isinstance(agent, Agent):
            raise TypeError(f"{self.cls.__name__} lacks learn/predict/save of the Agent protocol")
        return agent

    def configure(self, overrides: Iterable[str]) -> Any:
        """The default config with ``key=value`` overrides applied (checked, nothing built).

        Raises:
            ConfigError: For a bad override, or any override of an agent without a config.
        """
        overrides = list(overrides)
        if self.config is None:
            if overrides:
                raise ConfigError(f"agent {self.cls.__name__} takes no config, got {overrides}")
            return None
        return apply_overrides(self.config, overrides)


_AGENT_METHODS = ("learn", "predict", "save")


def _agent_from_import(obj: object, path: str) -> AgentSpec:
    if isinstance(obj, AgentSpec):
        return obj
    missing = [m for m in _AGENT_METHODS if not callable(getattr(obj, m, None))]
    if not inspect.isclass(obj) or missing:
        raise TypeError(
            f"{path!r} is not an agent: an agent is a class with "
            f"{'/'.join(_AGENT_METHODS)} methods (see prefbench.agents.protocol.Agent)"
        )
    config_cls = getattr(obj, "Config", None)
    config = (
        config_cls() if config_cls is not None and dataclasses.is_dataclass(config_cls) else None
    )
    doc = (inspect.getdoc(obj) or "").splitlines()
    return AgentSpec(obj, config, doc[0] if doc else "")


AGENTS: Registry[AgentSpec] = Registry("agent", _agent_from_import)


def register_agent(
    name: str, entry: AgentSpec | str, *, description: str = "", uses_teacher: bool = False
) -> None:
    """Add an agent (an :class:`AgentSpec` or the import path of one) under ``name``.

    ``description`` and ``uses_teacher`` are what ``prefbench list agents`` shows without
    importing the agent's module; an :class:`AgentSpec` given directly supplies them.
    """
    if isinstance(entry, AgentSpec):
        description, uses_teacher = description or entry.description, entry.uses_teacher
    AGENTS.register(name, entry, description=description, uses_teacher=uses_teacher)


# The built-in agents: true-reward baselines, preference agents, random.
for _algo in ("ppo", "a2c", "trpo"):
    register_agent(
        _algo,
        f"prefbench.agents.baselines:{_algo.upper()}",
        description=f"{_algo.upper()} on the true environment reward (baseline)",
    )
    register_agent(
        f"pref-{_algo}",
        f"prefbench.agents.preference:PREF_{_algo.upper()}",
        description=f"{_algo.upper()} on a reward model fit to teacher preferences "
        "(Christiano 2017)",
        uses_teacher=True,
    )
for _algo in ("a2c", "ppo"):
    register_agent(
        f"{_algo}-atari",
        f"prefbench.agents.baselines:{_algo.upper()}_ATARI",
        description=f"{_algo.upper()} on the sign of the game score, the paper's Atari settings",
    )
    register_agent(
        f"pref-{_algo}-atari",
        f"prefbench.agents.preference:PREF_{_algo.upper()}_ATARI",
        description=f"{_algo.upper()} on a conv reward model from preferences, "
        "the paper's Atari settings",
        uses_teacher=True,
    )
register_agent(
    "random", "prefbench.agents.baselines:RANDOM", description="uniformly random actions (baseline)"
)
# Offline agents (prefbench.agents.offline.agent): a learner on an offline task's dataset,
# on the true reward, a learned one (pref-*), or the zero/random controls.
register_agent(
    "bc",
    "prefbench.agents.offline.agent:BC",
    description="offline: behaviour cloning of every dataset step (no reward)",
)
for _learner, _what in (
    ("dt", "Decision Transformer"),
    ("rwr", "reward-weighted regression"),
    ("mle-filter", "behaviour cloning of the top 10% of episodes by return"),
    ("iql", "implicit Q-learning"),
):
    _const = _learner.upper().replace("-", "_")
    register_agent(
        _learner,
        f"prefbench.agents.offline.agent:{_const}",
        description=f"offline: {_what} on the true reward (reference)",
    )
    register_agent(
        f"pref-{_learner}",
        f"prefbench.agents.offline.agent:PREF_{_const}",
        description=f"offline: {_what} on a reward model fit to teacher preferences",
        uses_teacher=True,
    )
    for _control in ("zero", "random"):
        register_agent(
            f"{_control}-{_learner}",
            f"prefbench.agents.offline.agent:{_control.upper()}_{_const}",
            description=f"offline: {_what} on {_control} rewards (control)",
        )
# Text agents (prefbench.agents.lm.agent): a method of the language-model track on a
# text task; lm-sft is the base model itself.
for _method, _what in (
    ("sft", "the base (SFT) model, untrained"),
    ("mle-filter", "fine-tuning on samples whose learned z-score is above 0"),
    ("rwr", "reward-weighted fine-tuning, exp(z / beta)"),
    ("dt", "reward-conditioned fine-tuning (Decision Transformer alignment)"),
    ("dpo", "direct preference optimisation on the labelled pairs"),
    ("ppo", "PPO on the learned reward with a KL penalty"),
    ("best-of-n", "the best of n base-model samples by the learned reward"),
):
    _const = _method.upper().replace("-", "_") + ("_AGENT" if _method in ("dpo", "ppo") else "")
    register_agent(
        f"lm-{_method}",
        f"prefbench.agents.lm.agent:{_const}",
        description=f"text: {_what}",
        uses_teacher=_method != "sft",
    )
