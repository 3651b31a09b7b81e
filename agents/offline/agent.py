"""Offline agents: a reward source, then an offline learner, on an offline task's dataset.

:meth:`OfflineAgent.learn` reads as the algorithm:

1. *load* the task's dataset (a Minari dataset of whole episodes);
2. *reward*: relabel every step with the configured source
   (:mod:`prefbench.agents.offline.rewards`: a reward model fit to the teacher's labels on
   dataset segments, the true reward, or a zero/random control) and *report* it;
3. *train* the learner for the budget of gradient updates, *reporting* every
   ``report_every`` updates (the runner evaluates the policy in fresh episodes when due).

Agent ids name the learner and the reward: ``dt``, ``rwr``, ``mle-filter``, ``iql`` train on
the true reward (the upper reference), ``pref-*`` on a learned one, ``zero-*`` and
``random-*`` on the controls; ``bc`` uses no reward.

Acting: :meth:`OfflineAgent.episode_policy` gives the evaluator a policy that keeps
per-episode state (Decision Transformer's return-to-go and history). A Decision
Transformer lowers its return-to-go by the reward of each step *under its own reward
source*: the learned model's reward of the step, 0 for ``zero``, a fresh uniform draw for
``random``; only the true-reward reference reads the environment's reward, as in the
original (:attr:`OfflineAgent.sees_true_reward`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefbench.agents.offline import dt
from prefbench.agents.offline.learners import LEARNERS, Learner, get_learner
from prefbench.agents.offline.rewards import (
    OfflineRewardConfig,
    RewardResult,
    labelled_trajectories,
    make_rewards,
    new_reward_model,
    split_episodes,
)
from prefbench.agents.protocol import AgentSpec, Reporter, RunContext
from prefbench.agents.reward_checkpoint import restore_reward_model, save_reward_model
from prefbench.agents.reward_model import RewardModel
from prefbench.envs.data import CheckpointError, load_dataset, save_dataset
from prefbench.envs.files import atomic_path, write_text
from prefbench.envs.human.teacher import ABSORBING_UNSHOWN, HumanTeacher
from prefbench.envs.offline_tasks import OfflineTask
from prefbench.envs.seeding import stream_seed
from prefbench.envs.teachers import Teacher

STATE_FORMAT = "prefbench.offline_agent_state.v1"


@dataclass(frozen=True)
class OfflineAgentConfig:
    """Settings of an offline agent (override with ``--set group.key=value``).

    Attributes:
        learner_id: Key of :data:`~prefbench.agents.offline.learners.LEARNERS` (fixed by
            the registered agent).
        learner: The learner's ``Config`` (``--set learner.lr=...``).
        reward: Where the rewards come from (``--set reward.query=disagreement``).
        report_every: Gradient updates between progress reports.
    """

    learner_id: str = "dt"
    learner: Any = field(default_factory=dt.Config)
    reward: OfflineRewardConfig = field(default_factory=OfflineRewardConfig)
    report_every: int = 1000

    def __post_init__(self) -> None:
        if self.learner_id not in LEARNERS:
            raise ValueError(f"learner_id must be one of {', '.join(LEARNERS)}")
        expected = type(LEARNERS[self.learner_id].config)
        if not isinstance(self.learner, expected):
            raise ValueError(f"learner {self.learner_id} needs a {expected.__qualname__}")
        if self.report_every < 1:
            raise ValueError(f"report_every must be >= 1, got {self.report_every}")


class OfflineAgent:
    """An offline learner on a dataset's relabelled rewards (see the module docstring).

    Args:
        ctx: Run context; ``ctx.task`` is an :class:`OfflineTask`, the budget counts updates.
        teacher: Labels segment pairs (learned rewards only).
        config: Settings.
    """

    Config = OfflineAgentConfig
    uses_teacher = False
    #: The task kinds the agent trains on (the runner checks before any work).
    task_kinds = ("offline",)

    def __init__(
        self, ctx: RunContext, teacher: Teacher | None, config: OfflineAgentConfig | None = None
    ) -> None:
        if not isinstance(ctx.task, OfflineTask):
            raise ValueError(f"an offline agent needs an offline task, not {ctx.task.id!r}")
        self.ctx = ctx
        self.teacher = teacher
        self.config = config or OfflineAgentConfig()
        if self.config.reward.offset == "absorbing" and isinstance(teacher, HumanTeacher):
            raise ValueError(ABSORBING_UNSHOWN)
        self.task: OfflineTask = ctx.task
        self.episodes, self.info = self.task.load()
        obs_space, act_space = self.task.control_task.spaces()
        if self.episodes.obs.shape[1:] != obs_space.shape or (
            self.episodes.acts.shape[1:] != act_space.shape
        ):
            raise ValueError(
                f"dataset {self.task.dataset_id} has observations {self.episodes.obs.shape[1:]} "
                f"and actions {self.episodes.acts.shape[1:]}; task {self.task.control} needs "
                f"{obs_space.shape} and {act_space.shape}"
            )
        if self.config.reward.source == "learned":  # refuse bad input before any work
            if teacher is None:
                raise ValueError("a learned reward needs a teacher: use a pref-* agent")
            labelled_trajectories(self.episodes, self.config.reward, ctx.label_budget, ctx.seed)
        self.action_low, self.action_high = act_space.low, act_space.high
        self.labels_used = 0
        self.rewards: RewardResult | None = None
        self.learner: Learner | None = None

    @property
    def sees_true_reward(self) -> bool:
        """Whether acting reads the environment's reward (the true-reward reference)."""
        return self.config.reward.source == "true"

    @property
    def segment_length(self) -> int:
        """Steps per labelled segment (the evaluator cuts its accuracy pairs alike)."""
        return self.config.reward.segment_length

    @property
    def absorbing_segments(self) -> bool:
        """Whether labelled segments run past terminations (the evaluator's pairs alike)."""
        return self.config.reward.offset == "absorbing"

    @property
    def test_episodes(self) -> np.ndarray:
        """Indices of the episodes held out of labelling (fresh accuracy pairs come from them)."""
        _, test = split_episodes(
            self.episodes.n_episodes, self.config.reward.test_episodes, self.ctx.seed
        )
        return test

    @property
    def reward_model(self) -> RewardModel | None:
        """The fitted reward model (learned rewards only)."""
        return None if self.rewards is None else self.rewards.model

    @property
    def reward_shift(self) -> float:
        """What is subtracted from :attr:`reward_model`'s outputs to give this agent's rewards."""
        return 0.0 if self.rewards is None else self.rewards.shift

    # ----------------------------------------------------------------- the loop
    def learn(self, reporter: Reporter) -> None:
        """Relabel the dataset, then train the learner for the budget (module docstring)."""
        if self.learner is None:
            self._prepare()
            reporter.report(
                0,
                labels_used=self.labels_used,
                reward_model=self.reward_model,
                metrics=self.rewards.metrics if self.rewards else {},
            )
        total, every = self.ctx.budget.amount, self.config.report_every
        while self.learner.updates < total:
            metrics = self.learner.update()
            step = self.learner.updates
            if step % every == 0 or step == total:
                reporter.report(
                    step,
                    labels_used=self.labels_used,
                    reward_model=self.reward_model,
                    metrics=metrics,
                )

    def _prepare(self, model: RewardModel | None = None, labels: Any = None) -> None:
        """Rewards for every step (fitting a reward model unless given one), then the learner."""
        cfg = self.config
        self.rewards = make_rewards(
            self.episodes,
            cfg.reward,
            teacher=self.teacher,
            label_budget=self.ctx.label_budget,
            seed=self.ctx.seed,
            device=self.ctx.device,
            model=model,
            labels=labels,
        )
        if self.rewards.labels is not None:
            self.labels_used = self.ctx.label_budget
        self.ctx.logger.info("rewards (%s): %s", cfg.reward.source, self.rewards.metrics)
        data = self.episodes.with_rewards(self.rewards.rewards)
        learner_config = cfg.learner
        if getattr(learner_config, "actor_lr_decay_steps", 0) is None:
            # IQL's cosine schedule spans the run (CORL: its whole run).
            learner_config = replace(learner_config, actor_lr_decay_steps=self.ctx.budget.amount)
        self.learner = get_learner(cfg.learner_id).cls(
            data,
            self.action_low,
            self.action_high,
            learner_config,
            (stream_seed(self.ctx.seed, "offline_learner") % 2**31,),
            self.ctx.device,
        )
        self.ctx.logger.info("learner: %s", self.learner.info)

    # ------------------------------------------------------------------ acting
    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Deterministic actions for ``(n, O)`` observations (stateless learners only)."""
        if isinstance(self.learner, dt.DecisionTransformer):
            raise TypeError("a Decision Transformer acts through episode_policy()")
        return self.learner.act(np.asarray(obs, dtype=np.float32)[None])[0]

    def episode_policy(self, n_envs: int, seed: int = 0) -> EpisodePolicy:
        """A policy for ``n_envs`` fresh episodes that keeps each episode's state.

        ``seed`` (the evaluator's, per round) draws the ``random`` control's rewards while
        acting, so a resumed run evaluates as an uninterrupted one.
        """
        return EpisodePolicy(self, n_envs, np.random.default_rng(seed))

    def step_rewards(
        self,
        obs: np.ndarray,
        acts: np.ndarray,
        true_rewards: np.ndarray | None,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """``(n,)`` the reward of ``n`` steps under this agent's reward source."""
        source = self.config.reward.source
        if source == "true":
            if true_rewards is None:
                raise ValueError("the true-reward reference needs the environment's rewards")
            return np.asarray(true_rewards, dtype=np.float32)
        if source == "zero":
            return np.zeros(len(obs), dtype=np.float32)
        if source == "random":
            return rng.uniform(0.0, 1.0, len(obs)).astype(np.float32)
        assert self.rewards is not None
        # The reward the dataset was relabelled with, offset included: a Decision
        # Transformer's return-to-go must fall by what its training targets fell by.
        return self.rewards.step_rewards(obs, acts)

    # ------------------------------------------------------------- checkpoints
    def save(self, directory: Path) -> None:
        """Write ``learner.pt`` (and ``reward_model.pt``, ``labels.npz`` if learned)."""
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "learner.pt") as tmp:
            torch.save(self.learner.state_dict(), tmp)
        if self.rewards is not None and self.rewards.model is not None:
            save_reward_model(self.rewards.model, directory / "reward_model.pt")
            save_dataset(self.rewards.labels, directory / "labels.npz")

    def save_state(self, directory: Path) -> None:
        """Everything needed to continue: :meth:`save` plus ``state.json``."""
        self.save(directory)
        state = {"format": STATE_FORMAT, "step": self.learner.updates, "labels": self.labels_used}
        write_text(directory / "state.json", json.dumps(state))

    def load_state(self, directory: Path) -> int:
        """Restore what :meth:`save_state` wrote; returns the updates already done.

        Raises:
            CheckpointError: If the state is missing, of another format, or does not fit.
        """
        try:
            state = json.loads((directory / "state.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read offline agent state in {directory}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{directory} holds no prefbench offline agent state")
        model = labels = None
        if self.config.reward.source == "learned":
            model = new_reward_model(
                self.episodes, self.config.reward, self.ctx.seed, self.ctx.device
            )
            restore_reward_model(model, directory / "reward_model.pt")
            labels = load_dataset(directory / "labels.npz")
        self._prepare(model, labels)
        try:
            self.learner.load_state_dict(
                torch.load(directory / "learner.pt", map_location="cpu", weights_only=True)
            )
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot restore the learner from {directory}: {exc}") from exc
        return int(self.learner.updates)


class EpisodePolicy:
    """Acts in ``n`` episodes at once; a Decision Transformer keeps its return-to-go.

    The evaluator calls :meth:`act` with each step's observations and then
    :meth:`observe` with the actions taken (and, for :attr:`OfflineAgent.sees_true_reward`
    agents only, the environment's rewards).
    """

    def __init__(self, agent: OfflineAgent, n_envs: int, rng: np.random.Generator) -> None:
        self.agent = agent
        self.rng = rng
        self._dt = (
            agent.learner.policy(n_envs)
            if isinstance(agent.learner, dt.DecisionTransformer)
            else None
        )

    def act(self, obs: np.ndarray) -> np.ndarray:
        """``(n, O)`` observations -> ``(n, A)`` actions."""
        obs = np.asarray(obs, dtype=np.float32)
        if self._dt is None:
            return self.agent.learner.act(obs[None])[0]
        return self._dt.act(obs[None])[0]

    def observe(
        self, obs: np.ndarray, acts: np.ndarray, true_rewards: np.ndarray | None = None
    ) -> None:
        """The step just taken: lower the return-to-go by its reward (Decision Transformer)."""
        if self._dt is not None:
            r = self.agent.step_rewards(np.asarray(obs), np.asarray(acts), true_rewards, self.rng)
            self._dt.observe(r[None])


class PrefOfflineAgent(OfflineAgent):
    """An offline learner on a reward model fit to a teacher's preferences on the dataset."""

    uses_teacher = True


def _spec(learner_id: str, source: str) -> AgentSpec:
    learner = LEARNERS[learner_id].config
    if learner_id == "iql" and source != "zero":
        # CORL's MuJoCo reward normalisation: episode returns span 1000 whatever the
        # source (all-zero rewards have no span to normalise).
        learner = replace(learner, reward_scale="dataset")
    cls = PrefOfflineAgent if source == "learned" else OfflineAgent
    return AgentSpec(
        cls, OfflineAgentConfig(learner_id, learner, OfflineRewardConfig(source=source))
    )


# Registered in prefbench.agents.protocol by these names.
BC = _spec("bc", "zero")
DT, PREF_DT, ZERO_DT, RANDOM_DT = (_spec("dt", s) for s in ("true", "learned", "zero", "random"))
RWR, PREF_RWR, ZERO_RWR, RANDOM_RWR = (
    _spec("rwr", s) for s in ("true", "learned", "zero", "random")
)
MLE_FILTER, PREF_MLE_FILTER, ZERO_MLE_FILTER, RANDOM_MLE_FILTER = (
    _spec("mle-filter", s) for s in ("true", "learned", "zero", "random")
)
IQL, PREF_IQL, ZERO_IQL, RANDOM_IQL = (
    _spec("iql", s) for s in ("true", "learned", "zero", "random")
)
