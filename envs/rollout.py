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
#: ``(obs, actions, rewards) -> None``, called after each step of a rollout.
StepFn = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


class EpisodeRecorder:
    """Collects one environment's steps into a :class:`Trajectory`.

    With ``frame_stack=k`` the observations are ``k``-frame stacks that slide by one frame
    per step (Gymnasium's ``FrameStackObservation``), and each frame is kept once: the
    trajectory comes out compact (:meth:`Trajectory.from_frames`).

    Args:
        frame_stack: ``k`` (0: keep every observation whole).
    """

    def __init__(self, frame_stack: int = 0) -> None:
        if frame_stack < 0:
            raise ValueError(f"frame_stack must be >= 0, got {frame_stack}")
        self.frame_stack = frame_stack
        self._obs: list[np.ndarray] = []
        self._acts: list[np.ndarray] = []
        self._rews: list[float] = []
        self._last: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._acts)

    def add(self, obs: np.ndarray, act: np.ndarray, reward: float) -> None:
        """Record one step: the observation before the action, the action, its true reward.

        Raises:
            ValueError: If frame-stacked observations do not slide by one frame.
        """
        if self.frame_stack:
            obs = np.asarray(obs)
            if self._last is None:
                _check_stack(obs, self.frame_stack)
                self._obs.extend(np.array(frame) for frame in obs)
            else:
                if obs.shape != self._last.shape or not np.array_equal(obs[:-1], self._last[1:]):
                    raise ValueError("frame-stacked observations must slide by one frame per step")
                self._obs.append(np.array(obs[-1]))
            self._last = obs
        else:
            self._obs.append(np.array(obs))
        self._acts.append(np.array(act))
        self._rews.append(float(reward))

    def finish(self, final_obs: np.ndarray | None = None, terminated: bool = False) -> Trajectory:
        """The trajectory recorded so far; the recorder starts afresh.

        Args:
            final_obs: The observation after the last action (kept whole observations only).
            terminated: The episode reached a terminal state (not a time limit).
        """
        if not self._acts:
            raise ValueError("no steps recorded")
        acts, rews = np.stack(self._acts), np.asarray(self._rews, dtype=np.float32)
        if self.frame_stack:
            traj = Trajectory.from_frames(np.stack(self._obs), self.frame_stack, acts, rews)
        else:
            final = None if final_obs is None else np.array(final_obs)
            traj = Trajectory(
                np.stack(self._obs), acts, rews, final_obs=final, terminated=terminated
            )
        self.clear()
        return traj

    def clear(self) -> None:
        """Drop the steps recorded so far."""
        self._obs.clear()
        self._acts.clear()
        self._rews.clear()
        self._last = None


def _check_stack(obs: np.ndarray, stack: int) -> None:
    if obs.ndim < 1 or obs.shape[0] != stack:
        raise ValueError(f"expected {stack}-frame stacks (stack axis first), got {obs.shape}")


def make_vec_env(
    task: TaskSpec,
    n_envs: int,
    seed: int,
    *,
    fixed_length: bool | None = None,
    subprocess: bool = False,
) -> VecEnv:
    """``n_envs`` copies of ``task`` as an SB3 ``VecEnv``; env ``i`` is seeded ``seed + i``.

    Args:
        task: The task.
        n_envs: Number of environments (>= 1).
        seed: Seed of the first environment.
        fixed_length: Apply the paper's fixed-length edit; ``None`` takes the task's
            default (on for MuJoCo, off for Atari).
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
    venv: VecEnv,
    policy: PolicyFn | None,
    rng: np.random.Generator | None = None,
    *,
    frame_stack: int = 0,
    observe: StepFn | None = None,
) -> list[Trajectory]:
    """Run one episode in every env of ``venv``; returns one trajectory per env.

    Envs that finish early wait for the others (their later steps are not recorded).

    Args:
        venv: Freshly created or reset-able environments.
        policy: Batched deterministic policy; ``None`` samples uniformly random actions.
        rng: Generator for random actions (required when ``policy`` is ``None``).
        frame_stack: The task's frame stack ``k``: store trajectories compactly (0: plain).
        observe: Called after every step with that step's ``(n, *O)`` observations,
            ``(n, ...)`` actions and ``(n,)`` rewards, for every env (a stateful policy
            keeps its history with it).
    """
    n = venv.num_envs
    obs = venv.reset()
    recorders = [EpisodeRecorder(frame_stack) for _ in range(n)]
    done_mask = np.zeros(n, dtype=bool)
    space = venv.action_space
    while not done_mask.all():
        if policy is None:
            assert rng is not None, "random rollouts need an rng"
            acts = random_actions(space, n, rng)
        else:
            acts = np.asarray(policy(obs))
        next_obs, rews, dones, _ = venv.step(acts)
        if observe is not None:
            observe(obs, acts, rews)
        for i in np.flatnonzero(~done_mask):
            recorders[i].add(obs[i], acts[i], rews[i])
        done_mask |= dones
        obs = next_obs
    return [r.finish() for r in recorders]


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
            trajs.extend(rollout(venv, None, rng, frame_stack=task.frame_stack))
        return trajs
    finally:
        venv.close()
