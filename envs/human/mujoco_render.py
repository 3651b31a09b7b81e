"""MuJoCo clips redrawn from their observations, offscreen.

A clip carries observations only, so each frame puts the physics back into the state the
observation holds and renders it. Most locomotion tasks leave the root's x (and y)
position out of the observation; it is integrated from the root's velocity, which they
keep, so the body moves over the floor as it did. Set ``MUJOCO_GL=egl`` (or ``osmesa``)
on a machine without a display. The shadow map is made smaller and multisampling is
turned off: MuJoCo's defaults render about 35 frames/s on a CPU, these several times that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

#: How each task's observation holds the state: root positions left out, and whether
#: joint angles are stored as cos/sin (Reacher).
_LAYOUTS = {
    "HalfCheetah-v5": 1,
    "Hopper-v5": 1,
    "Walker2d-v5": 1,
    "Swimmer-v5": 2,
    "Ant-v5": 2,
    "InvertedPendulum-v5": 0,
}


@dataclass
class MujocoFrames:
    """Frames of MuJoCo clips from their observations (callable as ``(obs, acts) -> frames``).

    Args:
        env_id: A Gymnasium MuJoCo id with a known observation layout.
        size: Frame width and height in pixels.
    """

    env_id: str
    size: int = 128

    def __post_init__(self) -> None:
        import os

        import gymnasium as gym

        # Offscreen by default: a machine without a display has no GLFW window.
        os.environ.setdefault("MUJOCO_GL", "egl")

        if self.env_id not in _LAYOUTS and self.env_id != "Reacher-v5":
            raise ValueError(f"{self.env_id} clips cannot be redrawn from observations yet")
        self.env = gym.make(self.env_id, render_mode="rgb_array", width=self.size, height=self.size)
        self.env.reset(seed=0)
        base = self.env.unwrapped
        base.model.vis.quality.shadowsize = 512
        base.model.vis.quality.offsamples = 0
        self.nq, self.nv, self.dt = base.model.nq, base.model.nv, float(base.dt)

    def states(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(qpos (H, nq), qvel (H, nv))`` of a clip's observations ``(H, O)``."""
        obs = np.asarray(obs, dtype=np.float64)
        h = len(obs)
        if self.env_id == "Reacher-v5":
            angles = np.arctan2(obs[:, 2:4], obs[:, 0:2])
            qpos = np.concatenate([angles, obs[:, 4:6]], axis=1)
            qvel = np.concatenate([obs[:, 6:8], np.zeros((h, self.nv - 2))], axis=1)
            return qpos, qvel
        k = _LAYOUTS[self.env_id]
        kept = self.nq - k
        if obs.shape[1] < kept + self.nv:
            raise ValueError(f"{self.env_id} observations are too short: {obs.shape}")
        qvel = obs[:, kept : kept + self.nv]
        root = np.cumsum(qvel[:, :k] * self.dt, axis=0) - qvel[:1, :k] * self.dt
        return np.concatenate([root, obs[:, :kept]], axis=1), qvel

    def __call__(self, obs: np.ndarray, acts: np.ndarray) -> np.ndarray:
        """``(H, size, size, 3)`` uint8 frames of one clip."""
        qpos, qvel = self.states(obs)
        base = self.env.unwrapped
        frames = []
        for p, v in zip(qpos, qvel, strict=True):
            base.set_state(p, v)
            frames.append(self.env.render())
        return np.stack(frames).astype(np.uint8)

    @property
    def fps(self) -> float:
        """Real-time playback rate."""
        return 1.0 / self.dt if math.isfinite(self.dt) and self.dt > 0 else 20.0
