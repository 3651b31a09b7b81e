"""Fixed datasets of whole episodes: the data an offline learner trains on.

Shapes use these letters: ``N`` steps in all, ``E`` episodes, ``O...`` the observation
shape, ``A...`` the action shape. Episode ``e`` is the run of steps
``starts[e]:starts[e + 1]``; every array with a leading ``N`` is aligned step by step.

An episode ends in one of two ways, and offline learners must tell them apart:

* **terminated** (the last step's ``terminations`` is True): the environment reached a
  terminal state (Hopper fell). Nothing follows, so value targets do not bootstrap from
  ``next_obs`` and the return-to-go of the last step is its own reward.
* **truncated** (``truncations`` True): a time limit or the end of recording cut the
  episode; the state still had a future. Returns-to-go are those of the recorded part.

No step before an episode's last may carry either flag; exactly one of them is set on
each last step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from prefbench.envs.data import CheckpointError, Trajectory
from prefbench.envs.files import atomic_path


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class Episodes:
    """``E`` episodes of one environment, their steps concatenated.

    Attributes:
        obs: ``(N, O...)`` float32 observation before each action.
        acts: ``(N, A...)`` float32 action taken.
        rewards: ``(N,)`` float32 reward of each step: the environment's as recorded, or a
            learned one in a relabelled copy (:meth:`with_rewards`).
        next_obs: ``(N, O...)`` float32 observation after each action: the next step's
            ``obs`` within an episode, the final observation on its last step.
        terminations: ``(N,)`` bool, True on the last step of a terminated episode.
        truncations: ``(N,)`` bool, True on the last step of a truncated episode.
        starts: ``(E + 1,)`` int64 step offsets of the episodes, ``starts[0] == 0`` and
            ``starts[E] == N``, strictly increasing (no empty episodes).
    """

    obs: np.ndarray
    acts: np.ndarray
    rewards: np.ndarray
    next_obs: np.ndarray
    terminations: np.ndarray
    truncations: np.ndarray
    starts: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.obs)
        _check(n > 0, "a dataset needs at least one step")
        for name in ("acts", "rewards", "next_obs", "terminations", "truncations"):
            _check(
                len(getattr(self, name)) == n,
                f"{name} has {len(getattr(self, name))} steps, obs has {n}",
            )
        _check(self.next_obs.shape == self.obs.shape, "next_obs must have the shape of obs")
        _check(self.rewards.shape == (n,), f"rewards must be ({n},), got {self.rewards.shape}")
        _check(bool(np.isfinite(self.rewards).all()), "rewards must be finite")
        for name in ("terminations", "truncations"):
            _check(getattr(self, name).dtype == np.bool_, f"{name} must be a bool array")
        s = self.starts
        _check(
            s.ndim == 1
            and len(s) >= 2
            and s[0] == 0
            and s[-1] == n
            and bool(np.all(np.diff(s) > 0)),
            f"starts must rise strictly from 0 to {n}",
        )
        last = np.zeros(n, dtype=bool)
        last[s[1:] - 1] = True
        _check(
            np.array_equal(self.next_obs[:-1][~last[:-1]], self.obs[1:][~last[:-1]]),
            "within an episode next_obs must be the following step's obs",
        )
        ends = self.terminations | self.truncations
        _check(not bool((ends & ~last).any()), "an episode flag is set before an episode's end")
        _check(
            bool((ends[last]).all()) and not bool((self.terminations & self.truncations).any()),
            "each episode's last step must be terminated or truncated, not both",
        )

    # ------------------------------------------------------------------ views
    def __len__(self) -> int:
        return len(self.obs)

    @property
    def n_episodes(self) -> int:
        """``E``."""
        return len(self.starts) - 1

    @property
    def lengths(self) -> np.ndarray:
        """``(E,)`` steps per episode."""
        return np.diff(self.starts)

    @property
    def episode_of_step(self) -> np.ndarray:
        """``(N,)`` the episode each step belongs to."""
        return np.repeat(np.arange(self.n_episodes), self.lengths)

    @property
    def timesteps(self) -> np.ndarray:
        """``(N,)`` each step's index within its episode (0 at the first step)."""
        return np.arange(len(self)) - np.repeat(self.starts[:-1], self.lengths)

    @property
    def terminated(self) -> np.ndarray:
        """``(E,)`` bool: the episode ended in a terminal state."""
        return self.terminations[self.starts[1:] - 1]

    def returns(self, rewards: np.ndarray | None = None) -> np.ndarray:
        """``(E,)`` undiscounted episode sums of ``rewards`` (default: :attr:`rewards`)."""
        r = self._rewards(rewards)
        return np.add.reduceat(r.astype(np.float64), self.starts[:-1]).astype(np.float32)

    def returns_to_go(self, rewards: np.ndarray | None = None, gamma: float = 1.0) -> np.ndarray:
        """``(N,)`` discounted sum of the rewards from each step to its episode's end.

        The last step of an episode gets its own reward, terminated or truncated: the
        return of a truncated episode's unrecorded future is unknown, not zero, but the
        recorded data cannot say more (Decision Transformer's convention).
        """
        _check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
        r = self._rewards(rewards).astype(np.float64)
        out = np.empty_like(r)
        for a, b in zip(self.starts[:-1], self.starts[1:], strict=True):
            acc = 0.0
            for t in range(b - 1, a - 1, -1):
                acc = r[t] + gamma * acc
                out[t] = acc
        return out.astype(np.float32)

    def _rewards(self, rewards: np.ndarray | None) -> np.ndarray:
        if rewards is None:
            return self.rewards
        _check(
            rewards.shape == (len(self),), f"rewards must be ({len(self)},), got {rewards.shape}"
        )
        return rewards

    # ------------------------------------------------------------ new datasets
    def with_rewards(self, rewards: np.ndarray) -> Episodes:
        """The same steps with ``(N,)`` other rewards (a learned reward's relabelling)."""
        return replace(self, rewards=np.asarray(self._rewards(rewards), dtype=np.float32))

    def select(self, episodes: Sequence[int] | np.ndarray) -> Episodes:
        """The episodes with these indices, in this order."""
        idx = np.asarray(episodes, dtype=np.int64)
        _check(idx.ndim == 1 and len(idx) > 0, "select at least one episode")
        _check(
            bool(((idx >= 0) & (idx < self.n_episodes)).all()),
            f"episode index out of range 0..{self.n_episodes - 1}",
        )
        steps = np.concatenate([np.arange(self.starts[e], self.starts[e + 1]) for e in idx])
        lengths = self.lengths[idx]
        return Episodes(
            self.obs[steps],
            self.acts[steps],
            self.rewards[steps],
            self.next_obs[steps],
            self.terminations[steps],
            self.truncations[steps],
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        )

    @staticmethod
    def concatenate(parts: Sequence[Episodes]) -> Episodes:
        """The episodes of ``parts``, one after the other."""
        _check(len(parts) > 0, "nothing to concatenate")
        offsets = np.cumsum([0] + [len(p) for p in parts[:-1]])
        starts = np.concatenate(
            [[0]] + [p.starts[1:] + o for p, o in zip(parts, offsets, strict=True)]
        )
        return Episodes(
            *(
                np.concatenate([getattr(p, k) for p in parts])
                for k in ("obs", "acts", "rewards", "next_obs", "terminations", "truncations")
            ),
            starts.astype(np.int64),
        )

    @staticmethod
    def from_trajectories(trajectories: Sequence[Trajectory]) -> Episodes:
        """Episodes from recorded trajectories that carry ``final_obs`` and ``terminated``.

        A trajectory recorded without a final observation (a random rollout) cannot
        give the last step's ``next_obs``; it is refused.
        """
        _check(len(trajectories) > 0, "no trajectories")
        obs, next_obs, term, trunc = [], [], [], []
        for t in trajectories:
            _check(t.final_obs is not None, "a trajectory without final_obs has no last next_obs")
            _check(t.frames is None, "frame-stacked trajectories are not supported offline")
            obs.append(t.obs)
            next_obs.append(np.concatenate([t.obs[1:], t.final_obs[None]]))
            end = np.zeros(len(t), dtype=bool)
            end[-1] = True
            term.append(end & t.terminated)
            trunc.append(end & (not t.terminated))
        lengths = [len(t) for t in trajectories]
        return Episodes(
            np.concatenate(obs).astype(np.float32),
            np.concatenate([t.acts for t in trajectories]).astype(np.float32),
            np.concatenate([t.true_rewards for t in trajectories]).astype(np.float32),
            np.concatenate(next_obs).astype(np.float32),
            np.concatenate(term),
            np.concatenate(trunc),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        )

    def trajectories(self) -> list[Trajectory]:
        """One :class:`Trajectory` per episode (views, no copies), for clip selection.

        Their ``true_rewards`` are this dataset's :attr:`rewards`: the teacher labels by
        them, so label from the dataset as recorded, not a relabelled copy.
        """
        out = []
        for e, (a, b) in enumerate(zip(self.starts[:-1], self.starts[1:], strict=True)):
            out.append(
                Trajectory(
                    self.obs[a:b],
                    self.acts[a:b],
                    self.rewards[a:b],
                    final_obs=self.next_obs[b - 1],
                    terminated=bool(self.terminated[e]),
                )
            )
        return out


#: Format tag of :func:`save_episodes` files.
EPISODES_FORMAT = "prefbench.episodes.v1"
_FIELDS = ("obs", "acts", "rewards", "next_obs", "terminations", "truncations", "starts")


def save_episodes(episodes: Episodes, path: str | Path) -> None:
    """Write ``episodes`` to ``path`` (``.npz``, no pickles), atomically; makes its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, format=np.array(EPISODES_FORMAT), **{k: getattr(episodes, k) for k in _FIELDS})


def load_episodes(path: str | Path) -> Episodes:
    """Read what :func:`save_episodes` wrote.

    Raises:
        CheckpointError: If the file is missing, unreadable, of another format or inconsistent.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f.files or str(f["format"]) != EPISODES_FORMAT:
                raise CheckpointError(f"{path} is not a prefbench episodes file")
            arrays = {k: f[k] for k in _FIELDS}
        return Episodes(**arrays)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - zip/npy/shape errors all mean a bad file
        raise CheckpointError(f"{path} is not a readable episodes file ({exc})") from exc
