"""Run configurations small enough for tests: Pendulum, two envs, short rollouts."""

from pathlib import Path

from prefbench.benchmarks.train import TrainConfig

#: Learner settings of a test run.
TINY = ("rl.n_envs=2", "rl.n_steps=256")
#: The same for preference agents, with a short random phase and one initial epoch.
TINY_PREF = (*TINY, "loop.random_steps=400", "loop.initial_epochs=1")


def tiny_config(out: Path, agent: str = "pref-ppo", *more: str, **fields: object) -> TrainConfig:
    """A Pendulum run of ``agent`` with the tiny overrides plus ``more``.

    ``fields`` replace the defaults (``overrides=...`` replaces the overrides entirely).
    """
    base: dict[str, object] = {
        "task": "pendulum",
        "agent": agent,
        "labels": 40,
        "steps": 2048,
        "eval_every": 1024,
        "eval_episodes": 1,
        "accuracy_pairs": 20,
        "out": out,
        "progress": False,
        "overrides": (*(TINY_PREF if agent.startswith("pref") else TINY), *more),
    }
    base.update(fields)
    return TrainConfig(**base)  # type: ignore[arg-type]
