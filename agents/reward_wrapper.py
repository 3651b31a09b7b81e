"""A vectorised-env wrapper that records experience and sets the agent's reward.

:class:`RewardVecEnv` sits between the raw vectorised environments and the RL learner.
It records every step (observation, action, hidden true reward) into per-env
trajectories, and hands the learner a reward computed by ``reward_fn`` for the whole
batch of steps in one call. With ``reward_fn=None`` the learner gets the true reward
(the true-reward baseline runs through the same code path).

The true reward never reaches the learner through the wrapper: ``infos`` are filtered
to the keys SB3 needs for bootstrapping (``terminal_observation``, ``TimeLimit.truncated``),
so per-term rewards (``reward_forward``...), ``x_velocity`` and Monitor's ``episode``
returns are dropped. True returns are available to the *runner* through
:meth:`RewardVecEnv.pop_finished`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from prefbench.envs.data import Trajectory
from prefbench.envs.rollout import EpisodeRecorder, make_vec_env
from prefbench.envs.seeding import int31_seed
from prefbench.envs.tasks import TaskSpec

#: ``(obs (M, *O), acts (M, A...)) -> (M,)`` rewards for a batch of steps.
RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

_PASS_INFO_KEYS = ("terminal_observation", "TimeLimit.truncated")


class RewardVecEnv(VecEnvWrapper):
    """Records trajectories and replaces the environment reward.

    Args:
        venv: Vectorised environments (SB3 ``VecEnv``).
        reward_fn: Scores a batch of steps; ``None`` passes the true reward through.
        frame_stack: The task's frame stack ``k``: record trajectories compactly, each
            frame once (0: plain observations).
        sign_true_reward: Without ``reward_fn``, hand the learner the sign of the true
            reward (Atari's usual reward clipping); recorded rewards stay unclipped.
    """

    def __init__(
        self,
        venv: VecEnv,
        reward_fn: RewardFn | None = None,
        *,
        frame_stack: int = 0,
        sign_true_reward: bool = False,
    ) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self.sign_true_reward = sign_true_reward
        self._obs: np.ndarray | None = None
        self._acts: np.ndarray | None = None
        self._pending: np.ndarray | None = None  # learned rewards of the step in flight
        self._recorders = [EpisodeRecorder(frame_stack) for _ in range(self.num_envs)]
        self._finished: list[Trajectory] = []
        self.total_steps = 0

    def reset(self) -> VecEnvObs:
        """Reset all envs; partial trajectories are discarded."""
        obs = self.venv.reset()
        self._obs = np.asarray(obs).copy()
        for recorder in self._recorders:
            recorder.clear()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        """Send the actions, then score the steps while the environments run.

        The learner's reward depends only on the observations before the step and the
        actions, both known here, so with worker processes (``SubprocVecEnv``) the
        scoring overlaps their stepping instead of following it.
        """
        assert self._obs is not None, "step before reset"
        self._acts = np.asarray(actions).copy()
        self.venv.step_async(actions)
        if self.reward_fn is not None:
            self._pending = np.asarray(self.reward_fn(self._obs, self._acts), dtype=np.float32)

    def step_wait(self) -> VecEnvStepReturn:
        """Collect the step, record it, and hand on the rewards scored in ``step_async``."""
        obs, true_rew, dones, infos = self.venv.step_wait()
        prev_obs, acts = self._obs, self._acts
        assert prev_obs is not None and acts is not None, "step before reset"
        for i, recorder in enumerate(self._recorders):
            recorder.add(prev_obs[i], acts[i], true_rew[i])
            if dones[i]:
                info = infos[i]
                self._finished.append(
                    recorder.finish(
                        info.get("terminal_observation"),
                        terminated=not info.get("TimeLimit.truncated", False),
                    )
                )
        if self.reward_fn is None:
            rewards = np.asarray(true_rew, dtype=np.float32)
            if self.sign_true_reward:
                rewards = np.sign(rewards)
        else:
            rewards, self._pending = self._pending, None
            assert rewards is not None, "step_wait without step_async"
            if rewards.shape != (self.num_envs,):
                raise ValueError(
                    f"reward_fn returned shape {rewards.shape}, expected ({self.num_envs},)"
                )
        self.total_steps += self.num_envs
        self._obs = np.asarray(obs).copy()
        clean = [{k: info[k] for k in _PASS_INFO_KEYS if k in info} for info in infos]
        return obs, rewards, dones, clean

    def pop_finished(self) -> list[Trajectory]:
        """Trajectories of episodes finished since the last call (true rewards included)."""
        out, self._finished = self._finished, []
        return out

    def pop_unfinished(self) -> list[Trajectory]:
        """The episodes in flight, cut here as truncated (each env's recorder restarts).

        Their final observation is the current one. For the end of a recording: the
        environments should be reset before stepping on.
        """
        assert self._obs is not None, "no steps yet"
        return [
            recorder.finish(self._obs[i], terminated=False)
            for i, recorder in enumerate(self._recorders)
            if len(recorder)
        ]


def make_training_env(
    task: TaskSpec,
    n_envs: int,
    run_seed: int,
    reward_fn: RewardFn | None = None,
    *,
    subprocess: bool = False,
    sign_true_reward: bool = False,
) -> RewardVecEnv:
    """The environments an agent trains in, seeded from the run seed, recording compactly.

    Args:
        task: The task.
        n_envs: Parallel environments.
        run_seed: The run's seed (the environments get their own stream of it).
        reward_fn: The learner's reward; ``None`` for the true reward.
        subprocess: One process per environment.
        sign_true_reward: See :class:`RewardVecEnv`.
    """
    venv = make_vec_env(task, n_envs, int31_seed(run_seed, "train_env"), subprocess=subprocess)
    return RewardVecEnv(
        venv, reward_fn, frame_stack=task.frame_stack, sign_true_reward=sign_true_reward
    )
