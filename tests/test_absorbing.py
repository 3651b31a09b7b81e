"""Segments that run past a termination into the absorbing state (``reward.offset=absorbing``)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from prefbench.envs.data import ClipPairs, PreferenceDataset, Trajectory, load_dataset, save_dataset
from prefbench.envs.episodes import Episodes
from prefbench.envs.segments import sample_clip_pairs, with_absorbing


def _trajectory(n: int, terminated: bool, tag: float = 0.0) -> Trajectory:
    obs = np.stack([np.arange(n, dtype=np.float32), np.full(n, tag, np.float32)], axis=1)
    return Trajectory(
        obs,
        np.ones((n, 1), np.float32),
        np.arange(1, n + 1, dtype=np.float32),
        final_obs=np.array([-1.0, tag], np.float32),
        terminated=terminated,
    )


def test_absorbing_steps_follow_terminations_only():
    done = with_absorbing(_trajectory(3, True), 4)
    assert len(done) == 7 and done.absorbing_steps == 4
    np.testing.assert_array_equal(done.true_rewards, [1, 2, 3, 0, 0, 0, 0])
    np.testing.assert_array_equal(done.obs[3:, 0], -1)  # the terminal observation
    assert not done.acts[3:].any()
    cut = _trajectory(3, False)
    assert with_absorbing(cut, 4) is cut
    with pytest.raises(ValueError, match="absorbing"):
        with_absorbing(done, 2)
    with pytest.raises(ValueError, match="follow a termination"):
        Trajectory(cut.obs, cut.acts, cut.true_rewards, absorbing_steps=1)


def test_clips_mark_their_absorbing_steps():
    h = 4
    trajs = [with_absorbing(_trajectory(2, True, 0.0), h - 1), _trajectory(6, False, 1.0)]
    pairs = sample_clip_pairs(trajs, 400, h, np.random.default_rng(0))
    assert pairs.absorbing is not None
    clips = pairs.obs.reshape(-1, h, 2)
    absorbing = pairs.absorbing.reshape(-1, h)
    rewards = pairs.true_rewards.reshape(-1, h)
    short = clips[:, 0, 1] == 0
    # Every step of the 2-step episode starts a clip; the clip then runs into absorbing steps.
    assert set(clips[short, 0, 0]) == {0.0, 1.0}
    for c, a, r in zip(clips[short], absorbing[short], rewards[short], strict=True):
        taken = 2 - int(c[0, 0])
        np.testing.assert_array_equal(a, np.arange(h) >= taken)
        assert not r[a].any()
    assert not absorbing[~short].any()
    np.testing.assert_array_equal(pairs.steps_taken, (~pairs.absorbing).astype(np.float32))
    # Without absorbing steps the pairs carry no mask: the online loop is unchanged.
    assert sample_clip_pairs(trajs[1:], 5, h, np.random.default_rng(0)).absorbing is None


def test_absorbing_masks_survive_indexing_joining_and_files(tmp_path):
    h = 3
    padded = sample_clip_pairs(
        [with_absorbing(_trajectory(2, True), h - 1)], 6, h, np.random.default_rng(1)
    )
    plain = sample_clip_pairs([_trajectory(5, False)], 4, h, np.random.default_rng(2))
    joined = ClipPairs.concatenate([plain, padded])
    assert joined.absorbing is not None and not joined.absorbing[:4].any()
    np.testing.assert_array_equal(joined.absorbing[4:], padded.absorbing)
    np.testing.assert_array_equal(joined[np.array([5, 6])].absorbing, padded.absorbing[1:3])
    data = PreferenceDataset(joined, np.full(len(joined), 0.5, np.float32))
    save_dataset(data, tmp_path / "labels.npz")
    back = load_dataset(tmp_path / "labels.npz")
    np.testing.assert_array_equal(back.pairs.absorbing, joined.absorbing)
    save_dataset(PreferenceDataset(plain, np.ones(4, np.float32)), tmp_path / "plain.npz")
    assert load_dataset(tmp_path / "plain.npz").pairs.absorbing is None
    with pytest.raises(ValueError, match="true_rewards must be 0"):
        ClipPairs(padded.obs, padded.acts, padded.true_rewards + 1, None, padded.absorbing)
    zero = np.zeros_like(padded.true_rewards)
    for bad in (np.ones_like(padded.absorbing), padded.absorbing[..., ::-1]):
        # All absorbing, or absorbing before experience: no clip looks like that.
        with pytest.raises(ValueError, match="must end each clip"):
            ClipPairs(padded.obs, padded.acts, zero, None, bad.copy())


def test_a_reward_model_gives_absorbing_steps_nothing():
    from prefbench.agents.reward_model import RewardModel

    h = 5
    padded = sample_clip_pairs(
        [with_absorbing(_trajectory(3, True), h - 1), _trajectory(9, False, 1.0)],
        32,
        h,
        np.random.default_rng(3),
    )
    model = RewardModel((2,), 1, seed=0, device="cpu")
    model.fit(PreferenceDataset(padded, np.ones(32, np.float32)), epochs=2)
    net = model.net.eval()
    obs = torch.as_tensor(padded.obs).reshape(1, -1, h, 2).expand(3, -1, -1, -1)
    acts = torch.as_tensor(padded.acts).reshape(1, -1, h, 1).expand(3, -1, -1, -1)
    taken = torch.as_tensor(padded.steps_taken).reshape(1, -1, h).expand(3, -1, -1)
    with torch.no_grad():
        got = net.clip_returns(obs, acts, taken)
        steps = net.step_rewards(obs.reshape(3, -1, 2), acts.reshape(3, -1, 1)).reshape(3, -1, h)
        # What an absorbing step is given whatever its inputs: other inputs, same returns.
        moved = net.clip_returns(obs + 100 * (1 - taken).unsqueeze(-1), acts, taken)
    torch.testing.assert_close(got, (steps * taken).sum(dim=2))
    torch.testing.assert_close(moved, got)
    probs = model.member_preferences(padded)
    r = got.reshape(3, -1, 2)
    np.testing.assert_allclose(probs, torch.sigmoid(r[..., 0] - r[..., 1]).numpy(), rtol=1e-5)
    # An absorbing step's reward on the agent's scale: a raw output of 0 in every member.
    mean, std = net.out_mean.numpy(), net.out_std.numpy()
    assert model.normalized_zero() == pytest.approx(float(np.mean(-mean / std)), rel=1e-6)


def test_absorbing_labels_place_the_zero_that_equal_lengths_cannot():
    """Short episodes earn more per step, long ones more in all: only a known zero says so."""
    from prefbench.agents.offline.rewards import (
        RM_RETURN_SPEARMAN,
        RM_RETURN_SPEARMAN_TRUE_REWARD,
        RM_SEGMENTS_PAST_TERMINATION,
        OfflineRewardConfig,
        make_rewards,
        return_spearman,
    )
    from prefbench.envs.teachers import make_teacher

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, 40)
    rewards = np.concatenate(
        [rng.normal(1.5 - n / 50, 0.3, n) for n in lengths]  # 0.3-1.4 per step, all > 0
    ).astype(np.float32)
    n = int(lengths.sum())
    starts = np.concatenate([[0], np.cumsum(lengths)])
    term = np.zeros(n, dtype=bool)
    term[starts[1:] - 1] = True
    # The observation shows the reward: a model can learn it, up to where its zero lies.
    obs = np.stack([rewards, rng.normal(size=n).astype(np.float32)], axis=1)
    episodes = Episodes(
        obs,
        np.zeros((n, 1), np.float32),
        rewards,
        np.roll(obs, -1, axis=0),
        term,
        np.zeros(n, bool),
        starts,
    )

    def fit(episodes, offset, epochs=30):
        return make_rewards(
            episodes,
            OfflineRewardConfig(offset=offset, segment_length=10, epochs=epochs, test_episodes=0),
            teacher=make_teacher("oracle", np.random.default_rng(0)),
            label_budget=300,
            seed=0,
        )

    got = {offset: fit(episodes, offset) for offset in ("min", "absorbing")}
    absorbing = got["absorbing"]
    assert absorbing.metrics[RM_RETURN_SPEARMAN_TRUE_REWARD] == 1.0  # the true zero is kept
    share = absorbing.labels.pairs.absorbing.any(axis=2).mean()
    assert absorbing.metrics[RM_SEGMENTS_PAST_TERMINATION] == share > 0.2
    assert absorbing.shift == pytest.approx(absorbing.model.normalized_zero())
    # The learned zero lies near the true one: its rewards are positive where the true are.
    learned = absorbing.rewards
    assert (learned > 0).mean() > 0.95
    assert absorbing.metrics[RM_RETURN_SPEARMAN] > 0.95
    assert got["min"].metrics[RM_RETURN_SPEARMAN_TRUE_REWARD] < 0.9
    assert return_spearman(episodes, learned) == absorbing.metrics[RM_RETURN_SPEARMAN]

    # Episodes cut by a time limit: nothing places the zero, and the minimum's is kept.
    cut = dataclasses.replace(episodes, terminations=np.zeros(n, bool), truncations=term)
    unplaced, low = fit(cut, "absorbing", epochs=2), fit(cut, "min", epochs=2)
    assert unplaced.labels.pairs.absorbing is None
    np.testing.assert_array_equal(unplaced.rewards, low.rewards)
    assert unplaced.metrics == low.metrics
    assert unplaced.metrics[RM_SEGMENTS_PAST_TERMINATION] == 0
