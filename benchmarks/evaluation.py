"""One evaluator per task kind: what a trained-so-far agent is scored on.

An evaluator is built with ``cls(task, spec)`` and called as
``evaluate(agent, reward_model, round_index) -> {column: value}``; the run writer adds
the row to ``metrics.csv``. Evaluators never train anything and never hand the true
reward to the agent. Registered by task kind (lazily, so a kind's extra is imported only
when a task of that kind is run).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from prefbench.agents.protocol import Agent, PreferencePredictor
from prefbench.benchmarks.columns import RM_ACCURACY, TRUE_RETURN, TRUE_RETURN_STD
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.envs.kinds import Task
from prefbench.envs.registry import Registry
from prefbench.envs.rollout import make_vec_env, rollout
from prefbench.envs.seeding import int31_seed, make_rng
from prefbench.envs.segments import sample_clip_pairs
from prefbench.envs.tasks import TaskSpec
from prefbench.envs.teachers import BPREF_TEACHERS, BPrefTeacher


class Evaluator(Protocol):
    """Scores an agent (and its reward model, if any) on fresh data of its task."""

    def evaluate(
        self, agent: Agent, reward_model: PreferencePredictor | None, round_index: int
    ) -> dict[str, float]:
        """Metrics of evaluation round ``round_index`` (0, 1, ...), by column name."""
        ...

    def close(self) -> None:
        """Release what the evaluator holds (environments, ...)."""
        ...


class ControlEvaluator:
    """Control tasks: the policy on fresh episodes, the reward model on fresh pairs.

    Each round runs ``spec.eval_episodes`` episodes, one per environment, seeded by the
    round (so every agent of a seed sees the same starts), through ``agent.predict``.
    The true return is their mean. The reward model's accuracy is measured on
    ``spec.accuracy_pairs`` clip pairs cut from those episodes and labelled by the oracle
    teacher: the share of decided pairs where the ensemble's choice agrees.

    Args:
        task: The control task.
        spec: The run (seed, episodes, pairs).
    """

    def __init__(self, task: TaskSpec, spec: RunSpec) -> None:
        self.task = task
        self.spec = spec
        self._oracle = BPrefTeacher(
            BPREF_TEACHERS["oracle"], make_rng(spec.seed, "accuracy_oracle")
        )
        self._pair_rng = make_rng(spec.seed, "accuracy_pairs")
        self._env: VecEnv | None = None

    def evaluate(
        self, agent: Agent, reward_model: PreferencePredictor | None, round_index: int
    ) -> dict[str, float]:
        """See :class:`Evaluator`: ``true_return``, ``true_return_std``, ``rm_accuracy``."""
        seed = int31_seed(self.spec.seed, f"eval{round_index}")
        if self._env is None:
            self._env = make_vec_env(self.task, self.spec.eval_episodes, seed)
        self._env.seed(seed)
        trajs = rollout(self._env, agent.predict, frame_stack=self.task.frame_stack)
        returns = [t.true_return for t in trajs]
        accuracy = math.nan
        if reward_model is not None:
            pairs = sample_clip_pairs(
                trajs, self.spec.accuracy_pairs, self.task.clip_length, self._pair_rng
            )
            accuracy = reward_model.preference_accuracy(pairs, self._oracle.label(pairs).prefs)
        return {
            TRUE_RETURN: float(np.mean(returns)),
            TRUE_RETURN_STD: float(np.std(returns)),
            RM_ACCURACY: accuracy,
        }

    def close(self) -> None:
        """Close the evaluation environments."""
        if self._env is not None:
            self._env.close()
            self._env = None


def _evaluator_from_import(obj: object, path: str) -> Any:
    if callable(obj):
        return obj
    raise TypeError(f"{path!r} is not an evaluator class")


#: Evaluator classes by task kind.
EVALUATORS: Registry[Any] = Registry("evaluator", _evaluator_from_import)
EVALUATORS.register("control", "prefbench.benchmarks.evaluation:ControlEvaluator")


def make_evaluator(task: Task, spec: RunSpec) -> Evaluator:
    """The evaluator of ``task``'s kind for the run ``spec``.

    Raises:
        UnknownIdError: For a kind without an evaluator.
    """
    return EVALUATORS.get(task.kind)(task, spec)
