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
        reporter.report(self.ctx.total_steps, metrics={"plugin_metric": 1.5})

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
