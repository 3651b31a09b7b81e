import numpy as np
import pytest

from prefbench.envs.data import (
    CheckpointError,
    ClipPairs,
    Labels,
    PreferenceDataset,
    Trajectory,
    load_dataset,
    save_dataset,
)
from prefbench.envs.segments import TrajectoryStore, sample_clip_pairs


def clip_pairs(n, h=3, obs_dim=2, act_dim=1, seed=0) -> ClipPairs:
    rng = np.random.default_rng(seed)
    return ClipPairs(
        rng.normal(size=(n, 2, h, obs_dim)).astype(np.float32),
        rng.normal(size=(n, 2, h, act_dim)).astype(np.float32),
        rng.normal(size=(n, 2, h)).astype(np.float32),
    )


def dataset(n, seed=0) -> PreferenceDataset:
    rng = np.random.default_rng(seed)
    prefs = rng.choice([0.0, 0.5, 1.0], n).astype(np.float32)
    return PreferenceDataset(clip_pairs(n, seed=seed), prefs)


def tagged_trajectory(tag: int, length: int) -> Trajectory:
    """obs[t] = (tag, t); acts[t] = 10 * t + tag; reward = 100 * tag + t."""
    t = np.arange(length)
    obs = np.stack([np.full(length, tag), t], axis=1).astype(np.float32)
    acts = (10 * t + tag).astype(np.float32)[:, None]
    return Trajectory(obs, acts, (100 * tag + t).astype(np.float32))


# ----------------------------------------------------------------- validation


def test_trajectory_validation():
    t = Trajectory(np.zeros((4, 3)), np.zeros((4, 1)), np.arange(4, dtype=np.float32))
    assert len(t) == 4 and t.true_return == 6.0
    with pytest.raises(ValueError):
        Trajectory(np.zeros((4, 3)), np.zeros((3, 1)), np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        Trajectory(np.zeros((4, 3)), np.zeros((4, 1)), np.zeros(5, np.float32))
    with pytest.raises(ValueError):
        Trajectory(np.zeros((4, 3)), np.zeros((4, 1)), np.zeros((4, 1), np.float32))


def test_clip_pairs_validation():
    ok = clip_pairs(5, h=3)
    assert len(ok) == 5 and ok.clip_length == 3
    with pytest.raises(ValueError):  # not a pair axis of 2
        ClipPairs(np.zeros((5, 3, 3, 2)), np.zeros((5, 3, 3, 1)), np.zeros((5, 3, 3)))
    with pytest.raises(ValueError):  # too few dims
        ClipPairs(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError):  # acts H differs
        ClipPairs(np.zeros((5, 2, 3, 2)), np.zeros((5, 2, 4, 1)), np.zeros((5, 2, 3)))
    with pytest.raises(ValueError):  # acts N differs
        ClipPairs(np.zeros((5, 2, 3, 2)), np.zeros((4, 2, 3, 1)), np.zeros((5, 2, 3)))
    with pytest.raises(ValueError):  # rewards shape
        ClipPairs(np.zeros((5, 2, 3, 2)), np.zeros((5, 2, 3, 1)), np.zeros((5, 2, 4)))
    with pytest.raises(ValueError):
        ClipPairs(np.zeros((5, 2, 3, 2)), np.zeros((5, 2, 3, 1)), np.zeros((5, 2, 3, 1)))


def test_clip_pairs_indexing_and_concatenate():
    a, b = clip_pairs(3, seed=0), clip_pairs(2, seed=1)
    both = ClipPairs.concatenate([a, b])
    assert len(both) == 5
    np.testing.assert_array_equal(both.obs[3:], b.obs)
    sub = both[np.array([4, 0])]
    np.testing.assert_array_equal(sub.true_rewards[0], b.true_rewards[1])
    np.testing.assert_array_equal(sub.acts[1], a.acts[0])
    with pytest.raises(ValueError):
        ClipPairs.concatenate([])


def test_labels_validation():
    Labels(np.array([0.0, 1.0, 0.5], np.float32), np.array([True, True, False]))
    with pytest.raises(ValueError):
        Labels(np.zeros((2, 2), np.float32), np.ones((2, 2), bool))
    with pytest.raises(ValueError):
        Labels(np.zeros(3, np.float32), np.ones(2, bool))
    with pytest.raises(ValueError):
        Labels(np.zeros(3, np.float32), np.ones(3, int))
    with pytest.raises(ValueError):
        Labels(np.array([0.0, 1.5], np.float32), np.array([True, True]))
    # Out-of-range values are allowed where the teacher abstained.
    Labels(np.array([0.0, 7.0], np.float32), np.array([True, False]))


def test_preference_dataset_validation():
    with pytest.raises(ValueError):
        PreferenceDataset(clip_pairs(4), np.zeros(3, np.float32))
    with pytest.raises(ValueError):
        PreferenceDataset.from_labels(
            clip_pairs(4), Labels(np.zeros(3, np.float32), np.ones(3, bool))
        )


def test_from_labels_drops_abstentions():
    pairs = clip_pairs(5)
    labels = Labels(
        np.array([1.0, 0.5, 0.0, 0.5, 1.0], np.float32), np.array([True, False, True, True, False])
    )
    data = PreferenceDataset.from_labels(pairs, labels)
    assert len(data) == 3
    np.testing.assert_array_equal(data.prefs, [1.0, 0.0, 0.5])
    assert data.prefs.dtype == np.float32
    np.testing.assert_array_equal(data.pairs.obs, pairs.obs[[0, 2, 3]])
    np.testing.assert_array_equal(data.pairs.true_rewards, pairs.true_rewards[[0, 2, 3]])


def test_extend_and_recent():
    a, b = dataset(4, seed=0), dataset(3, seed=1)
    both = a.extend(b)
    assert len(both) == 7
    np.testing.assert_array_equal(both.prefs, np.concatenate([a.prefs, b.prefs]))
    np.testing.assert_array_equal(both.pairs.obs[4:], b.pairs.obs)
    none_valid = Labels(np.zeros(2, np.float32), np.zeros(2, bool))
    empty = PreferenceDataset.from_labels(clip_pairs(2), none_valid)
    assert len(empty) == 0
    assert empty.extend(a) is a
    assert a.extend(empty) is a

    last = both.recent(2)
    assert len(last) == 2
    np.testing.assert_array_equal(last.prefs, b.prefs[1:])
    np.testing.assert_array_equal(last.pairs.obs, b.pairs.obs[1:])
    assert both.recent(7) is both
    assert both.recent(100) is both


def test_recent_zero_is_empty():
    assert len(dataset(4).recent(0)) == 0


# -------------------------------------------------------------------- save/load


def test_dataset_round_trip(tmp_path):
    data = dataset(6, seed=3)
    path = tmp_path / "labels.npz"
    save_dataset(data, path)
    loaded = load_dataset(path)
    for name in ("obs", "acts", "true_rewards"):
        np.testing.assert_array_equal(getattr(loaded.pairs, name), getattr(data.pairs, name))
        assert getattr(loaded.pairs, name).dtype == getattr(data.pairs, name).dtype
    np.testing.assert_array_equal(loaded.prefs, data.prefs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.npz"]


def test_load_dataset_rejects_bad_files(tmp_path):
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, obs=np.zeros((1, 2, 3, 1)), prefs=np.zeros(1))
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00\x01not a zip file at all" * 20)
    wrong_format = tmp_path / "wrong.npz"
    np.savez(wrong_format, format=np.array("other.format.v1"), obs=np.zeros((1, 2, 3, 1)))
    inconsistent = tmp_path / "inconsistent.npz"
    np.savez(
        inconsistent,
        format=np.array("prefbench.preference_dataset.v1"),
        obs=np.zeros((2, 2, 3, 1)),
        acts=np.zeros((2, 2, 3, 1)),
        true_rewards=np.zeros((2, 2, 3)),
        prefs=np.zeros(5),
    )
    missing_key = tmp_path / "missing_key.npz"
    np.savez(
        missing_key, format=np.array("prefbench.preference_dataset.v1"), obs=np.zeros((2, 2, 3, 1))
    )
    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    for path in (
        foreign,
        garbage,
        wrong_format,
        inconsistent,
        missing_key,
        npy,
        tmp_path / "missing.npz",
        tmp_path,
    ):
        with pytest.raises(CheckpointError):
            load_dataset(path)


# ----------------------------------------------------------------- clip pairs


def assert_contiguous_slices(pairs: ClipPairs, sources: dict[int, Trajectory]) -> None:
    h = pairs.clip_length
    for obs, acts, rews in zip(
        pairs.obs.reshape(-1, h, 2),
        pairs.acts.reshape(-1, h, 1),
        pairs.true_rewards.reshape(-1, h),
        strict=True,
    ):
        tag, start = int(obs[0, 0]), int(obs[0, 1])
        src = sources[tag]
        assert start + h <= len(src), "clip crosses the end of its trajectory"
        np.testing.assert_array_equal(obs, src.obs[start : start + h])
        np.testing.assert_array_equal(acts, src.acts[start : start + h])
        np.testing.assert_array_equal(rews, src.true_rewards[start : start + h])


def test_sample_clip_pairs_are_slices_of_sources():
    trajs = [
        tagged_trajectory(0, 12),
        tagged_trajectory(1, 4),
        tagged_trajectory(2, 7),
        tagged_trajectory(3, 3),
    ]
    pairs = sample_clip_pairs(trajs, 300, 4, np.random.default_rng(0))
    assert pairs.obs.shape == (300, 2, 4, 2)
    assert pairs.acts.shape == (300, 2, 4, 1)
    assert pairs.true_rewards.shape == (300, 2, 4)
    assert pairs.true_rewards.dtype == np.float32
    assert_contiguous_slices(pairs, {i: t for i, t in enumerate(trajs)})
    tags = pairs.obs[:, :, 0, 0].astype(int)
    starts = pairs.obs[:, :, 0, 1].astype(int)
    assert 3 not in tags  # shorter than the clip: ignored
    assert set(np.unique(tags)) == {0, 1, 2}
    # Every valid start position of a long trajectory shows up (uniform over positions).
    assert set(starts[tags == 0]) == set(range(12 - 4 + 1))
    assert set(starts[tags == 1]) == {0}
    # Uniform over all 9 + 1 + 4 = 14 start positions.
    assert abs((tags == 0).mean() - 9 / 14) < 0.1


def test_sample_clip_pairs_whole_trajectory_and_reproducible():
    trajs = [tagged_trajectory(5, 6), tagged_trajectory(6, 6)]
    a = sample_clip_pairs(trajs, 20, 6, np.random.default_rng(42))
    b = sample_clip_pairs(trajs, 20, 6, np.random.default_rng(42))
    c = sample_clip_pairs(trajs, 20, 6, np.random.default_rng(43))
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.true_rewards, b.true_rewards)
    assert not np.array_equal(a.obs, c.obs)
    assert np.all(a.obs[:, :, 0, 1] == 0)  # the only start position
    assert_contiguous_slices(a, {5: trajs[0], 6: trajs[1]})


def test_sample_clip_pairs_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError):
        sample_clip_pairs([tagged_trajectory(0, 3), tagged_trajectory(1, 2)], 5, 4, rng)
    with pytest.raises(ValueError):
        sample_clip_pairs([], 5, 4, rng)
    with pytest.raises(ValueError):
        sample_clip_pairs([tagged_trajectory(0, 10)], 0, 4, rng)
    with pytest.raises(ValueError):
        sample_clip_pairs([tagged_trajectory(0, 10)], 3, 0, rng)


# ------------------------------------------------------------- trajectory store


def test_trajectory_store_keeps_most_recent():
    store = TrajectoryStore(max_steps=25)
    store.add([tagged_trajectory(i, 10) for i in range(2)])
    assert len(store) == 2 and store.steps == 20
    store.add([tagged_trajectory(i, 10) for i in range(2, 6)])
    assert store.total_added == 6
    kept = [int(t.obs[0, 0]) for t in store.recent()]
    assert kept == sorted(kept) and kept[-1] == 5  # oldest first, newest kept
    assert kept == list(range(6 - len(kept), 6))  # a contiguous run of the newest
    assert store.steps == 10 * len(kept)
    # Dropping one more (oldest) trajectory would fall below max_steps.
    assert store.steps - 10 < store.max_steps <= store.steps
    assert [int(t.obs[0, 0]) for t in store.recent(2)] == [4, 5]


def test_trajectory_store_never_drops_the_newest():
    store = TrajectoryStore(max_steps=5)
    store.add([tagged_trajectory(0, 3)])
    store.add([tagged_trajectory(1, 50)])
    assert [int(t.obs[0, 0]) for t in store.recent()] == [1]
    assert store.steps == 50
    with pytest.raises(ValueError):
        TrajectoryStore(0)


def test_trajectory_store_recent_zero_is_empty():
    store = TrajectoryStore(max_steps=100)
    store.add([tagged_trajectory(i, 10) for i in range(3)])
    assert store.recent(0) == []
