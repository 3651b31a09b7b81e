"""Settings of ``prefbench data make`` (no heavy imports: the CLI builds flags from them)."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass

from prefbench.agents.presets import RL_PRESETS

#: Behaviour learners ``prefbench data make`` trains.
BEHAVIOUR_ALGOS = ("ppo", "sac")


@dataclass(frozen=True)
class DataMakeConfig:
    """How ``prefbench data make`` builds a task's datasets.

    Attributes:
        behaviour_steps: Training steps of the behaviour run (its last policy is the expert).
        snapshot_every: Steps between policy snapshots, the candidates for ``medium``.
        dataset_steps: Steps per collected dataset (whole episodes, so a little more).
        eval_episodes: Deterministic episodes that score each snapshot and the references.
        medium_fraction: ``medium`` is the snapshot nearest this normalised score / 100.
        collect_envs: Parallel environments for collection and scoring.
        seed: Seed of the behaviour run and of every collection.
        preset: RL preset of the PPO behaviour learner.
        algo: The behaviour learner: ``ppo`` (with ``preset``) or ``sac`` (D4RL's
            choice: SB3's defaults, 256x256 networks, 10k random steps first).
    """

    behaviour_steps: int = 300_000
    snapshot_every: int = 20_000
    dataset_steps: int = 100_000
    eval_episodes: int = 10
    medium_fraction: float = 1 / 3
    collect_envs: int = 8
    seed: int = 0
    preset: str = "zoo"
    algo: str = "ppo"

    def __post_init__(self) -> None:
        problems = [
            msg
            for ok, msg in (
                (self.behaviour_steps >= 1, "behaviour_steps must be >= 1"),
                (
                    1 <= self.snapshot_every <= self.behaviour_steps,
                    "snapshot_every must be in [1, behaviour_steps]",
                ),
                (self.dataset_steps >= 1, "dataset_steps must be >= 1"),
                (self.eval_episodes >= 1, "eval_episodes must be >= 1"),
                (0 < self.medium_fraction < 1, "medium_fraction must be in (0, 1)"),
                (self.collect_envs >= 1, "collect_envs must be >= 1"),
                (self.seed >= 0, "seed must be >= 0"),
                (self.algo in BEHAVIOUR_ALGOS, f"algo must be one of {', '.join(BEHAVIOUR_ALGOS)}"),
            )
            if not ok
        ]
        RL_PRESETS.get(self.preset)
        if problems:
            raise ValueError("; ".join(problems))

    def behaviour_key(self) -> str:
        """A short hash of the settings the behaviour run depends on."""
        keys = ("behaviour_steps", "snapshot_every", "eval_episodes", "seed", "preset")
        if self.algo != "ppo":  # PPO builds keep the keys they had before SAC
            keys = (*keys, "algo")
        text = json.dumps({k: asdict(self)[k] for k in keys}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


#: One line of help per setting, for the command line.
_HELP = {
    "behaviour_steps": "steps of the behaviour run (its last policy is the expert)",
    "snapshot_every": "steps between policy snapshots",
    "dataset_steps": "steps per collected dataset",
    "eval_episodes": "episodes that score a snapshot and the references",
    "medium_fraction": "medium: the snapshot nearest this fraction of the expert's score",
    "collect_envs": "parallel environments when collecting",
    "seed": "seed of the behaviour run and the collection",
    "preset": "RL preset of the PPO behaviour learner",
    "algo": "behaviour learner: ppo (with --preset) or sac (D4RL's)",
}


def command_line(name: str, config: DataMakeConfig) -> str:
    """The ``prefbench data make`` command that builds ``name`` with ``config``.

    Settings at their defaults are left out, so the line is the one a user would type.
    """
    default = DataMakeConfig()
    flags = [
        f"--{f.name.replace('_', '-')} {getattr(config, f.name)}"
        for f in dataclasses.fields(DataMakeConfig)
        if getattr(config, f.name) != getattr(default, f.name)
    ]
    return " ".join(["prefbench data make", name, *flags])


def config_flags() -> list[tuple[str, object, type, str]]:
    """``(flag, default, type, help)`` for every :class:`DataMakeConfig` field."""
    out = []
    for f in dataclasses.fields(DataMakeConfig):
        default = f.default
        out.append((f"--{f.name.replace('_', '-')}", default, type(default), _HELP[f.name]))
    return out


def config_from_args(args: argparse.Namespace) -> DataMakeConfig:
    """The settings given on the command line."""
    return DataMakeConfig(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(DataMakeConfig)}
    )
