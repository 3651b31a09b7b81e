"""Baselines: the same RL learner on the true reward, and a uniformly random policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefbench.agents.protocol import AgentSpec, Reporter, RunContext, register_agent
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
from prefbench.envs.data import CheckpointError
from prefbench.envs.rollout import random_actions
from prefbench.envs.seeding import int31_seed, make_rng
from prefbench.envs.teachers import Teacher


@dataclass(frozen=True)
class TrueRewardConfig:
    """Settings of the true-reward baseline.

    Attributes:
        rl: The learner.
        sign_reward: Train on the sign of the reward (standard on Atari, where scores
            differ by orders of magnitude across games); evaluation still reports the score.
    """

    rl: RLConfig = field(default_factory=RLConfig)
    sign_reward: bool = False


class TrueRewardAgent(LearnerPolicy):
    """The RL learner trained on the environment's own reward (the upper reference).

    It runs through the same :class:`RewardVecEnv` and environment set-up as the
    preference agents, so the two differ only in where the reward comes from.
    """

    Config = TrueRewardConfig
    uses_teacher = False

    def __init__(
        self, ctx: RunContext, teacher: Teacher | None, config: TrueRewardConfig | None = None
    ) -> None:
        self.ctx = ctx
        self.config = config or TrueRewardConfig()
        rl = self.config.rl
        self.venv = make_training_env(
            ctx.task,
            rl.n_envs,
            ctx.seed,
            subprocess=rl.subprocess,
            sign_true_reward=self.config.sign_reward,
        )
        self.learner = build_learner(
            self.config.rl,
            ctx.task,
            self.venv,
            seed=int31_seed(ctx.seed, "learner"),
            device=ctx.device,
            log_dir=ctx.run_dir / "rl_log",
        )

    def learn(self, reporter: Reporter) -> None:
        """Train on the true reward for ``ctx.total_steps`` steps."""
        if self.learner.num_timesteps == 0:
            reporter.report(0)

        def after_rollout(step: int) -> None:
            returns = [t.true_return for t in self.venv.pop_finished()]
            reporter.report(
                step, metrics={"train_true_return": float(np.mean(returns))} if returns else None
            )

        learn_until(self.learner, self.ctx.total_steps, RolloutEndCallback(after_rollout))

    def save_state(self, directory: Path) -> None:
        """Write the policy and step count to continue training."""
        self.save(directory)
        write_state(directory / "state.json", {"step": int(self.learner.num_timesteps)})

    def load_state(self, directory: Path) -> int:
        """Restore what :meth:`save_state` wrote; returns the steps already taken."""
        state = read_state(directory / "state.json")
        try:
            step = int(state["step"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{directory} holds an inconsistent agent state: {exc}") from exc
        restore_learner(self.learner, directory / "policy.zip", step)
        return step

    def save(self, directory: Path) -> None:
        """Write ``policy.zip``."""
        self.save_policy(directory)


class RandomAgent:
    """Uniformly random actions; no training (the lower reference, score 0)."""

    uses_teacher = False

    def __init__(self, ctx: RunContext, teacher: Teacher | None) -> None:
        self.ctx = ctx
        self.action_space = ctx.task.spaces()[1]
        self.rng = make_rng(ctx.seed, "random_agent")

    def learn(self, reporter: Reporter) -> None:
        """Nothing to learn: report the start and the end."""
        reporter.report(0)
        reporter.report(self.ctx.total_steps)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Random actions, one per observation."""
        return random_actions(self.action_space, len(obs), self.rng)

    def save(self, directory: Path) -> None:
        """Nothing to save."""
        directory.mkdir(parents=True, exist_ok=True)


for _algo in ("ppo", "a2c", "trpo"):
    register_agent(
        _algo,
        AgentSpec(
            TrueRewardAgent,
            TrueRewardConfig(rl=RLConfig(algo=_algo)),
            f"{_algo.upper()} on the true environment reward (baseline)",
        ),
    )
for _name, _rl in ATARI_RL.items():
    register_agent(
        f"{_name}-atari",
        AgentSpec(
            TrueRewardAgent,
            TrueRewardConfig(rl=_rl, sign_reward=True),
            f"{_name.upper()} on the sign of the game score, the paper's Atari settings",
        ),
    )
register_agent("random", AgentSpec(RandomAgent, None, "uniformly random actions (baseline)"))
