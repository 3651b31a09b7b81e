"""Offline rewards on their own: held-out episodes, offsets, teacher calibration, Spearman."""

from __future__ import annotations

import numpy as np
import pytest
from offline_episodes import pendulum_episodes

from prefbench.envs.episodes import Episodes


@pytest.fixture(scope="module")
def episodes() -> Episodes:
    return pendulum_episodes()


def test_reward_offsets_and_held_out_episodes(episodes):
    from prefbench.agents.offline.rewards import split_episodes

    label, test = split_episodes(episodes.n_episodes, 0.25, 0)
    assert len(test) == 4 and not set(label) & set(test)
    assert sorted([*label, *test]) == list(range(episodes.n_episodes))
    out = _rewards_by_offset(episodes, 40, epochs=3, segment_length=20, test_episodes=0.25)
    mean, low = out["mean"].rewards, out["min"].rewards
    assert low.min() == 0 and abs(float(mean.mean())) < 0.2
    np.testing.assert_allclose(low - mean, -mean.min(), rtol=1e-5, atol=1e-5)
    # Labelled segments come from the labelled episodes only.
    obs = out["mean"].labels.pairs.obs.reshape(-1, 3)
    test_obs = episodes.select(test).obs
    assert not (obs[:, None, :] == test_obs[None, :, :]).all(-1).any()


def test_teachers_are_calibrated_on_the_labelled_episodes(episodes):
    """Thresholds and rationality follow the dataset's clip returns, not a unit scale."""
    from prefbench.agents.offline.rewards import OfflineRewardConfig, make_rewards, split_episodes
    from prefbench.envs.teachers import ReturnScale, make_teacher

    config = OfflineRewardConfig(epochs=1, segment_length=20, test_episodes=0.25)
    label, _ = split_episodes(episodes.n_episodes, 0.25, 0)
    scale = ReturnScale.from_trajectories(episodes.select(label).trajectories(), 20)
    labels = {}
    for name in ("oracle", "equal", "stochastic"):
        teacher = make_teacher(name, np.random.default_rng(0))
        result = make_rewards(episodes, config, teacher=teacher, label_budget=200, seed=0)
        assert teacher.scale == scale
        labels[name] = result.labels
    # The same pairs are drawn whatever the teacher (none abstains here).
    returns = labels["oracle"].pairs.true_rewards.sum(axis=2)
    np.testing.assert_array_equal(labels["equal"].pairs.true_rewards.sum(axis=2), returns)
    near = np.abs(returns[:, 0] - returns[:, 1]) < 0.1 * abs(scale.typical)
    assert 0 < near.sum() < len(near)
    np.testing.assert_array_equal(labels["equal"].prefs[near], 0.5)
    np.testing.assert_array_equal(labels["equal"].prefs[~near], labels["oracle"].prefs[~near])
    # At beta = 1 on the dataset's spread, some choices go against the returns.
    flipped = labels["stochastic"].prefs != labels["oracle"].prefs
    assert 0.05 < flipped.mean() < 0.5


def _rewards_by_offset(episodes, label_budget, **config):
    """Oracle-learned rewards of ``episodes`` under each ``reward.offset``."""
    from prefbench.agents.offline.rewards import OfflineRewardConfig, make_rewards
    from prefbench.envs.teachers import make_teacher

    return {
        offset: make_rewards(
            episodes,
            OfflineRewardConfig(offset=offset, **config),
            teacher=make_teacher("oracle", np.random.default_rng(0)),
            label_budget=label_budget,
            seed=0,
        )
        for offset in ("mean", "min")
    }


def test_spearman_of_the_true_reward_under_the_learned_offset():
    """Where episodes differ in length, the reward's zero reorders their returns."""
    from prefbench.agents.offline.rewards import (
        RM_RETURN_SPEARMAN_TRUE_REWARD,
        return_spearman,
    )

    lengths = np.array([60, 61, 62, 20, 21, 22])
    starts = np.concatenate([[0], np.cumsum(lengths)])
    # Long episodes earn little per step, short ones more, with one bad step (-3): the
    # short ones have the higher returns, until the lowest step reward is made 0.
    rewards = np.repeat([0.1, 0.101, 0.102, 0.5, 0.51, 0.52], lengths).astype(np.float32)
    rewards[starts[3]] = -3
    n = int(lengths.sum())
    term = np.zeros(n, dtype=bool)
    term[starts[1:] - 1] = True
    obs = np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)
    next_obs = np.concatenate([obs[1:], obs[:1]])
    episodes = Episodes(
        obs, np.zeros((n, 1), np.float32), rewards, next_obs, term, np.zeros(n, bool), starts
    )
    assert return_spearman(episodes, rewards) == pytest.approx(1.0)
    got = {
        offset: result.metrics[RM_RETURN_SPEARMAN_TRUE_REWARD]
        for offset, result in _rewards_by_offset(episodes, 20, epochs=2, segment_length=10).items()
    }
    assert got["min"] == pytest.approx(return_spearman(episodes, rewards + 3))
    assert got["min"] < 0  # the long episodes now rank first
    shifted = rewards.astype(np.float64) - rewards.astype(np.float64).mean()
    assert got["mean"] == pytest.approx(return_spearman(episodes, shifted)) and got["mean"] > 0
