"""What a person is shown: clips as small looping animations, or text.

A :class:`PairRenderer` turns a batch of :class:`~prefbench.envs.data.ClipPairs` into one
:class:`PairView` per pair. Control clips are redrawn from their observations (the
teacher never sees the environment): Pendulum's angle is in its observation, Atari's
observations are the frames, and MuJoCo tasks are put back into the physics state their
observation holds (see :mod:`prefbench.envs.human.mujoco_render`). Text pairs are
rendered by the text agent, which owns the tokenizer.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from prefbench.envs.data import ClipPairs

#: The MuJoCo tasks whose clips can be redrawn from observations (``mujoco_render``).
MUJOCO_IDS = frozenset(
    (
        "HalfCheetah-v5",
        "Hopper-v5",
        "Walker2d-v5",
        "Swimmer-v5",
        "Ant-v5",
        "InvertedPendulum-v5",
        "Reacher-v5",
    )
)
#: Frames per second of a clip animation when the task says nothing.
DEFAULT_FPS = 20


@dataclass(frozen=True)
class PairView:
    """One pair as a person sees it, in the run's order (the queue randomises sides).

    Attributes:
        kind: ``clips`` (``first``/``second`` are encoded animations) or ``text``.
        first: Animated WebP bytes, or the first continuation.
        second: Animated WebP bytes, or the second continuation.
        prompt: The text pair's shared prompt (``""`` for clips).
    """

    kind: str
    first: bytes | str
    second: bytes | str
    prompt: str = ""


class PairRenderer(Protocol):
    """Renders a batch of pairs for a person."""

    def render(self, pairs: ClipPairs) -> list[PairView]:
        """One view per pair of ``pairs``."""
        ...


def encode_clip(frames: np.ndarray, fps: float = DEFAULT_FPS, image_format: str = "WEBP") -> bytes:
    """A looping animation of ``frames``: animated WebP (or GIF).

    Args:
        frames: ``(T, H, W, 3)`` uint8 RGB frames.
        fps: Playback frames per second.
        image_format: ``WEBP`` or ``GIF``.
    """
    from PIL import Image

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if image_format not in ("WEBP", "GIF"):
        raise ValueError(f"image_format must be WEBP or GIF, got {image_format!r}")
    options = {"quality": 70, "method": 4} if image_format == "WEBP" else {}
    images = [Image.fromarray(f) for f in frames]
    out = io.BytesIO()
    images[0].save(
        out,
        format=image_format,
        save_all=True,
        append_images=images[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
        **options,
    )
    return out.getvalue()


class ClipRenderer:
    """Renders control pairs clip by clip with a function from one clip to frames.

    Args:
        frames_of: ``(obs (H, O...), acts (H, A...)) -> (H, h, w, 3)`` uint8 frames.
        fps: Playback rate (the task's real time, ``1 / dt``, where known).
    """

    def __init__(self, frames_of, fps: float = DEFAULT_FPS) -> None:
        self.frames_of = frames_of
        self.fps = fps

    def render(self, pairs: ClipPairs) -> list[PairView]:
        """One view per pair, both clips encoded."""
        views = []
        for i in range(len(pairs)):
            clips = [
                encode_clip(self.frames_of(pairs.obs[i, j], pairs.acts[i, j]), self.fps)
                for j in (0, 1)
            ]
            views.append(PairView("clips", clips[0], clips[1]))
        return views


def pendulum_frames(obs: np.ndarray, acts: np.ndarray, size: int = 128) -> np.ndarray:
    """Pendulum-v1 clips drawn from their observations ``(cos theta, sin theta, theta dot)``.

    The rod points up at theta = 0 (the goal) and turns counter-clockwise with theta, as
    Gymnasium draws it; a bar at the bottom shows the torque.
    """
    from PIL import Image, ImageDraw

    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or obs.shape[1] != 3:
        raise ValueError(f"Pendulum observations must be (H, 3), got {obs.shape}")
    torque = np.asarray(acts, dtype=np.float64).reshape(len(obs), -1)[:, 0]
    c = size / 2
    length = size * 0.38
    out = np.empty((len(obs), size, size, 3), np.uint8)
    for t, (cos, sin, _) in enumerate(obs):
        theta = math.atan2(sin, cos)
        img = Image.new("RGB", (size, size), (255, 255, 255))
        draw = ImageDraw.Draw(img)
        tip = (c - length * math.sin(theta), c - length * math.cos(theta))
        draw.line([(c, c), tip], fill=(204, 77, 77), width=max(2, size // 12))
        r = size // 20
        draw.ellipse([c - r, c - r, c + r, c + r], fill=(40, 40, 40))
        bar = torque[t] / 2.0 * (size * 0.4)  # Pendulum's torque is in [-2, 2]
        y = size - size // 12
        draw.rectangle([min(c, c + bar), y - 3, max(c, c + bar), y + 3], fill=(60, 110, 200))
        out[t] = np.asarray(img)
    return out


def atari_frames(obs: np.ndarray, acts: np.ndarray, scale: int = 2) -> np.ndarray:
    """Atari clips from their observations: the newest frame of each stack, grey, enlarged.

    ``obs`` is ``(H, k, 84, 84)`` (stacked) or ``(H, 84, 84)`` uint8.
    """
    obs = np.asarray(obs)
    if obs.ndim == 4:
        obs = obs[:, -1]
    if obs.ndim != 3:
        raise ValueError(f"Atari observations must be (H, [k,] h, w), got {obs.shape}")
    grey = np.repeat(np.repeat(obs.astype(np.uint8), scale, axis=1), scale, axis=2)
    return np.repeat(grey[..., None], 3, axis=-1)


def _clip_kind(task: object) -> str:
    task = getattr(task, "control_task", task)  # an offline task is scored on one
    env_id = getattr(task, "env_id", "")
    if env_id == "Pendulum-v1":
        return "pendulum"
    if getattr(task, "extra", "") == "atari":
        return "atari"
    if getattr(task, "extra", "") == "mujoco" and env_id in MUJOCO_IDS:
        return "mujoco"
    return ""


def check_renderable(task: object) -> None:
    """Raise ``ValueError`` unless :func:`control_renderer` can draw ``task``'s clips."""
    if not _clip_kind(task):
        raise ValueError(
            f"task {getattr(task, 'id', task)!r} cannot be shown to a person yet (drawn: "
            f"pendulum, Atari, MuJoCo {', '.join(sorted(MUJOCO_IDS))})"
        )


def control_renderer(task: object) -> ClipRenderer:
    """The renderer of a control or offline task's clips.

    Raises:
        ValueError: If the task's clips cannot be redrawn from observations.
    """
    check_renderable(task)
    kind = _clip_kind(task)
    task = getattr(task, "control_task", task)
    if kind == "pendulum":
        return ClipRenderer(pendulum_frames, fps=20)
    if kind == "atari":
        return ClipRenderer(atari_frames, fps=15)  # 4-frame skip at 60 Hz
    from prefbench.envs.human.mujoco_render import MujocoFrames
    from prefbench.envs.mujoco_log import route_mujoco_warnings

    route_mujoco_warnings()
    frames = MujocoFrames(task.env_id)
    return ClipRenderer(frames, fps=frames.fps)
