"""The base of every agent built on a stable-baselines3 learner (on-policy, or SAC).

:class:`SB3Agent` owns what the true-reward baselines and the preference agents share:
the training environments (a :class:`~prefbench.agents.reward_wrapper.RewardVecEnv`
that records trajectories and sets the learner's reward), the learner, acting, the
policy checkpoint and the resumable state (``policy.zip`` plus ``state.json`` with the
step count and whatever :meth:`SB3Agent.loop_state` adds). Subclasses write only their
loop.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.vec_env import VecNormalize

from prefbench.agents.protocol import RunContext
from prefbench.agents.reward_wrapper import RewardFn, make_training_env
from prefbench.agents.rl import RLConfig, build_learner, restore_learner
from prefbench.envs.data import CheckpointError, Trajectory
from prefbench.envs.files import atomic_path, write_text
from prefbench.envs.seeding import int31_seed

#: v2: ``labels_used`` and ``last_fit`` (v1 said ``labels_asked`` and ``next_update``).
STATE_FORMAT = "prefbench.agent_state.v2"


class SB3Agent:
    """An agent that trains an on-policy SB3 learner in recording environments.

    Args:
        ctx: Run context; ``ctx.task`` is a control task and ``ctx.budget`` counts steps.
        rl: Learner settings.
        reward_fn: The learner's reward for a batch of steps; ``None`` for the true reward.
        sign_true_reward: With the true reward, hand the learner its sign (Atari).
    """

    #: The task kinds the agent trains on (the runner checks before any work).
    task_kinds = ("control",)

    def __init__(
        self,
        ctx: RunContext,
        rl: RLConfig,
        reward_fn: RewardFn | None = None,
        *,
        sign_true_reward: bool = False,
    ) -> None:
        self.ctx = ctx
        self.venv = make_training_env(
            ctx.task,
            rl.n_envs,
            ctx.seed,
            reward_fn,
            subprocess=rl.subprocess,
            sign_true_reward=sign_true_reward,
        )
        # The learner's view: normalised observations and rewards where asked; the
        # recording env below it keeps raw observations for the reward model.
        self.normalizer = VecNormalize(self.venv, gamma=rl.gamma) if rl.normalize else None
        self.learner = build_learner(
            rl,
            ctx.task,
            self.normalizer or self.venv,
            seed=int31_seed(ctx.seed, "learner"),
            device=ctx.device,
            log_dir=ctx.run_dir / "rl_log",
        )

    @property
    def steps_done(self) -> int:
        """Environment steps the learner has taken."""
        return int(self.learner.num_timesteps)

    def train_learner(self, after_rollout: Callable[[int], None]) -> None:
        """Train until the budget, calling ``after_rollout(steps)`` before every update.

        A restored learner goes on from its step count with fresh episodes (environment
        state is not saved).
        """
        total = self.ctx.budget.amount
        if self.steps_done < total:
            self.learner.learn(
                total - self.steps_done,
                callback=_RolloutEnd(after_rollout),
                reset_num_timesteps=self.steps_done == 0,
            )

    def collect(self) -> tuple[list[Trajectory], dict[str, float]]:
        """The episodes finished since the last call, and their mean true return as a metric.

        True returns are for the record only; the learner never sees them.
        """
        finished = self.venv.pop_finished()
        metrics = (
            {"train_true_return": float(np.mean([t.true_return for t in finished]))}
            if finished
            else {}
        )
        return finished, metrics

    def predict(self, obs: np.ndarray) -> np.ndarray:
        """Policy actions for a batch of observations.

        The mode, or samples where the task evaluates stochastically (Atari).
        """
        return self.act(obs, deterministic=not self.ctx.task.stochastic_eval)

    def act(self, obs: np.ndarray, *, deterministic: bool) -> np.ndarray:
        """Actions for ``(n, *O)`` raw observations: the mode, or samples from the policy.

        Samples draw from torch's global generator (seed it around the call).
        """
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        return self.learner.predict(obs, deterministic=deterministic)[0]

    def save(self, directory: Path) -> None:
        """Write ``policy.zip`` (parameters and optimiser state) into ``directory``.

        With ``rl.normalize`` also ``normalize.json``: the observation and return
        statistics the policy needs to act.
        """
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "policy.zip") as tmp:
            self.learner.save(tmp)
        if self.normalizer is not None:
            write_text(directory / NORMALIZE_FILE, json.dumps(normalizer_state(self.normalizer)))

    # ------------------------------------------------------------ resumable state
    def loop_state(self) -> dict[str, Any]:
        """JSON-ready state of the subclass's loop, saved beside the step count."""
        return {}

    def restore_loop_state(self, state: dict[str, Any], directory: Path) -> None:
        """Restore what :meth:`loop_state` returned (and files :meth:`save` wrote)."""

    def save_state(self, directory: Path) -> None:
        """Write everything needed to continue training into ``directory``.

        An off-policy learner (SAC) also writes its replay buffer, ``replay_buffer.pkl``;
        :meth:`load_state` restores it where the file is there.
        """
        self.save(directory)
        if isinstance(self.learner, OffPolicyAlgorithm):
            with atomic_path(directory / REPLAY_BUFFER_FILE) as tmp:
                self.learner.save_replay_buffer(tmp)
        # Strict JSON: a state that does not serialise must fail here, not at resume.
        state = {"format": STATE_FORMAT, "step": self.steps_done, **self.loop_state()}
        write_text(directory / "state.json", json.dumps(state))

    def load_state(self, directory: Path) -> int:
        """Restore what :meth:`save_state` wrote; returns the steps already taken.

        Raises:
            CheckpointError: If the state is missing, of another format, or does not fit.
        """
        path = directory / "state.json"
        try:
            state = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read agent state {path}: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a prefbench agent state")
        try:
            step = int(state["step"])
            self.restore_loop_state(state, directory)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{directory} holds an inconsistent agent state: {exc}") from exc
        if self.normalizer is not None:
            restore_normalizer(self.normalizer, directory / NORMALIZE_FILE)
        restore_learner(self.learner, directory / "policy.zip", step)
        buffer = directory / REPLAY_BUFFER_FILE
        # A state kept for acting only (an old data-make snapshot) may have dropped it.
        if isinstance(self.learner, OffPolicyAlgorithm) and buffer.is_file():
            try:
                self.learner.load_replay_buffer(buffer)
            except (OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
                raise CheckpointError(f"cannot read {buffer}: {exc}") from exc
        return step


#: The learner's observation and return statistics beside ``policy.zip``.
NORMALIZE_FILE = "normalize.json"
#: An off-policy learner's replay buffer in a resumable state.
REPLAY_BUFFER_FILE = "replay_buffer.pkl"


def normalizer_state(env: VecNormalize) -> dict[str, Any]:
    """JSON-ready running statistics of a ``VecNormalize``."""

    def stats(rms: Any) -> dict[str, Any]:
        return {
            "mean": np.asarray(rms.mean).tolist(),
            "var": np.asarray(rms.var).tolist(),
            "count": float(rms.count),
        }

    return {"obs": stats(env.obs_rms), "ret": stats(env.ret_rms)}


def restore_normalizer(env: VecNormalize, path: Path) -> None:
    """Load statistics written by :func:`normalizer_state` into ``env``.

    Raises:
        CheckpointError: If the file is missing, unreadable or of other shapes.
    """
    try:
        state = json.loads(path.read_text())
        for name in ("obs", "ret"):
            rms = getattr(env, f"{name}_rms")
            mean = np.asarray(state[name]["mean"], dtype=np.float64)
            var = np.asarray(state[name]["var"], dtype=np.float64)
            if mean.shape != np.shape(rms.mean) or var.shape != np.shape(rms.var):
                raise ValueError(f"{name} statistics of shape {mean.shape}")
            rms.mean, rms.var, rms.count = mean, var, float(state[name]["count"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot restore normalisation from {path}: {exc}") from exc


class _RolloutEnd(BaseCallback):
    """Calls ``fn(num_timesteps)`` after every rollout, before the policy update."""

    def __init__(self, fn: Callable[[int], None]) -> None:
        super().__init__()
        self._fn = fn

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        self._fn(self.num_timesteps)
