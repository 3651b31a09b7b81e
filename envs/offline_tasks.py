"""Offline tasks: a fixed dataset to learn from and the environment that scores the result.

The built-in datasets follow D4RL's naming, ``{env}-{quality}`` for Hopper, Walker2d and
HalfCheetah and the qualities of :data:`QUALITIES`; ``prefbench data make ID`` builds
them and stores them in Minari's format as ``prefbench/{env}/{quality}-v0``. Any
Minari dataset installed locally (a D4RL port such as ``mujoco/hopper/medium-v0``) is a
task under its Minari id, scored in the registered control task whose Gymnasium id it
was recorded in.

Offline tasks are scored in the raw environment (early termination ends the episode,
as in D4RL), not under the preference loop's fixed-length edit, and a score is D4RL's
normalised return: 0 for the random policy, 100 for the dataset's expert.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from typing import ClassVar

from prefbench.envs.episodes import Episodes
from prefbench.envs.minari_io import (
    DatasetInfo,
    dataset_env_id,
    dataset_exists,
    local_dataset_ids,
    read_dataset,
)
from prefbench.envs.registry import UnknownIdError, import_object
from prefbench.envs.tasks import MUJOCO_TASKS, TASKS, TaskSpec, get_task
from prefbench.envs.text_tasks import TEXT_TASKS, TextTask

#: D4RL's dataset qualities (``medium-replay``: the training data up to ``medium``).
QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
#: The control tasks ``prefbench data make`` builds datasets for.
DATASET_ENVS = ("hopper", "walker2d", "halfcheetah")
#: The Minari namespace of the datasets prefbench builds.
NAMESPACE = "prefbench"


@dataclass(frozen=True)
class OfflineTask:
    """A dataset to learn from and the control task that scores policies (kind ``offline``).

    Attributes:
        id: Task id (``hopper-medium-replay``, or a Minari id).
        dataset_id: The Minari dataset.
        control: Id of the control task whose raw environment evaluates policies.
        quality: The D4RL quality for built-in datasets ("" for others).
    """

    kind: ClassVar[str] = "offline"

    id: str
    dataset_id: str
    control: str
    quality: str = ""

    @property
    def control_task(self) -> TaskSpec:
        """The control task, with episodes that end at termination (D4RL's protocol)."""
        return dataclasses.replace(get_task(self.control), fixed_length_default=False)

    @property
    def extra(self) -> str:
        """The ``prefbench[...]`` extra it needs: ``offline`` (Minari)."""
        return "offline"

    def missing_extra(self) -> str | None:
        """``offline`` without Minari, else the control task's missing extra, if any."""
        if importlib.util.find_spec("minari") is None:
            return "offline"
        return get_task(self.control).missing_extra()

    def exists(self) -> bool:
        """Whether the dataset is installed."""
        return dataset_exists(self.dataset_id)

    def check(self) -> None:
        """Refuse a dataset that is not installed, naming the command that builds it.

        Raises:
            ValueError: If the dataset is not installed.
        """
        if not self.exists():
            hint = (
                f"build it with `prefbench data make {self.id}`"
                if self.quality
                else "install it under MINARI_DATASETS_PATH"
            )
            raise ValueError(f"dataset {self.dataset_id} is not installed; {hint}")

    def load(self) -> tuple[Episodes, DatasetInfo]:
        """The dataset's episodes and metadata (see :func:`~prefbench.envs.minari_io.read_dataset`).

        Raises:
            ValueError: If the dataset is not installed (:meth:`check`).
            CheckpointError: If it is unreadable or inconsistent.
        """
        self.check()
        return read_dataset(self.dataset_id)


def minari_id(env: str, quality: str) -> str:
    """The Minari id of a built-in dataset (``prefbench/hopper/medium-replay-v0``)."""
    return f"{NAMESPACE}/{env}/{quality}-v0"


def builtin_ids() -> list[str]:
    """Every built-in dataset's task id, buildable by ``prefbench data make``."""
    return [f"{env}-{q}" for env in DATASET_ENVS for q in QUALITIES]


def get_offline_task(name: str) -> OfflineTask:
    """The offline task ``name``: a built-in id or a locally installed Minari id.

    Raises:
        UnknownIdError: If ``name`` is neither; the message lists the built-in ids and
            the installed datasets.
    """
    for env in DATASET_ENVS:
        prefix = f"{env}-"
        if name.startswith(prefix) and name[len(prefix) :] in QUALITIES:
            quality = name[len(prefix) :]
            return OfflineTask(name, minari_id(env, quality), env, quality)
    if "/" in name and dataset_exists(name):
        env_id = dataset_env_id(name)
        for task_id in (*MUJOCO_TASKS, "pendulum"):
            if get_task(task_id).env_id == env_id:
                return OfflineTask(name, name, task_id)
        raise ValueError(
            f"dataset {name} was recorded in {env_id or 'an unnamed environment'}, "
            "which no registered control task runs"
        )
    installed = [i for i in _safe_local_ids() if not i.startswith(f"{NAMESPACE}/")]
    raise UnknownIdError(
        f"unknown dataset {name!r}; built-in: {', '.join(builtin_ids())}"
        + (f"; installed: {', '.join(installed)}" if installed else "")
        + " (build one with `prefbench data make ID`)"
    )


def _safe_local_ids() -> list[str]:
    try:
        return local_dataset_ids()
    except ImportError:
        return []


def resolve_task(name: str) -> TaskSpec | OfflineTask | TextTask:
    """Any task by id: a registered control or text task, else an offline dataset.

    Raises:
        UnknownIdError: If ``name`` is none of them (the message lists every kind's ids).
    """
    if name in TASKS:
        return get_task(name)
    if name in TEXT_TASKS:
        return TEXT_TASKS.get(name)
    if ":" in name:
        obj = import_object(name)
        if isinstance(obj, TextTask):
            return obj
        return get_task(name)
    try:
        return get_offline_task(name)
    except UnknownIdError as exc:
        raise UnknownIdError(
            f"unknown task {name!r}; control tasks: {', '.join(TASKS.names())}; "
            f"text tasks: {', '.join(TEXT_TASKS.names())}; offline datasets: {exc}"
        ) from None
