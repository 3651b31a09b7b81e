"""A user agent that plugs in by import path (``plugin_example:MyAgent``)."""

from pathlib import Path

import numpy as np

from prefbench.envs.tasks import TaskSpec

SHORT_PENDULUM = TaskSpec("short-pendulum", "Pendulum-v1", 100)


class MyAgent:
    """Always pushes with the largest action (a user-defined agent)."""

    uses_teacher = False

    def __init__(self, ctx, teacher):
        self.ctx = ctx
        self.teacher = teacher
        self.action_space = ctx.task.spaces()[1]
        self.learned = False

    def learn(self, reporter):
        reporter.report(0)
        self.learned = True
        reporter.report(self.ctx.budget.amount, metrics={"plugin_metric": 1.5})

    def predict(self, obs):
        return np.repeat(self.action_space.high[None], len(obs), axis=0)

    def save(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "plugin.txt").write_text("saved")


class NotAnAgent:
    """Has no learn/predict/save."""

    uses_teacher = False

    def __init__(self, ctx, teacher):
        self.ctx = ctx


NOT_A_CLASS = 42


class CrashingAgent(MyAgent):
    """Fails during training (a cell that crashes)."""

    def learn(self, reporter):
        reporter.report(0)
        raise RuntimeError("boom: this cell crashes on purpose")


_TINY_RL = ("rl.n_envs=2", "rl.n_steps=128")
_TINY_PREF = (*_TINY_RL, "loop.random_steps=400", "loop.initial_epochs=1")


def _suite(name, agents, steps=512, seeds=2, **kw):
    from prefbench.benchmarks.suites import Suite

    return Suite(
        name=name,
        description=name,
        tasks=("pendulum",),
        agents=agents,
        steps={"*": steps},
        seeds=seeds,
        eval_every=256,
        eval_episodes=1,
        **kw,
    )


def _entries():
    from prefbench.benchmarks.suites import AgentEntry

    return (
        AgentEntry("pref-ppo", label_budgets=(10, 20), overrides=_TINY_PREF),
        AgentEntry("ppo", overrides=_TINY_RL),
        AgentEntry("random"),
    )


TINY_SUITE = _suite("tiny", _entries())
OTHER_SUITE = _suite("other", _entries())
SLOW_SUITE = _suite("slow", _entries(), steps=6144, seeds=2)


def _crash_entries():
    from prefbench.benchmarks.suites import AgentEntry

    return (
        AgentEntry("plugin_example:CrashingAgent", agent_name="crash"),
        AgentEntry("ppo", overrides=_TINY_RL),
        AgentEntry("random"),
    )


CRASH_SUITE = _suite("crash", _crash_entries(), seeds=1)


def _zero_budget_entries():
    from prefbench.benchmarks.suites import AgentEntry

    return (AgentEntry("pref-ppo", label_budgets=(0,)), AgentEntry("random"))


ZERO_BUDGET_SUITE = _suite("zero-budget", _zero_budget_entries())


class CoinFlipTeacher:
    """Answers every pair by a fair coin, whatever the clips (a control for learning tests)."""

    def __init__(self, rng):
        self.rng = rng

    def label(self, pairs):
        from prefbench.envs.data import Labels

        n = len(pairs)
        return Labels(self.rng.integers(0, 2, n).astype(np.float32), np.ones(n, dtype=bool))


#: Reacher's shape on Pendulum: 50-step episodes and 50-step clips, one clip per episode.
WHOLE_EPISODE_PENDULUM = TaskSpec("whole-episode-pendulum", "Pendulum-v1", 50, clip_steps=50)
