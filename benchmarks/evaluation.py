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

from prefbench.agents.offline.rewards import DEFAULT_SEGMENT_LENGTH, fresh_pair_accuracy
from prefbench.agents.protocol import Agent, PreferencePredictor
from prefbench.benchmarks.columns import (
    D4RL_SCORE,
    RM_ACCURACY,
    RM_ACCURACY_EPISODES,
    TRUE_RETURN,
    TRUE_RETURN_STD,
)
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.envs.data import Trajectory
from prefbench.envs.episodes import Episodes
from prefbench.envs.kinds import Task
from prefbench.envs.minari_io import DatasetInfo
from prefbench.envs.offline_tasks import OfflineTask
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


#: Environments stepped together for the extra accuracy episodes.
ACCURACY_ENVS = 16


class ControlEvaluator:
    """Control tasks: the policy on fresh episodes, the reward model on fresh pairs.

    Each round runs ``spec.eval_episodes`` episodes, one per environment, seeded by the
    round (so every agent of a seed sees the same starts), through ``agent.predict``.
    The true return is their mean. The reward model's accuracy is measured on
    ``spec.accuracy_pairs`` clip pairs cut from those episodes and labelled by the oracle
    teacher: the share of decided pairs where the ensemble's choice agrees.

    Where the episodes hold fewer than two clip starts per pair (clips that are whole
    episodes, as on Reacher: five episodes give five clips, at most ten distinct pairs),
    more episodes of the same policy are played, :data:`ACCURACY_ENVS` at a time, until
    they do; ``rm_accuracy_episodes`` records how many episodes the pairs came from.

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
        self._accuracy_env: VecEnv | None = None

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
        row = {
            TRUE_RETURN: float(np.mean(returns)),
            TRUE_RETURN_STD: float(np.std(returns)),
            RM_ACCURACY: math.nan,
        }
        if reward_model is not None:
            clips_from = self._accuracy_episodes(agent, trajs, round_index)
            pairs = sample_clip_pairs(
                clips_from, self.spec.accuracy_pairs, self.task.clip_length, self._pair_rng
            )
            row[RM_ACCURACY] = reward_model.preference_accuracy(
                pairs, self._oracle.label(pairs).prefs
            )
            row[RM_ACCURACY_EPISODES] = float(len(clips_from))
        return row

    def _accuracy_episodes(
        self, agent: Agent, trajs: list[Trajectory], round_index: int
    ) -> list[Trajectory]:
        """``trajs`` plus episodes until there are two clip starts per accuracy pair."""
        clip = self.task.clip_length

        def clip_starts(ts: list[Trajectory]) -> int:
            return sum(max(0, len(t) - clip + 1) for t in ts)

        wanted = 2 * self.spec.accuracy_pairs
        episodes = list(trajs)
        starts = clip_starts(episodes)
        batch = 0
        while starts < wanted:
            seed = int31_seed(self.spec.seed, f"eval{round_index}-accuracy{batch}")
            if self._accuracy_env is None:
                self._accuracy_env = make_vec_env(self.task, ACCURACY_ENVS, seed)
            self._accuracy_env.seed(seed)
            more = rollout(self._accuracy_env, agent.predict, frame_stack=self.task.frame_stack)
            gained = clip_starts(more)
            if gained == 0:
                break  # episodes shorter than a clip: sample_clip_pairs reports it
            episodes += more
            starts += gained
            batch += 1
        return episodes

    def close(self) -> None:
        """Close the evaluation environments."""
        for env in (self._env, self._accuracy_env):
            if env is not None:
                env.close()
        self._env = self._accuracy_env = None


class OfflineEvaluator:
    """Offline tasks: the policy on fresh episodes of the raw environment, D4RL's score.

    Each round plays ``spec.eval_episodes`` episodes, one per environment, seeded by the
    round, through the agent's :meth:`episode_policy` (which keeps a Decision
    Transformer's return-to-go) or its ``predict``. ``d4rl_score`` is the mean return
    normalised by the dataset's reference returns (0: random, 100: expert). A reward
    model is scored on ``spec.accuracy_pairs`` fresh pairs of dataset segments labelled
    by the oracle. Only agents that declare ``sees_true_reward`` (the true-reward
    references) are shown the environment's rewards while acting.

    Args:
        task: The offline task.
        spec: The run (seed, episodes, pairs).
    """

    def __init__(self, task: OfflineTask, spec: RunSpec) -> None:
        self.task = task
        self.spec = spec
        self._oracle = BPrefTeacher(
            BPREF_TEACHERS["oracle"], make_rng(spec.seed, "accuracy_oracle")
        )
        self._env: VecEnv | None = None
        self._dataset: tuple[Episodes, DatasetInfo] | None = None
        self._test: Episodes | None = None  # the episodes accuracy pairs come from

    def evaluate(
        self, agent: Agent, reward_model: PreferencePredictor | None, round_index: int
    ) -> dict[str, float]:
        """See :class:`Evaluator`: ``true_return``, ``d4rl_score``, ``rm_accuracy``."""
        n = self.spec.eval_episodes
        seed = int31_seed(self.spec.seed, f"eval{round_index}")
        if self._env is None:
            self._env = make_vec_env(self.task.control_task, n, seed)
        if self._dataset is None:
            self._dataset = self.task.load()
        episodes, info = self._dataset
        self._env.seed(seed)
        returns = play_episodes(self._env, agent, seed)
        row = {
            TRUE_RETURN: float(np.mean(returns)),
            TRUE_RETURN_STD: float(np.std(returns)),
            RM_ACCURACY: math.nan,
        }
        try:
            row[D4RL_SCORE] = float(info.normalized_score(float(np.mean(returns))))
        except ValueError:
            row[D4RL_SCORE] = math.nan  # a dataset without reference returns
        if reward_model is not None:
            # Pairs of the episodes held out of labelling (the same every round), drawn
            # afresh from a round-seeded stream: a resumed run scores as an uninterrupted one.
            if self._test is None:
                test = getattr(agent, "test_episodes", None)
                self._test = episodes.select(test) if test is not None and len(test) else episodes
            row[RM_ACCURACY] = fresh_pair_accuracy(
                reward_model,
                self._test,
                int(getattr(agent, "segment_length", DEFAULT_SEGMENT_LENGTH)),
                self.spec.accuracy_pairs,
                make_rng(self.spec.seed, f"accuracy_pairs{round_index}"),
                self._oracle,
                bool(getattr(agent, "absorbing_segments", False)),
            )
        return row

    def close(self) -> None:
        """Close the evaluation environments."""
        if self._env is not None:
            self._env.close()
        self._env = None


def play_episodes(venv: VecEnv, agent: Agent, seed: int = 0) -> np.ndarray:
    """``(n,)`` true returns of one episode per environment of ``venv``.

    See :func:`play_trajectories`.
    """
    return np.array([t.true_return for t in play_trajectories(venv, agent, seed)])


def play_trajectories(
    venv: VecEnv, agent: Agent, seed: int = 0, *, frame_stack: int = 0
) -> list[Trajectory]:
    """One episode per environment of ``venv``, played by ``agent``.

    Uses the agent's ``episode_policy(n, seed)`` where it has one (it sees each step
    through ``observe``, with the rewards only if it ``sees_true_reward``), else
    ``predict``. ``frame_stack`` stores stacked observations compactly (see
    :func:`~prefbench.envs.rollout.rollout`).
    """
    make_policy = getattr(agent, "episode_policy", None)
    if not callable(make_policy):
        return rollout(venv, agent.predict, frame_stack=frame_stack)
    policy = make_policy(venv.num_envs, seed)
    shows_reward = bool(getattr(agent, "sees_true_reward", False))

    def observe(obs: np.ndarray, acts: np.ndarray, rewards: np.ndarray) -> None:
        policy.observe(obs, acts, rewards if shows_reward else None)

    return rollout(venv, policy.act, frame_stack=frame_stack, observe=observe)


def _evaluator_from_import(obj: object, path: str) -> Any:
    if callable(obj):
        return obj
    raise TypeError(f"{path!r} is not an evaluator class")


#: Evaluator classes by task kind.
EVALUATORS: Registry[Any] = Registry("evaluator", _evaluator_from_import)
EVALUATORS.register("control", "prefbench.benchmarks.evaluation:ControlEvaluator")
EVALUATORS.register("offline", "prefbench.benchmarks.evaluation:OfflineEvaluator")
EVALUATORS.register("text", "prefbench.benchmarks.text_evaluation:TextEvaluator")


def make_evaluator(task: Task, spec: RunSpec) -> Evaluator:
    """The evaluator of ``task``'s kind for the run ``spec``.

    Raises:
        UnknownIdError: For a kind without an evaluator.
    """
    return EVALUATORS.get(task.kind)(task, spec)
