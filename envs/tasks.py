"""Task registry: the MuJoCo tasks of Christiano et al. 2017 on current Gymnasium.

A task bundles the environment factory with what the preference loop needs to know
about it: the clip length (1.5 s of simulated time, from the environment's ``dt``), the
episode horizon, and the paper's environment edits. The paper (arXiv 1706.03741,
appendix A.1) makes every episode the same length and replaces early termination with
a penalty, so that episode length leaks no reward information; ``fixed_length=True``
(the default) applies that edit through :class:`FixedLengthEpisode`.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

import gymnasium as gym

from prefbench.envs.mujoco_log import route_mujoco_warnings
from prefbench.envs.registry import Registry, instance_of

#: Simulated seconds per clip in the paper's MuJoCo experiments.
CLIP_SECONDS = 1.5


TERMINATION_MODES = ("reset", "absorb")
#: The module each optional extra of a task brings.
EXTRA_MODULES = {"mujoco": "mujoco", "atari": "ale_py"}


class FixedLengthEpisode(gym.Wrapper):
    """Turns early termination into a penalty and keeps the episode going.

    When the wrapped environment terminates, that step's reward gets ``penalty`` added and
    the episode goes on until the time limit truncates it, so every episode lasts exactly
    ``horizon`` steps and never terminates: neither the episode length nor a termination
    flag tells the agent anything about the (hidden) reward. What follows a termination:

    * ``"reset"`` (default): the inner environment is reset and play continues from a
      fresh start inside the same episode;
    * ``"absorb"``: an absorbing state; the terminal observation repeats and each further
      step earns 0 true reward.

    With ``"absorb"``, tasks that fall early (Hopper, InvertedPendulum) spend most of each
    episode in the absorbing state, so most clips carry no reward difference; preference
    learning then fails on them (see ``results/README.md``), while with ``"reset"`` it
    learns (InvertedPendulum and Hopper learn within 50k-100k steps).

    Args:
        env: The environment.
        horizon: Steps per episode.
        penalty: Added to the true reward on the step where the inner env terminated.
        on_termination: ``"reset"`` or ``"absorb"``.
    """

    def __init__(
        self, env: gym.Env, horizon: int, penalty: float, on_termination: str = "reset"
    ) -> None:
        super().__init__(env)
        if horizon <= 0:
            raise ValueError(f"horizon must be positive, got {horizon}")
        if on_termination not in TERMINATION_MODES:
            raise ValueError(
                f"on_termination must be one of {', '.join(TERMINATION_MODES)}, "
                f"got {on_termination!r}"
            )
        self.horizon = horizon
        self.penalty = penalty
        self.on_termination = on_termination
        self._t = 0
        self._dead_obs: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        """Reset the episode clock and the inner environment."""
        self._t = 0
        self._dead_obs = None
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        """Step, turning a termination into a penalty."""
        self._t += 1
        truncated = self._t >= self.horizon
        if self._dead_obs is not None:
            return self._dead_obs, 0.0, False, truncated, {"absorbing": True}
        obs, reward, terminated, inner_truncated, info = self.env.step(action)
        if terminated:
            reward = float(reward) + self.penalty
            if self.on_termination == "absorb":
                self._dead_obs = obs
                info = {**info, "absorbing": True}
            else:
                obs, _ = self.env.reset()
                info = {**info, "restarted": True}
                # The inner time limit restarts with it; this wrapper's clock decides.
                inner_truncated = False
        return obs, float(reward), False, truncated or inner_truncated, info


@dataclass(frozen=True)
class TaskSpec:
    """A control task: a Gymnasium environment the agent acts in (kind ``control``).

    Attributes:
        id: Short id used on the command line (``halfcheetah``).
        env_id: Gymnasium id (``HalfCheetah-v5``).
        horizon: Steps per episode.
        can_terminate: Whether the raw environment ends episodes early.
        termination_penalty: True-reward penalty for a termination under ``fixed_length``.
        entropy_coef: The paper's policy entropy bonus for this task.
        env_kwargs: Extra keyword arguments for ``gym.make``.
        clip_seconds: Simulated seconds per clip.
        clip_steps: Fixed clip length in agent steps (Atari: 25); 0 derives it from
            ``clip_seconds`` and the environment's ``dt``.
        fixed_length_default: Whether :meth:`make` applies the fixed-length edit unless
            told otherwise.
        termination: What follows an early termination under the fixed-length edit:
            ``"reset"`` or ``"absorb"`` (see :class:`FixedLengthEpisode`).
        setup: Called before ``gym.make`` (e.g. to register ALE environments). Tasks with
            the ``mujoco`` extra also route MuJoCo's warnings to logging first
            (:mod:`prefbench.envs.mujoco_log`).
        preprocess: Wraps the raw environment, inside the fixed-length edit.
        frame_stack: Stack this many observations, outside the fixed-length edit (0: none).
        stochastic_eval: Evaluate learned policies by sampling their actions (the usual
            Atari protocol: a deterministic policy can stall a game, e.g. never serving).
        extra: The ``prefbench[...]`` extra its environment needs (``""``: none).
    """

    kind: ClassVar[str] = "control"

    id: str
    env_id: str
    horizon: int
    can_terminate: bool = False
    termination_penalty: float = -10.0
    entropy_coef: float = 0.01
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    clip_seconds: float = CLIP_SECONDS
    clip_steps: int = 0
    fixed_length_default: bool = True
    termination: str = "reset"
    setup: Callable[[], None] | None = None
    preprocess: Callable[[gym.Env], gym.Env] | None = None
    frame_stack: int = 0
    stochastic_eval: bool = False
    extra: str = ""

    def make(self, *, fixed_length: bool | None = None, render_mode: str | None = None) -> gym.Env:
        """Build one environment instance.

        Args:
            fixed_length: Apply the paper's edit (no early termination, fixed horizon);
                ``None`` takes the task's default.
            render_mode: Passed to ``gym.make``.
        """
        self._prepare()
        if self.preprocess is None:
            env = gym.make(
                self.env_id,
                max_episode_steps=self.horizon,
                render_mode=render_mode,
                **self.env_kwargs,
            )
        else:
            # Preprocessing may skip frames: count the horizon in agent steps, after it.
            env = gym.make(self.env_id, render_mode=render_mode, **self.env_kwargs)
            env = gym.wrappers.TimeLimit(self.preprocess(env), self.horizon)
        if self.fixed_length_default if fixed_length is None else fixed_length:
            # The inner TimeLimit and the wrapper's clock agree: both count from reset.
            env = FixedLengthEpisode(env, self.horizon, self.termination_penalty, self.termination)
        if self.frame_stack:
            env = gym.wrappers.FrameStackObservation(env, self.frame_stack)
        return env

    def _prepare(self) -> None:
        """What must happen in this process before ``gym.make``."""
        if self.extra == "mujoco":
            route_mujoco_warnings()
        if self.setup is not None:
            self.setup()

    @cached_property
    def dt(self) -> float:
        """Simulated seconds per agent step."""
        self._prepare()
        env = gym.make(self.env_id, **self.env_kwargs)
        try:
            return float(env.unwrapped.dt)  # type: ignore[attr-defined]
        except AttributeError as exc:
            raise ValueError(
                f"{self.env_id} has no dt; set clip_seconds via a custom task"
            ) from exc
        finally:
            env.close()

    @property
    def clip_length(self) -> int:
        """Steps per clip: ``clip_seconds / dt`` rounded, capped at the horizon.

        Reacher's 50-step episodes are shorter than 1.5 s (75 steps), so its clips are
        whole episodes.
        """
        if self.clip_steps:
            return min(self.horizon, self.clip_steps)
        return min(self.horizon, clip_length_for(self.dt, self.clip_seconds))

    def missing_extra(self) -> str | None:
        """The ``prefbench[...]`` extra this task needs and this install lacks, if any."""
        module = EXTRA_MODULES.get(self.extra)
        return self.extra if module and importlib.util.find_spec(module) is None else None

    def spaces(self) -> tuple[gym.Space, gym.Space]:
        """The observation and action spaces (after preprocessing and frame stacking)."""
        env = self.make()
        try:
            return env.observation_space, env.action_space
        finally:
            env.close()


TASKS: Registry[TaskSpec] = Registry("task", instance_of(TaskSpec))


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add a task to the registry under ``spec.id``."""
    TASKS.register(spec.id, spec, extra=spec.extra)
    return spec


def get_task(name: str) -> TaskSpec:
    """Look up a task by id or import path (``pkg.mod:MY_TASK``)."""
    return TASKS.get(name)


# Christiano et al. 2017's eight MuJoCo tasks (Gymnasium v5), plus Pendulum-v1 for fast tests.
_CONTROL_TASKS = (
    TaskSpec("hopper", "Hopper-v5", 1000, can_terminate=True, extra="mujoco"),
    TaskSpec("walker2d", "Walker2d-v5", 1000, can_terminate=True, extra="mujoco"),
    TaskSpec("swimmer", "Swimmer-v5", 1000, entropy_coef=0.001, extra="mujoco"),
    TaskSpec("halfcheetah", "HalfCheetah-v5", 1000, extra="mujoco"),
    TaskSpec("ant", "Ant-v5", 1000, can_terminate=True, extra="mujoco"),
    TaskSpec("reacher", "Reacher-v5", 50, extra="mujoco"),
    TaskSpec("inverted-pendulum", "InvertedPendulum-v5", 1000, can_terminate=True, extra="mujoco"),
    TaskSpec(
        "inverted-double-pendulum",
        "InvertedDoublePendulum-v5",
        1000,
        can_terminate=True,
        extra="mujoco",
    ),
    TaskSpec("pendulum", "Pendulum-v1", 200),
)
for _spec in _CONTROL_TASKS:
    register_task(_spec)
#: The paper's MuJoCo tasks, in its order.
MUJOCO_TASKS = tuple(t.id for t in _CONTROL_TASKS if t.extra == "mujoco")

#: The paper's seven Atari games (``prefbench.envs.atari``), registered lazily.
ATARI_GAMES = ("beamrider", "breakout", "enduro", "pong", "qbert", "seaquest", "spaceinvaders")
for _game in ATARI_GAMES:
    TASKS.register(_game, f"prefbench.envs.atari:{_game.upper()}", extra="atari")


def clip_length_for(dt: float, seconds: float = CLIP_SECONDS) -> int:
    """Steps in ``seconds`` of simulated time at ``dt`` seconds per step."""
    if not (dt > 0 and math.isfinite(dt)):
        raise ValueError(f"dt must be positive, got {dt}")
    return max(1, round(seconds / dt))
