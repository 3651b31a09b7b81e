"""Data types that flow through the preference loop.

All arrays are NumPy; shapes are documented per field with these letters:

* ``T``: steps in a trajectory; ``H``: steps in a clip (segment);
* ``N``: pairs in a batch; the axis of size 2 holds the two clips of a pair,
  index 0 being the *first* clip (the one a label's probability refers to);
* ``O...``: the observation shape, ``A...``: the action shape.

True rewards travel with the data because the synthetic teacher needs them; learners
read only ``obs`` and ``acts``.

Frame-stacked observations (Atari: ``O... = (k, 84, 84)``, the last ``k`` frames, oldest
first) are stored compactly: each distinct frame once, in a ``frames`` array, with
``obs`` a read-only strided view over it (:func:`stacked_view`). Consecutive steps share
``k - 1`` frames, so a 25-step clip of 4-frame stacks holds 28 frames instead of 100.
Slicing, indexing, concatenating, sampling and saving keep the compact form.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prefbench.envs.files import atomic_path

DATASET_FORMAT = "prefbench.preference_dataset.v1"


class CheckpointError(ValueError):
    """A checkpoint or data file is missing, corrupt, or of another kind or shape."""


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def stacked_view(frames: np.ndarray, stack: int, axis: int) -> np.ndarray:
    """A read-only view of ``stack``-frame stacks over runs of single frames; copies nothing.

    Args:
        frames: ``(..., L, F...)`` frames, runs along ``axis``.
        stack: ``k``, frames per stack (1 <= k <= L).
        axis: Position of the run axis ``L``.

    Returns:
        ``(..., L - k + 1, k, F...)``: stack ``t`` holds frames ``t, ..., t + k - 1``
        (oldest first, the order of Gymnasium's ``FrameStackObservation``).
    """
    length = frames.shape[axis]
    _check(1 <= stack <= length, f"cannot stack {stack} frames from runs of {length}")
    step = frames.strides[axis]
    shape = (*frames.shape[:axis], length - stack + 1, stack, *frames.shape[axis + 1 :])
    strides = (*frames.strides[:axis], step, step, *frames.strides[axis + 1 :])
    return np.lib.stride_tricks.as_strided(frames, shape, strides, writeable=False)


def _check_frames(obs: np.ndarray, frames: np.ndarray, axis: int) -> None:
    """``obs`` must be the ``stacked_view`` of ``frames`` (shape and memory)."""
    k = obs.shape[axis + 1] if obs.ndim > axis + 1 else 0
    want = (*frames.shape[:axis], frames.shape[axis] - k + 1, k, *frames.shape[axis + 1 :])
    _check(
        k >= 1 and obs.shape == want and (obs.size == 0 or np.may_share_memory(obs, frames)),
        f"obs {obs.shape} is not a frame-stack view of frames {frames.shape}",
    )


@dataclass(frozen=True)
class Trajectory:
    """One stretch of experience from a single environment.

    Attributes:
        obs: ``(T, O...)`` observation seen before each action.
        acts: ``(T, A...)`` action taken.
        true_rewards: ``(T,)`` float32 environment reward of each step (hidden from the agent).
        frames: ``(T + k - 1, F...)`` for ``k``-frame-stacked observations stored compactly
            (then ``obs``, ``(T, k, F...)``, is a view of it; build with :meth:`from_frames`);
            ``None`` when ``obs`` holds its own data.
        final_obs: ``(O...)`` the observation after the last action, where the recorder
            kept it (training environments do; offline datasets need it); else ``None``.
        terminated: The episode ended in a terminal state (not by a time limit or the end
            of recording). Meaningful for finished episodes only.
        absorbing_steps: The last ``absorbing_steps`` steps are not experience but the
            absorbing state a terminated episode stays in, reward 0, appended so that clips
            may run past the termination (:func:`~prefbench.envs.segments.with_absorbing`).
    """

    obs: np.ndarray
    acts: np.ndarray
    true_rewards: np.ndarray
    frames: np.ndarray | None = field(default=None, repr=False)
    final_obs: np.ndarray | None = field(default=None, repr=False)
    terminated: bool = False
    absorbing_steps: int = 0

    def __post_init__(self) -> None:
        n = len(self.obs)
        _check(
            len(self.acts) == n and self.true_rewards.shape == (n,),
            f"trajectory arrays disagree: obs {self.obs.shape}, acts {self.acts.shape}, "
            f"true_rewards {self.true_rewards.shape}",
        )
        if self.frames is not None:
            _check_frames(self.obs, self.frames, 0)
        _check(
            0 <= self.absorbing_steps <= n and (self.terminated or not self.absorbing_steps),
            f"absorbing_steps must lie in [0, {n}] and follow a termination, "
            f"got {self.absorbing_steps}",
        )

    @staticmethod
    def from_frames(
        frames: np.ndarray, stack: int, acts: np.ndarray, true_rewards: np.ndarray
    ) -> Trajectory:
        """A trajectory whose observations are ``stack``-frame stacks of ``frames``.

        Args:
            frames: ``(T + k - 1, F...)`` distinct frames in time order.
            stack: ``k``.
            acts: ``(T, A...)``.
            true_rewards: ``(T,)``.
        """
        return Trajectory(stacked_view(frames, stack, 0), acts, true_rewards, frames)

    @property
    def frame_stack(self) -> int:
        """``k`` when stored as frames, else 0."""
        return self.obs.shape[1] if self.frames is not None else 0

    def __len__(self) -> int:
        return len(self.obs)

    @property
    def true_return(self) -> float:
        """Undiscounted sum of the true rewards."""
        return float(self.true_rewards.sum())


@dataclass(frozen=True)
class ClipPairs:
    """A batch of pairs of equally long clips.

    Attributes:
        obs: ``(N, 2, H, O...)`` observations.
        acts: ``(N, 2, H, A...)`` actions.
        true_rewards: ``(N, 2, H)`` float32 true per-step rewards (for the teacher only).
        frames: ``(N, 2, H + k - 1, F...)`` for ``k``-frame-stacked observations stored
            compactly (then ``obs``, ``(N, 2, H, k, F...)``, is a view of it; build with
            :meth:`from_frames`); ``None`` when ``obs`` holds its own data.
        absorbing: ``(N, 2, H)`` bool, True at the steps a clip spends in the absorbing
            state after its episode terminated: no experience, reward 0 to the teacher
            (``true_rewards`` is 0 there) and to a reward model. ``None``: no such steps.
    """

    obs: np.ndarray
    acts: np.ndarray
    true_rewards: np.ndarray
    frames: np.ndarray | None = field(default=None, repr=False)
    absorbing: np.ndarray | None = None

    def __post_init__(self) -> None:
        _check(
            self.obs.ndim >= 3 and self.obs.shape[1] == 2,
            f"obs must be (N, 2, H, ...), got {self.obs.shape}",
        )
        n, _, h = self.obs.shape[:3]
        _check(
            self.acts.shape[:3] == (n, 2, h),
            f"acts {self.acts.shape} do not match obs {self.obs.shape}",
        )
        _check(
            self.true_rewards.shape == (n, 2, h),
            f"true_rewards must be {(n, 2, h)}, got {self.true_rewards.shape}",
        )
        if self.frames is not None:
            _check_frames(self.obs, self.frames, 2)
        if self.absorbing is not None:
            _check(
                self.absorbing.shape == (n, 2, h) and self.absorbing.dtype == np.bool_,
                f"absorbing must be a {(n, 2, h)} bool array, got {self.absorbing.shape} "
                f"{self.absorbing.dtype}",
            )
            _check(
                not np.any(self.true_rewards[self.absorbing]),
                "true_rewards must be 0 at absorbing steps",
            )
            # The absorbing state follows a clip's last step of experience and never ends.
            starts_absorbing = h > 0 and bool(self.absorbing[..., 0].any())
            leaves_absorbing = bool((np.diff(self.absorbing.astype(np.int8), axis=2) < 0).any())
            _check(
                not (starts_absorbing or leaves_absorbing),
                "absorbing steps must end each clip, after at least one step of experience",
            )

    @staticmethod
    def from_frames(
        frames: np.ndarray,
        stack: int,
        acts: np.ndarray,
        true_rewards: np.ndarray,
        absorbing: np.ndarray | None = None,
    ) -> ClipPairs:
        """Pairs whose observations are ``stack``-frame stacks of ``frames``.

        Args:
            frames: ``(N, 2, H + k - 1, F...)`` distinct frames of each clip in time order.
            stack: ``k``.
            acts: ``(N, 2, H, A...)``.
            true_rewards: ``(N, 2, H)``.
            absorbing: ``(N, 2, H)`` bool or ``None`` (see the class).
        """
        return ClipPairs(stacked_view(frames, stack, 2), acts, true_rewards, frames, absorbing)

    @property
    def steps_taken(self) -> np.ndarray:
        """``(N, 2, H)`` float32: 1 at steps of experience, 0 at absorbing steps."""
        if self.absorbing is None:
            return np.ones(self.true_rewards.shape, dtype=np.float32)
        return (~self.absorbing).astype(np.float32)

    @property
    def frame_stack(self) -> int:
        """``k`` when stored as frames, else 0."""
        return self.obs.shape[3] if self.frames is not None else 0

    @property
    def nbytes(self) -> int:
        """Bytes held (the frames once, not the stacks, when stored compactly)."""
        obs = self.obs if self.frames is None else self.frames
        extra = 0 if self.absorbing is None else self.absorbing.nbytes
        return obs.nbytes + self.acts.nbytes + self.true_rewards.nbytes + extra

    def __len__(self) -> int:
        return self.obs.shape[0]

    @property
    def clip_length(self) -> int:
        """``H``, the number of steps in each clip."""
        return self.obs.shape[2]

    def __getitem__(self, index: np.ndarray | slice) -> ClipPairs:
        absorbing = None if self.absorbing is None else self.absorbing[index]
        if self.frames is not None:
            return ClipPairs.from_frames(
                self.frames[index],
                self.frame_stack,
                self.acts[index],
                self.true_rewards[index],
                absorbing,
            )
        return ClipPairs(
            self.obs[index], self.acts[index], self.true_rewards[index], None, absorbing
        )

    @staticmethod
    def concatenate(batches: Sequence[ClipPairs]) -> ClipPairs:
        """Join batches along the pair axis (all compact with the same ``k``, or none)."""
        _check(len(batches) > 0, "nothing to concatenate")
        stacks = {b.frame_stack for b in batches}
        _check(len(stacks) == 1, f"cannot join clips of different frame stacks {stacks}")
        acts = np.concatenate([b.acts for b in batches])
        rews = np.concatenate([b.true_rewards for b in batches])
        absorbing = None
        if any(b.absorbing is not None for b in batches):
            absorbing = np.concatenate(
                [
                    np.zeros(b.true_rewards.shape, bool) if b.absorbing is None else b.absorbing
                    for b in batches
                ]
            )
        if batches[0].frames is not None:
            frames = np.concatenate([b.frames for b in batches])  # type: ignore[misc]
            return ClipPairs.from_frames(frames, batches[0].frame_stack, acts, rews, absorbing)
        return ClipPairs(np.concatenate([b.obs for b in batches]), acts, rews, None, absorbing)


@dataclass(frozen=True)
class Labels:
    """A teacher's answers for a batch of pairs.

    Attributes:
        prefs: ``(N,)`` float32 probability that the first clip is preferred
            (1 = first, 0 = second, 0.5 = indifferent).
        valid: ``(N,)`` bool; False where the teacher abstained (gave no label).
    """

    prefs: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        _check(self.prefs.ndim == 1, f"prefs must be (N,), got {self.prefs.shape}")
        _check(self.valid.shape == self.prefs.shape, "valid must have the shape of prefs")
        _check(self.valid.dtype == np.bool_, "valid must be a bool array")
        ok = self.prefs[self.valid]
        _check(bool(np.all((ok >= 0) & (ok <= 1))), "prefs must lie in [0, 1]")

    def __len__(self) -> int:
        return len(self.prefs)


@dataclass(frozen=True)
class PreferenceDataset:
    """Labelled pairs that a reward model trains on (abstentions already dropped).

    Attributes:
        pairs: The clip pairs, ``N`` of them.
        prefs: ``(N,)`` float32 probability that the first clip is preferred.
    """

    pairs: ClipPairs
    prefs: np.ndarray

    def __post_init__(self) -> None:
        _check(self.prefs.shape == (len(self.pairs),), "one preference per pair is required")

    def __len__(self) -> int:
        return len(self.prefs)

    @staticmethod
    def from_labels(pairs: ClipPairs, labels: Labels) -> PreferenceDataset:
        """Keep the pairs the teacher answered."""
        _check(len(pairs) == len(labels), "pairs and labels differ in length")
        keep = np.flatnonzero(labels.valid)
        return PreferenceDataset(pairs[keep], labels.prefs[keep].astype(np.float32))

    def extend(self, other: PreferenceDataset) -> PreferenceDataset:
        """A new dataset with ``other`` appended."""
        if len(self) == 0:
            return other
        if len(other) == 0:
            return self
        return PreferenceDataset(
            ClipPairs.concatenate([self.pairs, other.pairs]),
            np.concatenate([self.prefs, other.prefs]),
        )

    def recent(self, n: int) -> PreferenceDataset:
        """The last ``n`` labels (all if fewer)."""
        if n >= len(self):
            return self
        keep = slice(len(self) - max(n, 0), None)
        return PreferenceDataset(self.pairs[keep], self.prefs[keep])


def save_dataset(dataset: PreferenceDataset, path: str | Path) -> None:
    """Write labelled pairs to ``path`` (``.npz``, no pickles), atomically."""
    path = Path(path)
    pairs = dataset.pairs
    obs = {"obs": pairs.obs}
    if pairs.frames is not None:
        obs = {"frames": pairs.frames, "frame_stack": np.array(pairs.frame_stack)}
    if pairs.absorbing is not None:
        obs["absorbing"] = pairs.absorbing
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(  # a file object: np.savez would append .npz to a name without it
            f,
            format=np.array(DATASET_FORMAT),
            acts=pairs.acts,
            true_rewards=pairs.true_rewards,
            prefs=dataset.prefs,
            **obs,
        )


def load_dataset(path: str | Path) -> PreferenceDataset:
    """Read a dataset written by :func:`save_dataset`.

    Raises:
        CheckpointError: If the file is missing, unreadable, of another format, or inconsistent.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no label dataset at {path}")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f.files or str(f["format"]) != DATASET_FORMAT:
                raise CheckpointError(f"{path} is not a prefbench label dataset")
            obs_keys = ("frames", "frame_stack") if "frames" in f.files else ("obs",)
            optional = ("absorbing",) if "absorbing" in f.files else ()
            keys = (*obs_keys, *optional, "acts", "true_rewards", "prefs")
            arrays = {k: f[k] for k in keys}
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy errors all mean a bad file
        raise CheckpointError(
            f"{path} is not a readable label dataset ({type(exc).__name__})"
        ) from exc
    try:
        absorbing = arrays.get("absorbing")
        if "frames" in arrays:
            pairs = ClipPairs.from_frames(
                arrays["frames"],
                int(arrays["frame_stack"]),
                arrays["acts"],
                arrays["true_rewards"],
                absorbing,
            )
        else:
            pairs = ClipPairs(
                arrays["obs"], arrays["acts"], arrays["true_rewards"], None, absorbing
            )
        return PreferenceDataset(pairs, arrays["prefs"].astype(np.float32))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path} holds inconsistent arrays: {exc}") from exc
