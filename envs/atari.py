"""The seven Atari games of Christiano et al. 2017 through Gymnasium's ALE environments.

Preprocessing follows the standard Atari pipeline (Mnih et al. 2015) as the paper does:
up to 30 no-op actions at reset, frame skip 4 (max over the last two frames), 84x84
grayscale, 4-frame stacks. The score area of each game is blanked (set to 0) in every
frame before stacking, so neither the reward model nor the agent can read the score off
the screen; the teacher still sees the true game score through the hidden reward.
Episodes are the game's own (``fixed_length=True`` gives fixed-length episodes: after game
over a new game starts inside the same episode, as on MuJoCo). Clips are 25 agent steps.
Learned policies are evaluated by sampling their actions (``stochastic_eval``).

Needs the ``atari`` extra: ``pip install 'prefbench[atari]'`` (ale-py, which ships the
ROMs, and OpenCV for resizing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from prefbench.envs.tasks import TaskSpec

#: Agent steps per clip on Atari (the paper).
ATARI_CLIP_STEPS = 25
#: Agent steps per episode at most: 108,000 frames at frame skip 4 (the usual cap).
ATARI_HORIZON = 27_000


@dataclass(frozen=True)
class ScoreMask:
    """Boxes blanked out of each 84x84 frame.

    Attributes:
        boxes: ``(row_start, row_stop, col_start, col_stop)`` half-open boxes.
    """

    boxes: tuple[tuple[int, int, int, int], ...]

    def __post_init__(self) -> None:
        for r0, r1, c0, c1 in self.boxes:
            if not (0 <= r0 < r1 <= 84 and 0 <= c0 < c1 <= 84):
                raise ValueError(f"mask box {(r0, r1, c0, c1)} is outside an 84x84 frame")

    def apply(self, frame: np.ndarray) -> np.ndarray:
        """A copy of ``frame`` (``(84, 84)`` uint8) with the boxes set to 0."""
        out = frame.copy()
        for r0, r1, c0, c1 in self.boxes:
            out[r0:r1, c0:c1] = 0
        return out


class ScoreMaskWrapper(gym.ObservationWrapper):
    """Blanks the score area of single 84x84 grayscale frames."""

    def __init__(self, env: gym.Env, mask: ScoreMask) -> None:
        super().__init__(env)
        if env.observation_space.shape != (84, 84):
            raise ValueError(f"expected 84x84 frames, got {env.observation_space.shape}")
        self.mask = mask

    def observation(self, observation: np.ndarray) -> np.ndarray:
        """Blank the mask boxes."""
        return self.mask.apply(observation)


#: Score (and score-like counter) areas per game, in 84x84 frame coordinates, chosen by
#: looking at preprocessed frames: the digits and the rows around them.
SCORE_MASKS: dict[str, ScoreMask] = {
    "BeamRider": ScoreMask(((0, 16, 0, 84),)),  # score, sector and enemies-left counter
    "Breakout": ScoreMask(((0, 7, 0, 84),)),
    "Enduro": ScoreMask(((66, 79, 0, 84),)),  # odometer and cars-to-pass box at the bottom
    "Pong": ScoreMask(((0, 9, 0, 84),)),
    "Qbert": ScoreMask(((0, 9, 0, 84),)),
    "Seaquest": ScoreMask(((0, 10, 0, 84),)),
    "SpaceInvaders": ScoreMask(((0, 8, 0, 84),)),
}


def _register_ale() -> None:
    try:
        import ale_py
    except ImportError as exc:
        raise ImportError(
            "Atari tasks need the atari extra: pip install 'prefbench[atari]'"
        ) from exc
    gym.register_envs(ale_py)


def _preprocess(mask: ScoreMask) -> Callable[[gym.Env], gym.Env]:
    def wrap(env: gym.Env) -> gym.Env:
        env = gym.wrappers.AtariPreprocessing(
            env, noop_max=30, frame_skip=4, screen_size=84, grayscale_obs=True
        )
        return ScoreMaskWrapper(env, mask)

    return wrap


def atari_task(task_id: str, game: str, mask: ScoreMask) -> TaskSpec:
    """The task spec of one ALE game with the paper's preprocessing."""
    return TaskSpec(
        id=task_id,
        env_id=f"ALE/{game}-v5",
        horizon=ATARI_HORIZON,
        can_terminate=True,
        termination_penalty=0.0,
        entropy_coef=0.01,
        # Frame skipping happens in the preprocessing (with max-pooling), not in ALE.
        env_kwargs={"frameskip": 1, "repeat_action_probability": 0.0},
        clip_steps=ATARI_CLIP_STEPS,
        fixed_length_default=False,
        setup=_register_ale,
        preprocess=_preprocess(mask),
        frame_stack=4,
        stochastic_eval=True,
        extra="atari",
    )


# One constant per game: the task registry's lazy entries name them.
BEAMRIDER = atari_task("beamrider", "BeamRider", SCORE_MASKS["BeamRider"])
BREAKOUT = atari_task("breakout", "Breakout", SCORE_MASKS["Breakout"])
ENDURO = atari_task("enduro", "Enduro", SCORE_MASKS["Enduro"])
PONG = atari_task("pong", "Pong", SCORE_MASKS["Pong"])
QBERT = atari_task("qbert", "Qbert", SCORE_MASKS["Qbert"])
SEAQUEST = atari_task("seaquest", "Seaquest", SCORE_MASKS["Seaquest"])
SPACEINVADERS = atari_task("spaceinvaders", "SpaceInvaders", SCORE_MASKS["SpaceInvaders"])
#: The games by task id.
ATARI_TASKS: dict[str, TaskSpec] = {
    t.id: t for t in (BEAMRIDER, BREAKOUT, ENDURO, PONG, QBERT, SEAQUEST, SPACEINVADERS)
}
