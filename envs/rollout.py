"""Environment plumbing shared by every learner: vectorised envs, random and policy rollouts."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from prefbench.envs.data import Trajectory
from prefbench.envs.tasks import TaskSpec

#: ``(obs (n, *O)) -> actions (n, A...)``: a batched, deterministic policy.
PolicyFn = Callable[[np.ndarray], np.ndarray]


def make_vec_env(
    task: TaskSpec,
    n_envs: int,
    seed: int,
    *,
    fixed_length: bool = True,
    subprocess: bool = False,
) -> VecEnv:
    """``n_envs`` copies of ``task`` as an SB3 ``VecEnv``; env ``i`` is seeded ``seed + i``.

    Args:
        task: The task.
        n_envs: Number of environments (>= 1).
        seed: Seed of the first environment.
        fixed_length: Apply the paper's fixed-length edit.
        subprocess: One process per environment (pays off for slow simulators).
    """
    if n_envs < 1:
        raise ValueError(f"n_envs must be >= 1, got {n_envs}")

    def factory() -> Callable[[], object]:
        return lambda: task.make(fixed_length=fixed_length)

    fns = [factory() for _ in range(n_envs)]
    venv: VecEnv = SubprocVecEnv(fns) if subprocess else DummyVecEnv(fns)
    venv.seed(seed)
    venv.action_space.seed(seed)
    return venv


def rollout(
    venv: VecEnv, policy: PolicyFn | None, rng: np.random.Generator | None = None
) -> list[Trajectory]:
    """Run one episode in every env of ``venv``; returns one trajectory per env.

    Envs that finish early wait for the others (their later steps are not recorded).

    Args:
        venv: Freshly created or reset-able environments.
        policy: Batched deterministic policy; ``None`` samples uniformly random actions.
        rng: Generator for random actions (required when ``policy`` is ``None``).
    """
    n = venv.num_envs
    obs = venv.reset()
    bufs: list[tuple[list, list, list]] = [([], [], []) for _ in range(n)]
    done_mask = np.zeros(n, dtype=bool)
    space = venv.action_space
    while not done_mask.all():
        if policy is None:
            assert rng is not None, "random rollouts need an rng"
            acts = random_actions(space, n, rng)
        else:
            acts = np.asarray(policy(obs))
        next_obs, rews, dones, _ = venv.step(acts)
        for i in np.flatnonzero(~done_mask):
            bufs[i][0].append(obs[i])
            bufs[i][1].append(acts[i])
            bufs[i][2].append(float(rews[i]))
        done_mask |= dones
        obs = next_obs
    return [
        Trajectory(np.stack(o), np.stack(a), np.asarray(r, dtype=np.float32)) for o, a, r in bufs
    ]


def random_actions(space: gym.Space, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random actions from a Box or Discrete ``space``."""
    if isinstance(space, gym.spaces.Box):
        low = np.where(np.isfinite(space.low), space.low, -1.0)
        high = np.where(np.isfinite(space.high), space.high, 1.0)
        return rng.uniform(low, high, size=(n, *space.shape)).astype(space.dtype)
    if isinstance(space, gym.spaces.Discrete):
        return rng.integers(space.start, space.start + space.n, size=n)
    raise TypeError(f"random actions for {type(space).__name__} are not supported")


def collect_random(task: TaskSpec, min_steps: int, seed: int, n_envs: int = 4) -> list[Trajectory]:
    """Random-policy episodes, at least ``min_steps`` steps in all."""
    rng = np.random.default_rng(seed)
    venv = make_vec_env(task, n_envs, seed)
    try:
        trajs: list[Trajectory] = []
        while sum(len(t) for t in trajs) < min_steps:
            trajs.extend(rollout(venv, None, rng))
        return trajs
    finally:
        venv.close()
