"""Baselines: the same RL learner on the true reward, and a uniformly random policy."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefbench.agents.protocol import AgentSpec, Reporter, RunContext
from prefbench.agents.rl import ATARI_RL, RLConfig
from prefbench.agents.sb3_agent import SB3Agent
from prefbench.envs.rollout import random_actions
from prefbench.envs.seeding import make_rng
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


class TrueRewardAgent(SB3Agent):
    """The RL learner trained on the environment's own reward (the upper reference).

    It runs through the same :class:`RewardVecEnv` and environment set-up as the
    preference agents, so the two differ only in where the reward comes from.
    """

    Config = TrueRewardConfig
    uses_teacher = False

    def __init__(
        self, ctx: RunContext, teacher: Teacher | None, config: TrueRewardConfig | None = None
    ) -> None:
        self.config = config or TrueRewardConfig()
        super().__init__(ctx, self.config.rl, sign_true_reward=self.config.sign_reward)

    def learn(self, reporter: Reporter) -> None:
        """Train on the true reward for the budget, reporting after every rollout."""
        if self.steps_done == 0:
            reporter.report(0)
        self.train_learner(lambda step: reporter.report(step, metrics=self.collect()[1]))


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
        reporter.report(self.ctx.budget.amount)

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Random actions, one per observation."""
        return random_actions(self.action_space, len(obs), self.rng)

    def save(self, directory: Path) -> None:
        """Nothing to save."""
        directory.mkdir(parents=True, exist_ok=True)


# Registered by these names in prefbench.agents.protocol.
PPO = AgentSpec(TrueRewardAgent, TrueRewardConfig(rl=RLConfig(algo="ppo")))
A2C = AgentSpec(TrueRewardAgent, TrueRewardConfig(rl=RLConfig(algo="a2c")))
TRPO = AgentSpec(TrueRewardAgent, TrueRewardConfig(rl=RLConfig(algo="trpo")))
A2C_ATARI = AgentSpec(TrueRewardAgent, TrueRewardConfig(rl=ATARI_RL["a2c"], sign_reward=True))
PPO_ATARI = AgentSpec(TrueRewardAgent, TrueRewardConfig(rl=ATARI_RL["ppo"], sign_reward=True))
RANDOM = AgentSpec(RandomAgent)
