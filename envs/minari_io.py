"""Reading and writing :class:`~prefbench.envs.episodes.Episodes` in Minari's format.

Datasets live where Minari keeps them: ``$MINARI_DATASETS_PATH``, else
``~/.minari/datasets``, so ``minari.load_dataset(dataset_id)`` reads what this module
writes and any dataset a user has installed there (a D4RL port such as
``mujoco/hopper/medium-v0``) reads here. A new dataset is written under a hidden
staging folder of that root and renamed into place when complete, so a killed writer
never leaves a half-written dataset under its id (Minari lists no hidden folders).

Minari is an optional dependency (``pip install prefbench[offline]``); importing this
module does not import it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from prefbench.envs.data import CheckpointError
from prefbench.envs.episodes import Episodes

#: Folder under the datasets root for prefbench's work in progress (hidden from Minari).
WORK_DIR = ".prefbench"
#: Key of prefbench's own entry in a dataset's metadata.
META_KEY = "prefbench"


def _minari() -> Any:
    try:
        import minari
    except ImportError as exc:
        raise ImportError("offline datasets need Minari: pip install 'prefbench[offline]'") from exc
    return minari


def datasets_root() -> Path:
    """Minari's datasets folder (``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``)."""
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env) if env else Path.home() / ".minari" / "datasets"


def work_dir() -> Path:
    """The hidden prefbench folder under the datasets root (staging, behaviour policies)."""
    return datasets_root() / WORK_DIR


def dataset_path(dataset_id: str) -> Path:
    """Where the dataset ``dataset_id`` lives (it may not exist)."""
    return datasets_root() / dataset_id


def dataset_exists(dataset_id: str) -> bool:
    """Whether a complete dataset with this id is installed."""
    return (dataset_path(dataset_id) / "data" / "metadata.json").is_file()


def dataset_env_id(dataset_id: str) -> str:
    """The Gymnasium id a dataset was recorded in, from its metadata ("" if unknown).

    Raises:
        CheckpointError: If the metadata is unreadable.
    """
    path = dataset_path(dataset_id) / "data" / "metadata.json"
    try:
        spec = json.loads(path.read_text()).get("env_spec")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise CheckpointError(f"dataset {dataset_id}: unreadable metadata ({exc})") from exc
    return _spec_id(spec)


def _spec_id(spec: Any) -> str:
    """The ``id`` of an environment spec stored as JSON text (or an ``EnvSpec``)."""
    if isinstance(spec, str):
        try:
            return str(json.loads(spec).get("id", ""))
        except (json.JSONDecodeError, AttributeError):
            return ""
    return str(getattr(spec, "id", "") or "")


def local_dataset_ids() -> list[str]:
    """Ids of the datasets installed under the root (Minari's listing)."""
    root = datasets_root()
    if not root.is_dir():
        return []
    return sorted(_minari().list_local_datasets().keys())


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset says about itself besides its steps.

    Attributes:
        dataset_id: Minari id.
        env_id: Gymnasium id of the environment it was recorded in ("" if unknown).
        ref_min_score: Return that normalises to 0 (a random policy's), or NaN.
        ref_max_score: Return that normalises to 100 (the expert's), or NaN.
        metadata: The whole metadata Minari stores (prefbench's entry under ``prefbench``).
    """

    dataset_id: str
    env_id: str
    ref_min_score: float
    ref_max_score: float
    metadata: dict[str, Any] = field(repr=False)

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray:
        """D4RL's normalised score of ``returns`` (:func:`d4rl_score`).

        Raises:
            ValueError: If the dataset has no reference scores.
        """
        try:
            return d4rl_score(returns, self.ref_min_score, self.ref_max_score)
        except ValueError as exc:
            raise ValueError(f"dataset {self.dataset_id} has no reference scores") from exc


def d4rl_score(returns: np.ndarray | float, ref_min: float, ref_max: float) -> np.ndarray:
    """D4RL's normalised score: ``100 * (R - ref_min) / (ref_max - ref_min)``.

    Raises:
        ValueError: If ``ref_max - ref_min`` is not a positive number.
    """
    span = ref_max - ref_min
    if not (np.isfinite(span) and span > 0):
        raise ValueError(f"reference returns {ref_min} and {ref_max} span nothing")
    return 100.0 * (np.asarray(returns, dtype=np.float64) - ref_min) / span


def write_dataset(
    dataset_id: str,
    episodes: Episodes,
    env: Any,
    *,
    ref_min_score: float,
    ref_max_score: float,
    algorithm_name: str,
    description: str,
    extra: dict[str, Any],
) -> Path:
    """Write ``episodes`` as the Minari dataset ``dataset_id``; returns its folder.

    Args:
        dataset_id: Minari id (``namespace/env/name-vN``).
        episodes: The steps.
        env: An environment of the kind recorded (anything with its ``spec``,
            ``observation_space`` and ``action_space``).
        ref_min_score: Reference return for a normalised score of 0.
        ref_max_score: Reference return for 100.
        algorithm_name: How the data were made, in a few words.
        description: One paragraph for Minari's listing.
        extra: JSON-ready provenance stored under the metadata key ``prefbench``.

    Raises:
        FileExistsError: If a dataset with this id exists.
    """
    minari = _minari()
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    final = dataset_path(dataset_id)
    if final.exists():
        raise FileExistsError(f"dataset {dataset_id} exists at {final}")
    stage = work_dir() / "staging" / dataset_id
    shutil.rmtree(stage, ignore_errors=True)
    (stage / "data").mkdir(parents=True)
    spec = env.spec
    storage = MinariStorage.new(
        stage / "data",
        observation_space=env.observation_space,
        action_space=env.action_space,
        env_spec=spec,
    )
    storage.update_metadata(
        {
            "dataset_id": dataset_id,
            "algorithm_name": algorithm_name,
            "author": {"prefbench"},
            "code_permalink": "prefbench data make",
            "minari_version": minari.__version__,
            "description": description,
            "ref_min_score": float(ref_min_score),
            "ref_max_score": float(ref_max_score),
            **_eval_spec(spec),
            META_KEY: {**extra, "complete": True},
        }
    )
    buffers = []
    for e in range(episodes.n_episodes):
        a, b = episodes.starts[e], episodes.starts[e + 1]
        buffers.append(
            EpisodeBuffer(
                id=e,
                observations=np.concatenate([episodes.obs[a:b], episodes.next_obs[b - 1 : b]]),
                actions=episodes.acts[a:b],
                rewards=episodes.rewards[a:b].astype(np.float64),
                terminations=episodes.terminations[a:b],
                truncations=episodes.truncations[a:b],
                infos={},
            )
        )
    storage.update_episodes(buffers)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.replace(stage, final)
    return final


def _eval_spec(spec: Any) -> dict[str, str]:
    """Minari's ``eval_env_spec`` entry: the recording env's spec, where it serialises."""
    try:
        return {"eval_env_spec": spec.to_json()} if spec is not None else {}
    except (TypeError, ValueError, gym.error.Error):
        return {}  # wrapped by code (a lambda): Minari cannot recover such envs either


def read_dataset(dataset_id: str) -> tuple[Episodes, DatasetInfo]:
    """Load a Minari dataset as :class:`Episodes` and its :class:`DatasetInfo`.

    Raises:
        FileNotFoundError: If no dataset has this id.
        CheckpointError: If the dataset is unreadable, truncated, of an unsupported space
            (only flat ``Box`` observations and actions), or inconsistent.
    """
    minari = _minari()
    if not dataset_exists(dataset_id):
        raise FileNotFoundError(f"no dataset {dataset_id!r} under {datasets_root()}")
    try:
        ds = minari.load_dataset(dataset_id)
        obs_space, act_space = ds.observation_space, ds.action_space
        for name, space in (("observation", obs_space), ("action", act_space)):
            if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
                raise CheckpointError(
                    f"dataset {dataset_id}: only flat Box spaces are supported, "
                    f"its {name} space is {space}"
                )
        parts = []
        for ep in ds.iterate_episodes():
            o = np.asarray(ep.observations, dtype=np.float32)
            t = len(ep.actions)
            if t == 0 or o.shape[0] != t + 1:
                raise CheckpointError(
                    f"dataset {dataset_id}: episode {ep.id} has {o.shape[0]} observations "
                    f"for {t} actions"
                )
            if o.shape[1:] != obs_space.shape or np.shape(ep.actions)[1:] != act_space.shape:
                raise CheckpointError(
                    f"dataset {dataset_id}: episode {ep.id} holds observations {o.shape[1:]} "
                    f"and actions {np.shape(ep.actions)[1:]}, its spaces say "
                    f"{obs_space.shape} and {act_space.shape}"
                )
            term = np.asarray(ep.terminations, dtype=bool).reshape(t)
            trunc = np.asarray(ep.truncations, dtype=bool).reshape(t)
            if not (term[-1] or trunc[-1]):
                trunc = trunc.copy()
                trunc[-1] = True  # recording stopped mid-episode: a truncation
            parts.append(
                Episodes(
                    o[:-1],
                    np.asarray(ep.actions, dtype=np.float32).reshape(t, -1),
                    np.asarray(ep.rewards, dtype=np.float32).reshape(t),
                    o[1:],
                    term,
                    trunc & ~term,
                    np.array([0, t], dtype=np.int64),
                )
            )
        if not parts:
            raise CheckpointError(f"dataset {dataset_id} has no episodes")
        metadata = dict(ds.storage.metadata)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - HDF5/Arrow/JSON errors all mean a bad dataset
        raise CheckpointError(
            f"dataset {dataset_id} is unreadable ({type(exc).__name__}: {exc})"
        ) from exc
    episodes = Episodes.concatenate(parts)
    info = DatasetInfo(
        dataset_id,
        _spec_id(metadata.get("env_spec")),
        float(metadata.get("ref_min_score", np.nan)),
        float(metadata.get("ref_max_score", np.nan)),
        metadata,
    )
    return episodes, info
