"""Pendulum episodes for the offline tests: a PD controller's and uniform random ones."""

from __future__ import annotations

import numpy as np

from prefbench.envs.episodes import Episodes


def pendulum_episodes() -> Episodes:
    """8 PD-controller episodes, then 8 random ones (200 steps each, truncated)."""
    return Episodes.concatenate([_collect(_pd, 8, 0), _collect(_random, 8, 1)])


def _collect(policy, episodes: int, seed: int) -> Episodes:
    """Whole Pendulum episodes (200 steps, truncated) recorded with final observations."""
    from prefbench.agents.reward_wrapper import make_training_env
    from prefbench.envs.tasks import get_task

    venv = make_training_env(get_task("pendulum"), 4, seed)
    rng = np.random.default_rng(seed)
    obs, done = venv.reset(), []
    while len(done) < episodes:
        obs, *_ = venv.step(policy(obs, rng))
        done.extend(venv.pop_finished())
    venv.close()
    return Episodes.from_trajectories(done[:episodes])


def _pd(obs, rng):
    """Pushes toward upright: better than random, far from optimal."""
    theta = np.arctan2(obs[:, 1], obs[:, 0])
    return np.clip(-4 * theta - obs[:, 2], -2, 2)[:, None].astype(np.float32)


def _random(obs, rng):
    return rng.uniform(-2, 2, (len(obs), 1)).astype(np.float32)
