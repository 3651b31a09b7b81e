"""Deep RL from human preferences (Christiano et al. 2017), with a synthetic teacher.

The loop, assembled from injected parts (each has a default):

* trajectory source: the agent's own rollouts, recorded by :class:`RewardVecEnv`, plus
  random-policy episodes for the first labels;
* query selector: ``disagreement`` over 10x oversampled candidates (or ``uniform``);
* teacher: any :class:`~prefbench.envs.teachers.Teacher`;
* reward trainer: :class:`~prefbench.agents.reward_model.RewardModel`;
* RL learner: any on-policy SB3 algorithm, trained on the learned reward only.

Label schedule (MuJoCo, paper appendix A.1): 25% of the budget is labelled on clips from a
random policy before RL starts; the rest arrives at a rate proportional to
``2e6 / (T + 2e6)`` over ``T`` environment steps, i.e. the cumulative count follows
``log(1 + T / 2e6)`` scaled to use the whole budget by the last step. Atari (the
``*-atari`` agents): 500 labels and 200 epochs of pre-training, then a rate proportional to
``5e6 / (T + 5e6)``, training on the newest 3,000 labels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefbench.agents.protocol import AgentSpec, Reporter, RunContext, register_agent
from prefbench.agents.query import SELECTORS, DisagreementSelector, QuerySelector
from prefbench.agents.reward_checkpoint import load_reward_model, save_reward_model
from prefbench.agents.reward_model import RewardModel, RewardModelConfig, action_dim
from prefbench.agents.reward_wrapper import make_training_env
from prefbench.agents.rl import (
    ATARI_RL,
    LearnerPolicy,
    RLConfig,
    RolloutEndCallback,
    build_learner,
    learn_until,
    read_state,
    restore_learner,
    write_state,
)
from prefbench.envs.data import (
    CheckpointError,
    PreferenceDataset,
    Trajectory,
    load_dataset,
    save_dataset,
)
from prefbench.envs.rollout import collect_random
from prefbench.envs.seeding import int31_seed, make_rng, stream_seed
from prefbench.envs.segments import TrajectoryStore, locate_steps
from prefbench.envs.teachers import CalibratedTeacher, ReturnScale, Teacher


def label_schedule(
    step: int, total_steps: int, budget: int, initial: int, decay_steps: float
) -> int:
    """Labels that should have been asked for by ``step`` (the paper's schedule).

    Args:
        step: Environment steps so far (0 before RL starts).
        total_steps: Steps in the whole run.
        budget: Total labels.
        initial: Labels asked before RL starts (random-policy clips), at most ``budget``.
        decay_steps: ``c`` in the rate ``c / (T + c)``.

    Returns:
        A count in ``[min(initial, budget), budget]``, non-decreasing in ``step``.
    """
    initial = min(max(initial, 0), budget)
    if total_steps <= 0 or step >= total_steps:
        return budget
    frac = math.log1p(max(step, 0) / decay_steps) / math.log1p(total_steps / decay_steps)
    return min(budget, initial + math.floor((budget - initial) * frac))


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
        SELECTORS.get(self.query)


@dataclass(frozen=True)
class PreferenceAgentConfig:
    """All settings of a preference agent (override with ``--set group.key=value``)."""

    rl: RLConfig = field(default_factory=RLConfig)
    reward: RewardModelConfig = field(default_factory=RewardModelConfig)
    loop: PreferenceLoopConfig = field(default_factory=PreferenceLoopConfig)


def _make_selector(config: PreferenceLoopConfig) -> QuerySelector:
    cls = SELECTORS.get(config.query)
    return cls(config.oversample) if cls is DisagreementSelector else cls()


class PreferenceAgent(LearnerPolicy):
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
        self.ctx = ctx
        self.config = config or PreferenceAgentConfig()
        self.teacher = teacher
        self.selector = selector or _make_selector(self.config.loop)
        task = ctx.task
        self.clip_length = task.clip_length
        obs_space, act_space = task.spaces()
        self.reward_model = RewardModel(
            obs_space.shape,
            action_dim(act_space),
            self.config.reward,
            seed=stream_seed(ctx.seed, "reward_model"),
            device=ctx.device,
        )
        rl = self.config.rl
        self.venv = make_training_env(
            task, rl.n_envs, ctx.seed, self.reward_model.reward, subprocess=rl.subprocess
        )
        self.learner = build_learner(
            self.config.rl,
            task,
            self.venv,
            seed=int31_seed(ctx.seed, "learner"),
            device=ctx.device,
            log_dir=ctx.run_dir / "rl_log",
        )
        self.query_rng = make_rng(ctx.seed, "queries")
        self.store = TrajectoryStore(self.config.loop.pool_steps)
        self.dataset: PreferenceDataset | None = None
        self.labels_asked = 0
        self._update_every = min(self.config.loop.update_every, max(1, ctx.total_steps // 20))
        self._next_update = self._update_every
        self._fit_metrics: dict[str, float] = {}
        self._train_returns: list[float] = []
        self._resumed = False

    # ------------------------------------------------------------------ labels
    def _query(self, trajectories: list[Trajectory], n: int, use_model: bool) -> None:
        """Ask the teacher about ``n`` pairs from ``trajectories`` and add the answers."""
        if isinstance(self.teacher, CalibratedTeacher):
            self.teacher.calibrate(ReturnScale.from_trajectories(trajectories, self.clip_length))
        model = self.reward_model if use_model else None
        pairs = self.selector.select(trajectories, n, self.clip_length, self.query_rng, model)
        labels = self.teacher.label(pairs)
        new = PreferenceDataset.from_labels(pairs, labels)
        self.dataset = new if self.dataset is None else self.dataset.extend(new)
        self.labels_asked += n

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

    def _target(self, step: int) -> int:
        loop, budget = self.config.loop, self.ctx.label_budget
        initial = loop.initial_labels or round(budget * loop.initial_label_fraction)
        # Aim to have the whole budget by the last update before the end, where the
        # labels can still shape the policy.
        return label_schedule(
            step,
            max(1, self.ctx.total_steps - self._update_every),
            budget,
            initial,
            loop.label_decay_steps,
        )

    # ---------------------------------------------------------------- training
    def learn(self, reporter: Reporter) -> None:
        """Initial labels from a random policy, then RL on the learned reward.

        After :meth:`load_state`, training goes on from the restored step instead.
        """
        callback = RolloutEndCallback(lambda s: self._after_rollout(s, reporter))
        if self._resumed:
            learn_until(self.learner, self.ctx.total_steps, callback)
            return
        loop, task = self.config.loop, self.ctx.task
        random_steps = loop.random_steps or max(4 * task.horizon, 8000)
        random_trajs = collect_random(task, random_steps, int31_seed(self.ctx.seed, "random"))
        n0 = self._target(0)
        if n0 > 0:
            self._query(random_trajs, n0, use_model=False)
            self._fit(loop.initial_epochs)
        self._renormalize(random_trajs)
        self.ctx.logger.info(
            "initial labels: %d, reward model %s", self.labels_asked, self._fit_metrics
        )
        reporter.report(
            0, labels=self.labels_asked, reward_model=self.reward_model, metrics=self._fit_metrics
        )
        learn_until(self.learner, self.ctx.total_steps, callback)

    def _after_rollout(self, step: int, reporter: Reporter) -> None:
        finished = self.venv.pop_finished()
        self.store.add(finished)
        self._train_returns.extend(t.true_return for t in finished)
        if step >= self._next_update and len(self.store):
            self._next_update = step + self._update_every
            pool = self.store.recent()
            want = self._target(step) - self.labels_asked
            if want > 0:
                self._query(pool, want, use_model=True)
            self._fit()
            self._renormalize(pool)
        metrics = dict(self._fit_metrics)
        if self._train_returns:
            metrics["train_true_return"] = float(np.mean(self._train_returns))
            self._train_returns = []
        reporter.report(
            step, labels=self.labels_asked, reward_model=self.reward_model, metrics=metrics
        )

    def save_state(self, directory: Path) -> None:
        """Write the policy, reward model, labels and loop state to continue training."""
        self.save(directory)
        state = {
            "step": int(self.learner.num_timesteps),
            "labels_asked": self.labels_asked,
            "next_update": self._next_update,
            "fit_metrics": self._fit_metrics,
            "query_rng": self.query_rng.bit_generator.state,
            "teacher_rng": _rng_state(self.teacher),
        }
        write_state(directory / "state.json", state)

    def load_state(self, directory: Path) -> int:
        """Restore what :meth:`save_state` wrote; returns the steps already taken."""
        state = read_state(directory / "state.json")
        try:
            step = int(state["step"])
            self.labels_asked = int(state["labels_asked"])
            self._next_update = int(state["next_update"])
            self._fit_metrics = {k: float(v) for k, v in state["fit_metrics"].items()}
            self.query_rng.bit_generator.state = state["query_rng"]
            if state["teacher_rng"] is not None:
                self.teacher.rng.bit_generator.state = state["teacher_rng"]  # type: ignore[attr-defined]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{directory} holds an inconsistent agent state: {exc}") from exc
        model = load_reward_model(directory / "reward_model.pt", device=self.reward_model.device)
        if model.config != self.reward_model.config:
            raise CheckpointError(f"{directory} holds a reward model of another config")
        self.reward_model = model
        self.venv.reward_fn = model.reward
        if (directory / "labels.npz").is_file():
            self.dataset = load_dataset(directory / "labels.npz")
        restore_learner(self.learner, directory / "policy.zip", step)
        self._resumed = True
        return step

    def save(self, directory: Path) -> None:
        """Write ``policy.zip``, ``reward_model.pt`` and ``labels.npz``."""
        self.save_policy(directory)
        save_reward_model(self.reward_model, directory / "reward_model.pt")
        if self.dataset is not None:
            save_dataset(self.dataset, directory / "labels.npz")


def _rng_state(teacher: Teacher) -> dict | None:
    rng = getattr(teacher, "rng", None)
    return rng.bit_generator.state if isinstance(rng, np.random.Generator) else None


#: The paper's Atari reward model: the conv encoder, one hidden layer of 64, observations
#: only, rewards handed to the agent with standard deviation 0.05.
ATARI_REWARD = RewardModelConfig(
    encoder="cnn", hidden_sizes=(64,), use_actions=False, output_std=0.05
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

for _algo in ("ppo", "a2c", "trpo"):
    register_agent(
        f"pref-{_algo}",
        AgentSpec(
            PreferenceAgent,
            PreferenceAgentConfig(rl=RLConfig(algo=_algo)),
            f"{_algo.upper()} on a reward model fit to teacher preferences (Christiano 2017)",
            uses_teacher=True,
        ),
    )
for _name, _rl in ATARI_RL.items():
    register_agent(
        f"pref-{_name}-atari",
        AgentSpec(
            PreferenceAgent,
            PreferenceAgentConfig(rl=_rl, reward=ATARI_REWARD, loop=ATARI_LOOP),
            f"{_name.upper()} on a conv reward model from preferences, the paper's Atari settings",
            uses_teacher=True,
        ),
    )
