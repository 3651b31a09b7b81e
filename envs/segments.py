"""Cutting clips from trajectories, and a bounded store of recent trajectories."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from prefbench.envs.data import ClipPairs, Trajectory


def locate_steps(lengths: np.ndarray, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map positions in the concatenation of runs to (run, offset within the run).

    Args:
        lengths: ``(R,)`` lengths of the runs, in order.
        flat: ``(M,)`` positions in ``[0, lengths.sum())``.

    Returns:
        ``(M,)`` run indices and ``(M,)`` offsets.
    """
    ends = np.cumsum(lengths)
    run = np.searchsorted(ends, flat, side="right")
    return run, flat - (ends - lengths)[run]


def sample_clip_pairs(
    trajectories: Sequence[Trajectory],
    n_pairs: int,
    clip_length: int,
    rng: np.random.Generator,
) -> ClipPairs:
    """Sample ``n_pairs`` pairs of clips uniformly over all valid clip start positions.

    Each clip lies inside one trajectory; both clips of a pair are drawn independently.
    A clip may include the absorbing steps of a trajectory built by
    :func:`with_absorbing`; the pairs then mark them (``ClipPairs.absorbing``).
    Trajectories stored as frames (:meth:`Trajectory.from_frames`) give compact clips:
    each clip copies its ``H + k - 1`` distinct frames, not ``H`` stacks of ``k``.

    Args:
        trajectories: Source trajectories; those shorter than ``clip_length`` are ignored.
        n_pairs: Pairs to draw.
        clip_length: ``H``, steps per clip.
        rng: Random generator.

    Returns:
        ``ClipPairs`` with ``N = n_pairs``.

    Raises:
        ValueError: If no trajectory is long enough, ``n_pairs``/``clip_length`` < 1, or
            the trajectories mix compact and plain (or differently stacked) observations.
    """
    if n_pairs < 1 or clip_length < 1:
        raise ValueError(f"n_pairs and clip_length must be >= 1, got {n_pairs}, {clip_length}")
    usable = [t for t in trajectories if len(t) >= clip_length]
    if not usable:
        raise ValueError(f"no trajectory has at least {clip_length} steps")
    starts_per_traj = np.array([len(t) - clip_length + 1 for t in usable])
    flat = rng.integers(0, starts_per_traj.sum(), size=2 * n_pairs)
    traj_idx, offsets = locate_steps(starts_per_traj, flat)

    first = usable[0]
    stack = first.frame_stack
    if any(t.frame_stack != stack for t in usable):
        raise ValueError("trajectories mix compact and plain (or differently stacked) frames")
    # Compact trajectories: copy each clip's distinct frames, H + k - 1 of them.
    src = [t.frames if stack else t.obs for t in usable]
    span = clip_length + max(stack - 1, 0)
    obs = np.empty((2 * n_pairs, span, *src[0].shape[1:]), dtype=src[0].dtype)
    acts = np.empty((2 * n_pairs, clip_length, *first.acts.shape[1:]), dtype=first.acts.dtype)
    rews = np.empty((2 * n_pairs, clip_length), dtype=np.float32)
    absorbing = np.zeros((2 * n_pairs, clip_length), dtype=bool)
    for i, (ti, start) in enumerate(zip(traj_idx, offsets, strict=True)):
        t = usable[ti]
        obs[i] = src[ti][start : start + span]  # type: ignore[index]
        acts[i] = t.acts[start : start + clip_length]
        rews[i] = t.true_rewards[start : start + clip_length]
        if t.absorbing_steps:
            first_absorbing = len(t) - t.absorbing_steps - start
            absorbing[i, max(first_absorbing, 0) :] = True

    def pairs(x: np.ndarray) -> np.ndarray:
        return x.reshape(n_pairs, 2, *x.shape[1:])

    mask = pairs(absorbing) if any(t.absorbing_steps for t in usable) else None
    if stack:
        return ClipPairs.from_frames(pairs(obs), stack, pairs(acts), pairs(rews), mask)
    return ClipPairs(pairs(obs), pairs(acts), pairs(rews), None, mask)


def with_absorbing(trajectory: Trajectory, steps: int) -> Trajectory:
    """``trajectory`` followed by ``steps`` steps in the absorbing state, if it terminated.

    A terminated episode stays in an absorbing state with reward 0 for ever: clips that
    run past the termination compare a short life with a longer one, which is what tells
    a reward's zero (preferences between clips of equal length are blind to a constant
    added to every step). The absorbing steps repeat the terminal observation (the
    ``final_obs`` where recorded, else the last one) with zero actions; they are marked,
    and a reward model gives them 0 whatever their inputs. Trajectories that did not
    terminate, and plain ones with ``steps = 0``, come back unchanged.

    Args:
        trajectory: A finished episode (plain observations, not frame stacks).
        steps: Absorbing steps to append (``H - 1`` lets a clip of ``H`` steps start at
            any step of the episode).
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if not trajectory.terminated or steps == 0:
        return trajectory
    if trajectory.frames is not None or trajectory.absorbing_steps:
        raise ValueError("absorbing steps need a plain trajectory without any yet")
    last = trajectory.obs[-1] if trajectory.final_obs is None else trajectory.final_obs
    obs = np.concatenate([trajectory.obs, np.repeat(last[None], steps, axis=0)])
    acts = np.concatenate(
        [trajectory.acts, np.zeros((steps, *trajectory.acts.shape[1:]), trajectory.acts.dtype)]
    )
    rews = np.concatenate([trajectory.true_rewards, np.zeros(steps, np.float32)])
    return Trajectory(
        obs,
        acts,
        rews.astype(np.float32),
        final_obs=trajectory.final_obs,
        terminated=True,
        absorbing_steps=steps,
    )


class TrajectoryStore:
    """Keeps the most recent finished trajectories, about ``max_steps`` steps of them.

    Args:
        max_steps: The oldest trajectory is dropped while the others alone still hold at
            least ``max_steps`` steps, so the store holds the fewest newest trajectories
            that reach ``max_steps`` (it may exceed it by less than one trajectory).
    """

    def __init__(self, max_steps: int) -> None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        self.max_steps = max_steps
        self._trajs: deque[Trajectory] = deque()
        self._steps = 0
        self.total_added = 0

    def add(self, trajectories: Iterable[Trajectory]) -> None:
        """Append trajectories, dropping the oldest beyond ``max_steps``."""
        for t in trajectories:
            self._trajs.append(t)
            self._steps += len(t)
            self.total_added += 1
        while len(self._trajs) > 1 and self._steps - len(self._trajs[0]) >= self.max_steps:
            self._steps -= len(self._trajs.popleft())

    def recent(self, n: int | None = None) -> list[Trajectory]:
        """The ``n`` most recent trajectories (all if ``None``), oldest first."""
        items = list(self._trajs)
        if n is None:
            return items
        return items[len(items) - n :] if n > 0 else []

    @property
    def steps(self) -> int:
        """Steps currently held."""
        return self._steps

    def __len__(self) -> int:
        return len(self._trajs)
