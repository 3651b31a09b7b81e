"""The reward model's checkpoint file: weights and everything needed to go on training.

One ``torch.save`` payload, tagged with :data:`FORMAT` and :data:`FORMAT_VERSION`, loaded
with ``weights_only=True`` (no pickled code). A file of another kind, another version, or
with weights that do not fit its recorded shapes is refused with a
:class:`~prefbench.envs.data.CheckpointError`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.agents.reward_nets import INPUT_STATS
from prefbench.envs.data import CheckpointError
from prefbench.envs.files import atomic_path

FORMAT = "prefbench.reward_model"
FORMAT_VERSION = 2
#: Version 1 predates input normalisation: it loads with ``input_norm=False`` and
#: identity input statistics, which is what those models computed.
READABLE_VERSIONS = (1, 2)


def save_reward_model(model: RewardModel, path: str | Path) -> None:
    """Write the model and its training state to ``path``.

    Saved: weights, normalisation, L2 strengths, holdout flags, config, and the
    optimiser moments and random generator needed to go on training where it stopped.
    """
    path = Path(path)
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": _config_to_plain(model.config),
        "obs_shape": list(model.net.obs_shape),
        "act_dim": model.net.act_dim,
        "seed": model.seed,
        "state_dict": {k: v.detach().cpu() for k, v in model.net.state_dict().items()},
        "l2": torch.as_tensor(model.l2),
        "holdout": torch.as_tensor(model.holdout),
        "optimizer": model.optimizer.state_dict(),
        "rng_state": json.dumps(model._rng.bit_generator.state),
        "dropout_rng_state": model.dropout_gen.get_state(),
        "dropout_rng_device": model.device.type,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_reward_model(path: str | Path, *, device: str | torch.device = "auto") -> RewardModel:
    """Load a model written by :func:`save_reward_model`.

    Raises:
        CheckpointError: If the file is missing, corrupt, not a prefbench reward model,
            of an unknown version, or its weights do not fit its recorded shapes.
    """
    path = Path(path)
    payload = _read(path)
    try:
        model = RewardModel(
            tuple(payload["obs_shape"]),
            int(payload["act_dim"]),
            RewardModelConfig(**_config_from_plain(payload["config"])),
            seed=int(payload["seed"]),
            device=device,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not hold a consistent reward model: {exc}") from exc
    _restore(model, payload, path)
    return model


def restore_reward_model(model: RewardModel, path: str | Path) -> None:
    """Load a checkpoint into ``model`` in place (code holding ``model`` sees the new state).

    Raises:
        CheckpointError: As :func:`load_reward_model`, and for a checkpoint of another
            config, seed or shape than ``model``.
    """
    path = Path(path)
    payload = _read(path)
    try:
        same = (
            RewardModelConfig(**_config_from_plain(payload["config"])) == model.config
            and tuple(payload["obs_shape"]) == model.net.obs_shape
            and int(payload["act_dim"]) == model.net.act_dim
            and int(payload["seed"]) == model.seed
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} does not hold a consistent reward model: {exc}") from exc
    if not same:
        raise CheckpointError(f"{path} holds a reward model of another config, seed or shape")
    _restore(model, payload, path)


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"no reward-model checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise CheckpointError(
            f"{path} is not a readable checkpoint ({type(exc).__name__})"
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a prefbench reward-model checkpoint")
    if payload.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{path} has format version {payload.get('version')}, expected {FORMAT_VERSION}"
        )
    if payload["version"] == 1:
        # Those models computed with input normalisation off; `_restore` gives them the
        # identity statistics a fresh model starts with.
        payload = {**payload, "config": {**payload.get("config", {}), "input_norm": False}}
    return payload


def _restore(model: RewardModel, payload: dict[str, Any], path: Path) -> None:
    try:
        state = payload["state_dict"]
        if payload["version"] == 1:
            fresh = model.net.state_dict()
            state = {**{k: fresh[k] for k in INPUT_STATS}, **state}
        model.net.load_state_dict(state)
        model.l2 = payload["l2"].numpy().astype(np.float64)
        model.holdout = payload["holdout"].numpy().astype(bool)
        model.optimizer.load_state_dict(payload["optimizer"])
        model._rng.bit_generator.state = json.loads(payload["rng_state"])
        # CPU and CUDA generators keep different states: a checkpoint moved across
        # device kinds starts a fresh dropout stream. Older checkpoints have none.
        if payload.get("dropout_rng_device") == model.device.type:
            model.dropout_gen.set_state(payload["dropout_rng_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path} does not hold a consistent reward model: {exc}") from exc


def _config_to_plain(config: RewardModelConfig) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


def _config_from_plain(plain: dict[str, Any]) -> dict[str, Any]:
    tuples = {f for f, v in asdict(RewardModelConfig()).items() if isinstance(v, tuple)}
    return {k: tuple(v) if k in tuples else v for k, v in plain.items()}
