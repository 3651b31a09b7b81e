"""Deep RL from human preferences (Christiano et al. 2017), with a synthetic teacher.

The loop, assembled from injected parts (each has a default):

* trajectory source: the agent's own rollouts, recorded by :class:`RewardVecEnv`, plus
  random-policy episodes for the first labels;
* query selector: ``disagreement`` over 10x oversampled candidates (or ``uniform``), built
  from the selector registry;
* teacher: any :class:`~prefbench.envs.teachers.Teacher`;
* reward trainer: :class:`~prefbench.agents.reward_model.RewardModel`;
* schedule: :class:`~prefbench.agents.schedule.PreferenceSchedule` (labels and refits);
* RL learner: any on-policy SB3 algorithm, trained on the learned reward only.

:meth:`PreferenceAgent.learn` reads as the algorithm; its docstring states it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from prefbench.agents.protocol import AgentSpec, Reporter, RunContext
from prefbench.agents.query import QuerySelector, SelectorOptions, make_selector
from prefbench.agents.reward_checkpoint import restore_reward_model, save_reward_model
from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.agents.reward_nets import action_dim
from prefbench.agents.rl import ATARI_RL, RLConfig
from prefbench.agents.sb3_agent import SB3Agent
from prefbench.agents.schedule import PreferenceSchedule
from prefbench.envs.data import (
    PreferenceDataset,
    Trajectory,
    load_dataset,
    save_dataset,
)
from prefbench.envs.rollout import collect_random
from prefbench.envs.seeding import int31_seed, make_rng, stream_seed
from prefbench.envs.segments import TrajectoryStore, locate_steps
from prefbench.envs.teachers import CalibratedTeacher, ReturnScale, Teacher


@dataclass(frozen=True)
class PreferenceLoopConfig:
    """Settings of the preference loop.

    Attributes:
        initial_label_fraction: Share of labels from random-policy clips before RL.
        initial_labels: Number of labels before RL instead (> 0 overrides the fraction;
            Atari: 500), capped at the budget.
        label_decay_steps: ``c`` of the label rate ``c / (T + c)``.
        update_every: Environment steps between reward-model updates (rounded up to whole
            rollouts, and at most a twentieth of the run so short runs get updates too).
        initial_epochs: Reward-model epochs on the initial labels.
        query: Query selector id (``disagreement`` or ``uniform``).
        oversample: Candidates per query for ``disagreement``.
        random_steps: Random-policy steps for the initial clips (0: ``max(4 * horizon, 8000)``).
        pool_steps: Recent agent steps that queries are drawn from.
        norm_samples: States used to re-normalise the reward after each fit.
        recent_labels: Train on only the newest labels (0: all).
    """

    initial_label_fraction: float = 0.25
    initial_labels: int = 0
    label_decay_steps: float = 2e6
    update_every: int = 10_000
    initial_epochs: int = 30
    query: str = "disagreement"
    oversample: int = 10
    random_steps: int = 0
    pool_steps: int = 50_000
    norm_samples: int = 10_000
    recent_labels: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.initial_label_fraction <= 1:
            raise ValueError("loop.initial_label_fraction must be in [0, 1]")
        if not self.label_decay_steps > 0:
            raise ValueError("loop.label_decay_steps must be > 0")
        if self.update_every < 1 or self.initial_epochs < 0 or self.pool_steps < 1:
            raise ValueError(
                "loop.update_every and loop.pool_steps must be >= 1, initial_epochs >= 0"
            )
        if (
            self.oversample < 1
            or self.random_steps < 0
            or self.norm_samples < 1
            or self.recent_labels < 0
            or self.initial_labels < 0
        ):
            raise ValueError(
                "loop.oversample and loop.norm_samples >= 1; random_steps, recent_labels, "
                "initial_labels >= 0"
            )
        make_selector(self.query, SelectorOptions(self.oversample))  # fail early, not mid-run


@dataclass(frozen=True)
class PreferenceAgentConfig:
    """All settings of a preference agent (override with ``--set group.key=value``)."""

    rl: RLConfig = field(default_factory=RLConfig)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    loop: PreferenceLoopConfig = field(default_factory=PreferenceLoopConfig)


class PreferenceAgent(SB3Agent):
    """An RL agent that learns only from a reward model fit to teacher preferences.

    Args:
        ctx: Run context (task, seed, budgets, device, logger).
        teacher: The labeller; required.
        config: Settings; see :class:`PreferenceAgentConfig`.
        selector: Query selector; defaults to the one named by ``config.loop.query``.
    """

    Config = PreferenceAgentConfig
    uses_teacher = True

    def __init__(
        self,
        ctx: RunContext,
        teacher: Teacher | None,
        config: PreferenceAgentConfig | None = None,
        *,
        selector: QuerySelector | None = None,
    ) -> None:
        if teacher is None:
            raise ValueError("a preference agent needs a teacher")
        if ctx.label_budget < 1:
            raise ValueError(
                f"a preference agent needs a label budget >= 1, got {ctx.label_budget}"
            )
        self.config = config or PreferenceAgentConfig()
        loop = self.config.loop
        self.teacher = teacher
        self.selector = selector or make_selector(loop.query, SelectorOptions(loop.oversample))
        self.clip_length = ctx.task.clip_length
        obs_space, act_space = ctx.task.spaces()
        self.reward_model = RewardModel(
            obs_space.shape,
            action_dim(act_space),
            self.config.reward,
            seed=stream_seed(ctx.seed, "reward_model"),
            device=ctx.device,
        )
        # The environments score steps with this model; a resume restores it in place.
        super().__init__(ctx, self.config.rl, self.reward_model.reward)
        self.schedule = PreferenceSchedule.build(
            ctx.budget.amount,
            ctx.label_budget,
            initial_labels=loop.initial_labels,
            initial_fraction=loop.initial_label_fraction,
            decay_steps=loop.label_decay_steps,
            update_every=loop.update_every,
        )
        self.query_rng = make_rng(ctx.seed, "queries")
        self.store = TrajectoryStore(loop.pool_steps)
        self.dataset: PreferenceDataset | None = None
        self.labels_used = 0
        self.last_fit = 0
        self._fit_metrics: dict[str, float] = {}
        self._started = False  # the random-policy phase is done (also after a resume)

    # ----------------------------------------------------------------- the loop
    def learn(self, reporter: Reporter) -> None:
        """Learn a policy from the teacher's preferences alone.

        Algorithm (Christiano et al. 2017, section 2.2):

        0. Start: run a random policy; *query* ``initial`` pairs of its clips; the
           teacher *labels* them; *fit* the reward model (``loop.initial_epochs``);
           *renormalise* its output on those states; *report*.
        1. After every rollout of the RL learner, before its update:

           a. *collect* the episodes the rollout finished into the pool of recent ones;
           b. when a refit is due (``schedule.fit_due``): *query* pairs from the pool
              (the selector ranks candidates by ensemble disagreement) up to
              ``schedule.labels_wanted(step)``, the teacher *labels* them, *fit* the
              reward model on all labels (or the newest), *renormalise* its output on
              pool states;
           c. *report* progress (the runner evaluates when due).

        The learner trains on the reward model's output only; after :meth:`load_state`
        training goes on from the restored step.
        """
        if not self._started:
            self._start(reporter)
        self.train_learner(lambda step: self._iteration(step, reporter))

    def _start(self, reporter: Reporter) -> None:
        """Step 0: labels on random-policy clips, a first fit, the first report."""
        loop, task = self.config.loop, self.ctx.task
        random_steps = loop.random_steps or max(4 * task.horizon, 8000)
        clips_from = collect_random(task, random_steps, int31_seed(self.ctx.seed, "random"))
        wanted = self.schedule.labels_wanted(0)
        if wanted > 0:
            self._query_and_label(clips_from, wanted, use_model=False)
            self._fit(loop.initial_epochs)
        self._renormalize(clips_from)
        self._started = True
        self.ctx.logger.info(
            "initial labels: %d, reward model %s", self.labels_used, self._fit_metrics
        )
        reporter.report(
            0,
            labels_used=self.labels_used,
            reward_model=self.reward_model,
            metrics=self._fit_metrics,
        )

    def _iteration(self, step: int, reporter: Reporter) -> None:
        """Step 1 of :meth:`learn`, after the rollout that ended at ``step``."""
        finished, metrics = self.collect()
        self.store.add(finished)
        if self.schedule.fit_due(step, self.last_fit) and len(self.store):
            self.last_fit = step
            pool = self.store.recent()
            wanted = self.schedule.labels_wanted(step) - self.labels_used
            if wanted > 0:
                self._query_and_label(pool, wanted, use_model=True)
            self._fit()
            self._renormalize(pool)
        reporter.report(
            step,
            labels_used=self.labels_used,
            reward_model=self.reward_model,
            metrics={**self._fit_metrics, **metrics},
        )

    # ---------------------------------------------------------------- the parts
    def _query_and_label(self, trajectories: list[Trajectory], n: int, use_model: bool) -> None:
        """Select ``n`` pairs from ``trajectories``, ask the teacher, keep the answers."""
        if isinstance(self.teacher, CalibratedTeacher):
            self.teacher.calibrate(ReturnScale.from_trajectories(trajectories, self.clip_length))
        model = self.reward_model if use_model else None
        pairs = self.selector.select(trajectories, n, self.clip_length, self.query_rng, model)
        new = PreferenceDataset.from_labels(pairs, self.teacher.label(pairs))
        self.dataset = new if self.dataset is None else self.dataset.extend(new)
        self.labels_used += n

    def _fit(self, epochs: int | None = None) -> None:
        if self.dataset is None or len(self.dataset) == 0:
            return
        data = self.dataset
        if self.config.loop.recent_labels:
            data = data.recent(self.config.loop.recent_labels)
        stats = self.reward_model.fit(data, epochs, first_label=len(self.dataset) - len(data))
        self._fit_metrics = {**stats.summary(), "rm_labels": float(len(self.dataset))}

    def _renormalize(self, trajectories: list[Trajectory]) -> None:
        lengths = np.array([len(t) for t in trajectories])
        total = int(lengths.sum())
        idx = self.query_rng.choice(
            total, size=min(total, self.config.loop.norm_samples), replace=False
        )
        # Gather only the sampled steps: concatenating every (stacked) frame would not fit.
        steps = [(trajectories[w], i) for w, i in zip(*locate_steps(lengths, idx), strict=True)]
        obs = np.stack([t.obs[i] for t, i in steps])
        acts = np.stack([t.acts[i] for t, i in steps])
        self.reward_model.update_normalization(obs, acts)

    # ------------------------------------------------------------- checkpoints
    def loop_state(self) -> dict[str, Any]:
        """Label count, last refit, fit metrics and the random generators."""
        rng = getattr(self.teacher, "rng", None)
        return {
            "labels_used": self.labels_used,
            "last_fit": self.last_fit,
            "fit_metrics": self._fit_metrics,
            "query_rng": self.query_rng.bit_generator.state,
            "teacher_rng": rng.bit_generator.state
            if isinstance(rng, np.random.Generator)
            else None,
        }

    def restore_loop_state(self, state: dict[str, Any], directory: Path) -> None:
        """Restore the loop, the reward model (in place) and the labels."""
        self.labels_used = int(state["labels_used"])
        self.last_fit = int(state["last_fit"])
        self._fit_metrics = {k: float(v) for k, v in state["fit_metrics"].items()}
        self.query_rng.bit_generator.state = state["query_rng"]
        if state["teacher_rng"] is not None:
            self.teacher.rng.bit_generator.state = state["teacher_rng"]  # type: ignore[attr-defined]
        restore_reward_model(self.reward_model, directory / "reward_model.pt")
        if (directory / "labels.npz").is_file():
            self.dataset = load_dataset(directory / "labels.npz")
        self._started = True

    def save(self, directory: Path) -> None:
        """Write ``policy.zip``, ``reward_model.pt`` and ``labels.npz``."""
        super().save(directory)
        save_reward_model(self.reward_model, directory / "reward_model.pt")
        if self.dataset is not None:
            save_dataset(self.dataset, directory / "labels.npz")


#: The paper's Atari reward model: the conv encoder, one hidden layer of 64, observations
#: only, rewards handed to the agent with standard deviation 0.05.
ATARI_REWARD = RewardModelConfig(
    encoder="cnn", hidden_sizes=(64,), use_actions=False, input_norm=False, output_std=0.05
)
#: The paper's Atari schedule: 500 labels and 200 epochs first, rate 5e6 / (T + 5e6), the
#: newest 3,000 labels; 20k random steps give the first clips (an Atari episode is long).
ATARI_LOOP = PreferenceLoopConfig(
    initial_labels=500,
    initial_epochs=200,
    label_decay_steps=5e6,
    recent_labels=3000,
    random_steps=20_000,
    norm_samples=2000,
)

# Registered by these names in prefbench.agents.protocol.
PREF_PPO = AgentSpec(PreferenceAgent, PreferenceAgentConfig(rl=RLConfig(algo="ppo")))
PREF_A2C = AgentSpec(PreferenceAgent, PreferenceAgentConfig(rl=RLConfig(algo="a2c")))
PREF_TRPO = AgentSpec(PreferenceAgent, PreferenceAgentConfig(rl=RLConfig(algo="trpo")))
PREF_A2C_ATARI = AgentSpec(
    PreferenceAgent,
    PreferenceAgentConfig(rl=ATARI_RL["a2c"], reward=ATARI_REWARD, loop=ATARI_LOOP),
)
PREF_PPO_ATARI = AgentSpec(
    PreferenceAgent,
    PreferenceAgentConfig(rl=ATARI_RL["ppo"], reward=ATARI_REWARD, loop=ATARI_LOOP),
)
