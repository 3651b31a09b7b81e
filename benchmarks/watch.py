"""``prefbench evaluate RUN_DIR``: a trained run's policy on fresh episodes, and a video.

The run's agent is rebuilt from its ``config.json`` and restored from ``checkpoints/``
(the end state a finished run saves; an unfinished run's latest resume state otherwise).
It plays fresh episodes of the task (of the control task, for an offline run), seeded
apart from training's evaluations; each episode's true return is printed with the
learned reward's sum over it where the run has a reward model, and an offline run's
D4RL score. A Decision Transformer run can be asked for another target return than it
trained with (``--target-return``, any value of its ``learner.target_return``): the
target only steers acting, so the same weights answer each one. The video shows the
episodes one after another as the labelling page draws clips (MuJoCo offscreen, Atari
frames, Pendulum), like rl-baselines3-zoo's ``record_video``.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from prefbench.agents.device import resolve_device
from prefbench.agents.protocol import Agent
from prefbench.benchmarks.evaluation import play_trajectories
from prefbench.benchmarks.run_folder import ResumeStates
from prefbench.benchmarks.run_spec import RunSpec
from prefbench.benchmarks.train import check_run, run_parts
from prefbench.envs.data import CheckpointError, Trajectory
from prefbench.envs.files import atomic_path
from prefbench.envs.human.media import control_renderer, encode_clip
from prefbench.envs.minari_io import DatasetInfo
from prefbench.envs.rollout import make_vec_env
from prefbench.envs.seeding import int31_seed, scoped_torch

#: Video formats by file suffix.
VIDEO_SUFFIXES = (".webp", ".gif", ".mp4")


@dataclass(frozen=True)
class EpisodeResult:
    """One evaluated episode.

    Attributes:
        episode: Index among the episodes played (0, 1, ...).
        steps: Its length in environment steps.
        true_return: The environment's reward summed over it (never shown to the agent).
        learned_return: The run's reward model's reward summed over it (NaN without one).
        d4rl_score: The true return as D4RL's normalised score (offline runs whose
            dataset has reference returns; NaN otherwise).
        target_return: The return a Decision Transformer asked for, unscaled (NaN for
            other agents).
        seed: The seed the episodes were played from.
    """

    episode: int
    steps: int
    true_return: float
    learned_return: float
    d4rl_score: float = math.nan
    target_return: float = math.nan
    seed: int = 0


def load_agent(
    run_dir: Path, device: str = "cpu", target_return: str | None = None
) -> tuple[Agent, Any, int]:
    """The agent of a run folder restored from its saved state, the run's task and seed.

    Args:
        run_dir: The run folder.
        device: Torch device.
        target_return: A Decision Transformer run's ``learner.target_return`` to act
            with instead of its own (a number, ``dataset_max`` or ``quantile:q``).

    Raises:
        ValueError: ``run_dir`` is not a prefbench run folder, or its state cannot be
            restored (a run that saved nothing yet, a foreign or corrupt checkpoint), or
            ``target_return`` is given for a run that is not a Decision Transformer's.
    """
    config_path = run_dir / "config.json"
    try:
        config = json.loads(config_path.read_text())
        fields = dict(config["run"]["spec"])
        spec = RunSpec(**{**fields, "overrides": tuple(fields.get("overrides", ()))})
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{run_dir} is not a prefbench run folder ({config_path}: {exc})") from exc
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{config_path} is not a prefbench run config ({exc})") from exc
    if target_return is not None:
        spec = _with_target_return(spec, target_return)
    task, agent_spec = check_run(spec)
    if task.kind == "text":
        raise ValueError(
            f"{run_dir} is a text run; prefbench evaluate plays control episodes "
            "(a text run's samples are scored in its metrics.csv)"
        )
    # The teacher is only there to build the agent: evaluating asks it nothing.
    ctx, teacher = run_parts(
        spec,
        task,
        agent_spec,
        str(resolve_device(device)),
        run_dir,
        logging.getLogger("prefbench.evaluate"),
    )
    agent = agent_spec.build(ctx, teacher, spec.agent_overrides(task.id, agent_spec.config))
    load_state = getattr(agent, "load_state", None)
    if callable(load_state):  # agents that keep no state (random) act as built
        state_dir = _state_dir(run_dir)
        try:
            load_state(state_dir)
        except CheckpointError as exc:
            raise ValueError(f"cannot restore the agent of {run_dir}: {exc}") from exc
    return agent, task, spec.seed


def _with_target_return(spec: RunSpec, target_return: str) -> RunSpec:
    """``spec`` acting at ``target_return``; refused unless its agent is a Decision Transformer."""
    from prefbench.agents import AGENTS
    from prefbench.agents.offline import dt

    if not isinstance(getattr(AGENTS.get(spec.agent).config, "learner", None), dt.Config):
        raise ValueError(
            f"--target-return steers a Decision Transformer; agent {spec.agent!r} is not one"
        )
    # The run's own overrides stay; the last setting of a key wins.
    return replace(spec, overrides=(*spec.overrides, f"learner.target_return={target_return}"))


def _state_dir(run_dir: Path) -> Path:
    """``checkpoints/`` of a finished run, else the latest resume state."""
    final = run_dir / "checkpoints"
    if (final / "state.json").is_file():
        return final
    latest = ResumeStates(run_dir).latest()
    if latest is not None:
        return latest
    if final.is_dir():
        raise ValueError(
            f"{final} holds no agent state (runs finished before prefbench saved it there "
            "cannot be evaluated; rerun them)"
        )
    raise ValueError(f"{run_dir} has saved no agent state yet")


def evaluate_run(
    run_dir: Path,
    episodes: int = 5,
    seed: int | None = None,
    video: Path | None = None,
    device: str = "cpu",
    target_return: str | None = None,
) -> list[EpisodeResult]:
    """Play ``episodes`` fresh episodes with a run's agent; optionally write their video.

    Args:
        run_dir: A run folder (``prefbench train`` wrote it).
        episodes: Episodes to play (>= 1).
        seed: Seed of the episodes (default: from the run's seed, apart from training's).
        video: Where to write the episodes' video (``.webp``, ``.gif`` or ``.mp4``).
        device: Torch device for the agent and its reward model.
        target_return: A Decision Transformer run's target return to act with instead
            of its own (see :func:`load_agent`).

    Raises:
        ValueError: Bad arguments or a run folder that cannot be evaluated.
    """
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if video is not None and video.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"video must end in {', '.join(VIDEO_SUFFIXES)}, got {video.name!r}")
    if not run_dir.is_dir():
        raise ValueError(f"no run folder {run_dir}")
    agent, task, run_seed = load_agent(run_dir, device, target_return)
    control = getattr(task, "control_task", task)
    renderer = control_renderer(task) if video is not None else None  # refuses undrawable tasks
    seed = int31_seed(run_seed, "evaluate") if seed is None else seed
    model = getattr(agent, "reward_model", None)
    with scoped_torch(seed, 1):
        env = make_vec_env(control, episodes, seed)
        try:
            trajs = play_trajectories(env, agent, seed, frame_stack=control.frame_stack)
        finally:
            env.close()
    target = float(getattr(getattr(agent, "learner", None), "target_return", math.nan))
    results = [
        EpisodeResult(
            i,
            len(t),
            t.true_return,
            _learned_return(model, t, float(getattr(agent, "reward_shift", 0.0))),
            _d4rl_score(getattr(agent, "info", None), t.true_return),
            target,
            seed,
        )
        for i, t in enumerate(trajs)
    ]
    if renderer is not None:
        write_video(video, _episode_frames(trajs, renderer.frames_of), renderer.fps)
    return results


def _learned_return(model: Any, traj: Trajectory, shift: float = 0.0) -> float:
    """The reward the agent was given (the model's less ``shift``) summed over an episode."""
    if model is None:
        return math.nan
    return float(np.sum(model.reward(traj.obs, traj.acts), dtype=np.float64) - shift * len(traj))


def _d4rl_score(info: Any, true_return: float) -> float:
    """An offline run's normalised score of ``true_return`` (NaN without reference returns)."""
    if not isinstance(info, DatasetInfo):
        return math.nan
    try:
        return float(info.normalized_score(true_return))
    except ValueError:
        return math.nan


def _episode_frames(trajs: list[Trajectory], frames_of) -> np.ndarray:
    """``(T, H, W, 3)`` frames of every episode, with a short dark pause between them."""
    parts = []
    for i, t in enumerate(trajs):
        frames = frames_of(t.obs, t.acts)
        if i:
            parts.append(np.zeros((5, *frames.shape[1:]), np.uint8))
        parts.append(frames)
    return np.concatenate(parts)


def write_video(path: Path, frames: np.ndarray, fps: float) -> None:
    """Write ``(T, H, W, 3)`` uint8 frames as an animated WebP or GIF, or an MP4.

    The file appears whole or not at all.

    Raises:
        ValueError: An unknown suffix, or ``.mp4`` without OpenCV (the ``atari`` extra).
    """
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        data = _mp4(frames, fps)
    elif suffix in (".webp", ".gif"):
        data = encode_clip(frames, fps, suffix[1:].upper())
    else:
        raise ValueError(f"video must end in {', '.join(VIDEO_SUFFIXES)}, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def _mp4(frames: np.ndarray, fps: float) -> bytes:
    try:
        import cv2
    except ImportError as exc:
        raise ValueError("an .mp4 video needs OpenCV: pip install 'prefbench[atari]'") from exc
    import tempfile

    h, w = frames.shape[1:3]
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "video.mp4"
        writer = cv2.VideoWriter(str(file), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise ValueError("OpenCV cannot write MP4 here (no mp4v encoder)")
        for f in frames:
            writer.write(f[..., ::-1])  # OpenCV takes BGR
        writer.release()
        return file.read_bytes()
