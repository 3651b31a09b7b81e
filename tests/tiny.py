"""Run configurations small enough for tests: Pendulum, two envs, short rollouts."""

import dataclasses
from pathlib import Path

from prefbench.benchmarks.run_spec import RunSpec, TrainConfig

#: Learner settings of a test run.
TINY = ("rl.n_envs=2", "rl.n_steps=256")
#: The same for preference agents, with a short random phase and one initial epoch.
TINY_PREF = (*TINY, "loop.random_steps=400", "loop.initial_epochs=1")

_SPEC_FIELDS = {f.name for f in dataclasses.fields(RunSpec)}


def tiny_config(out: Path, agent: str = "pref-ppo", *more: str, **fields: object) -> TrainConfig:
    """A Pendulum run of ``agent`` with the tiny overrides plus ``more``.

    ``fields`` replace the defaults of the run spec or the train config
    (``overrides=...`` replaces the overrides entirely).
    """
    spec: dict[str, object] = {
        "task": "pendulum",
        "agent": agent,
        "label_budget": 40,
        "steps": 2048,
        "eval_every": 1024,
        "eval_episodes": 1,
        "accuracy_pairs": 20,
        "overrides": (*(TINY_PREF if agent.startswith("pref") else TINY), *more),
    }
    run: dict[str, object] = {"out": out, "progress": False}
    for key, value in fields.items():
        (spec if key in _SPEC_FIELDS else run)[key] = value
    return TrainConfig(RunSpec(**spec), **run)  # type: ignore[arg-type]
