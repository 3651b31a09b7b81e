import math

import numpy as np
import pytest

from prefbench.envs.data import ClipPairs, Trajectory
from prefbench.envs.registry import UnknownIdError
from prefbench.envs.teachers import (
    BPREF_TEACHERS,
    BPrefTeacher,
    CalibratedTeacher,
    ReturnScale,
    Teacher,
    TeacherConfig,
    make_teacher,
)


def pairs_from_rewards(rewards) -> ClipPairs:
    r = np.asarray(rewards, dtype=np.float32)
    assert r.ndim == 3 and r.shape[1] == 2
    zeros = np.zeros((*r.shape, 1), dtype=np.float32)
    return ClipPairs(zeros, zeros.copy(), r)


def repeated(rewards_a, rewards_b, n) -> ClipPairs:
    one = np.array([[rewards_a, rewards_b]], dtype=np.float32)
    return pairs_from_rewards(np.repeat(one, n, axis=0))


def teacher(name, seed=0, scale=None) -> BPrefTeacher:
    return BPrefTeacher(BPREF_TEACHERS[name], np.random.default_rng(seed), scale)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def test_bpref_table_values():
    assert set(BPREF_TEACHERS) == {"oracle", "stochastic", "mistake", "skip", "equal", "myopic"}
    assert BPREF_TEACHERS["oracle"] == TeacherConfig(math.inf, 1.0, 0.0, 0.0, 0.0)
    assert BPREF_TEACHERS["stochastic"].beta == 1.0
    assert BPREF_TEACHERS["mistake"].epsilon == 0.1
    assert BPREF_TEACHERS["skip"].skip_fraction == 0.1
    assert BPREF_TEACHERS["equal"].equal_fraction == 0.1
    assert BPREF_TEACHERS["myopic"].gamma == 0.9


def test_oracle_picks_larger_return_and_half_on_tie():
    pairs = pairs_from_rewards(
        [
            [[1.0, 2.0, 3.0], [0.0, 0.0, 5.0]],  # 6 vs 5 -> first
            [[0.0, 0.0, 0.0], [0.0, 0.0, 0.1]],  # 0 vs 0.1 -> second
            [[1.0, 1.0, 1.0], [3.0, 0.0, 0.0]],  # 3 vs 3 -> tie
            [[-5.0, 0.0, 0.0], [-6.0, 0.0, 0.0]],  # -5 vs -6 -> first
        ]
    )
    labels = teacher("oracle").label(pairs)
    np.testing.assert_array_equal(labels.prefs, np.array([1.0, 0.0, 0.5, 1.0], dtype=np.float32))
    assert labels.prefs.dtype == np.float32
    assert labels.valid.dtype == np.bool_
    assert labels.valid.all()


@pytest.mark.parametrize(("spread", "diff"), [(1.0, 0.5), (1.0, -1.0), (30.0, 30.0), (30.0, 60.0)])
def test_stochastic_frequency_matches_sigmoid_of_normalised_difference(spread, diff):
    n = 20_000
    pairs = repeated([diff, 0.0], [0.0, 0.0], n)
    t = teacher("stochastic", seed=1, scale=ReturnScale(typical=0.0, spread=spread))
    labels = t.label(pairs)
    assert labels.valid.all()
    assert set(np.unique(labels.prefs)) <= {0.0, 1.0}
    expected = sigmoid(1.0 * diff / spread)
    assert abs(labels.prefs.mean() - expected) < 0.02


def test_stochastic_spread_normalisation_matters():
    n = 20_000
    pairs = repeated([30.0], [0.0], n)
    normalised = teacher("stochastic", seed=2, scale=ReturnScale(typical=0.0, spread=30.0))
    freq = normalised.label(pairs).prefs.mean()
    assert abs(freq - 0.7311) < 0.02
    assert freq < 0.9  # raw sigmoid(30) would be ~1
    raw = teacher("stochastic", seed=2, scale=ReturnScale(typical=0.0, spread=1.0))
    assert raw.label(pairs).prefs.mean() > 0.999


def test_mistake_flip_rate_is_epsilon():
    n = 20_000
    pairs = repeated([2.0, 0.0], [0.0, 0.0], n)  # the right answer is always 1
    labels = teacher("mistake", seed=3).label(pairs)
    assert labels.valid.all()
    assert set(np.unique(labels.prefs)) == {0.0, 1.0}
    flip_rate = float((labels.prefs == 0.0).mean())
    assert abs(flip_rate - 0.1) < 0.01
    # Ties stay at 0.5 when flipped (1 - 0.5 = 0.5).
    ties = teacher("mistake", seed=3).label(repeated([1.0], [1.0], 1000))
    assert np.all(ties.prefs == 0.5)


def test_skip_abstains_below_threshold():
    t = teacher("skip")
    t.calibrate(ReturnScale(typical=20.0, spread=5.0))
    assert t.delta_skip == pytest.approx(2.0)
    pairs = pairs_from_rewards(
        [
            [[1.0, 0.5], [0.5, 0.5]],  # max 1.5 < 2 -> skip
            [[1.0, 1.0], [0.0, 0.0]],  # max 2.0, not < 2 -> answer 1
            [[0.0, 0.0], [1.0, 1.5]],  # max 2.5 -> answer 0
            [[-3.0, 0.0], [1.9, 0.0]],  # max 1.9 -> skip
            [[10.0, 0.0], [-10.0, 0.0]],  # max 10 -> answer 1
        ]
    )
    labels = t.label(pairs)
    np.testing.assert_array_equal(labels.valid, [False, True, True, False, True])
    np.testing.assert_array_equal(labels.prefs[labels.valid], [1.0, 0.0, 1.0])
    returns = pairs.true_rewards.sum(axis=2)
    np.testing.assert_array_equal(labels.valid, returns.max(axis=1) >= 0.1 * 20.0)


def test_equal_is_half_exactly_within_threshold():
    t = teacher("equal")
    t.calibrate(ReturnScale(typical=-50.0, spread=5.0))  # |typical| is what counts
    assert t.delta_equal == pytest.approx(5.0)
    pairs = pairs_from_rewards(
        [
            [[3.0, 1.0], [0.0, 0.0]],  # |4| < 5 -> 0.5
            [[5.0, 0.0], [0.0, 0.0]],  # |5| not < 5 -> 1
            [[0.0, 0.0], [4.9, 0.0]],  # 4.9 -> 0.5
            [[0.0, 0.0], [3.0, 3.0]],  # 6 -> 0
            [[-20.0, 0.0], [-16.0, 0.0]],  # 4 -> 0.5
        ]
    )
    labels = t.label(pairs)
    assert labels.valid.all()
    np.testing.assert_array_equal(labels.prefs, np.array([0.5, 1.0, 0.5, 0.0, 0.5], np.float32))


def test_myopic_weights_later_steps_more():
    gamma = 0.9
    first = np.array([10.0, 0.0, 0.0, 0.0])
    second = np.array([0.0, 0.0, 0.0, 9.5])
    h = len(first)
    weights = np.array([gamma ** (h - 1 - t) for t in range(h)])
    assert weights[0] == pytest.approx(0.729) and weights[-1] == 1.0
    disc_first = float(first @ weights)  # 7.29
    disc_second = float(second @ weights)  # 9.5
    assert first.sum() > second.sum()
    assert disc_first == pytest.approx(7.29) and disc_second == pytest.approx(9.5)
    pairs = pairs_from_rewards([[first, second], [second, first]])
    myopic = teacher("myopic").label(pairs)
    np.testing.assert_array_equal(myopic.prefs, [0.0, 1.0])
    oracle = teacher("oracle").label(pairs)
    np.testing.assert_array_equal(oracle.prefs, [1.0, 0.0])


def test_thresholds_do_not_compound_on_recalibration():
    for name, attr in (("skip", "delta_skip"), ("equal", "delta_equal")):
        t = teacher(name)
        scale = ReturnScale(typical=40.0, spread=3.0)
        for _ in range(3):
            t.calibrate(scale)
            assert getattr(t, attr) == pytest.approx(0.1 * 40.0)
    t = teacher("skip")
    t.calibrate(ReturnScale(typical=40.0, spread=3.0))
    t.calibrate(ReturnScale(typical=10.0, spread=3.0))
    assert t.delta_skip == pytest.approx(1.0)
    # The threshold is what labels actually use after repeated calibration.
    for _ in range(3):
        t.calibrate(ReturnScale(typical=10.0, spread=3.0))
    labels = t.label(pairs_from_rewards([[[0.95], [0.0]], [[1.05], [0.0]]]))
    np.testing.assert_array_equal(labels.valid, [False, True])


def test_return_scale_from_trajectories():
    def traj(rewards):
        r = np.asarray(rewards, dtype=np.float32)
        return Trajectory(np.zeros((len(r), 3)), np.zeros((len(r), 1)), r)

    t1 = traj([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])  # return 21
    t2 = traj([0.0, 0.0, 1.0, 1.0, 2.0, 2.0])  # return 6
    scale = ReturnScale.from_trajectories([t1, t2], clip_length=2)
    mean_return, length = (21.0 + 6.0) / 2, 6
    assert scale.typical == pytest.approx(mean_return * 2 / length)  # 4.5
    clip_returns = [3.0, 7.0, 11.0, 0.0, 2.0, 4.0]
    assert scale.spread == pytest.approx(float(np.std(clip_returns)), rel=1e-6)

    # Empty trajectories are ignored; constant clips fall back to |typical|.
    flat = ReturnScale.from_trajectories([traj([]), traj([2.0] * 4)], clip_length=2)
    assert flat.typical == pytest.approx(4.0)
    assert flat.spread == pytest.approx(4.0)
    with pytest.raises(ValueError):
        ReturnScale.from_trajectories([traj([])], clip_length=2)


def test_return_scale_rejects_bad_values():
    with pytest.raises(ValueError):
        ReturnScale(typical=1.0, spread=0.0)
    with pytest.raises(ValueError):
        ReturnScale(typical=math.nan, spread=1.0)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"epsilon": 2.0},
        {"gamma": 0.0},
        {"beta": 0.0},
        {"epsilon": -0.1},
        {"gamma": 1.5},
        {"skip_fraction": -1.0},
        {"equal_fraction": math.inf},
    ],
)
def test_teacher_config_rejects_invalid(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        TeacherConfig(**kwargs)


def test_make_teacher_unknown_id_names_choices():
    with pytest.raises(UnknownIdError) as info:
        make_teacher("nope", np.random.default_rng(0))
    msg = str(info.value)
    assert "'nope'" in msg
    for name in BPREF_TEACHERS:
        assert name in msg


def test_make_teacher_builds_every_bpref_teacher():
    for name, cfg in BPREF_TEACHERS.items():
        t = make_teacher(name, np.random.default_rng(0))
        assert isinstance(t, BPrefTeacher)
        assert isinstance(t, Teacher) and isinstance(t, CalibratedTeacher)
        assert t.config == cfg


@pytest.mark.parametrize("name", sorted(BPREF_TEACHERS))
def test_same_seed_gives_identical_labels(name):
    rng = np.random.default_rng(123)
    pairs = pairs_from_rewards(rng.normal(size=(500, 2, 4)))
    scale = ReturnScale(typical=1.0, spread=2.0)
    a = make_teacher(name, np.random.default_rng(7))
    b = make_teacher(name, np.random.default_rng(7))
    a.calibrate(scale)
    b.calibrate(scale)
    la, lb = a.label(pairs), b.label(pairs)
    np.testing.assert_array_equal(la.prefs, lb.prefs)
    np.testing.assert_array_equal(la.valid, lb.valid)
    if name in ("stochastic", "mistake"):
        c = make_teacher(name, np.random.default_rng(8))
        c.calibrate(scale)
        assert not np.array_equal(c.label(pairs).prefs, la.prefs)
