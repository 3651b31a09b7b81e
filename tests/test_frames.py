"""Compact frame storage: frames kept once, stacks as views, end to end through the loop."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from prefbench.agents.encoders import SeededDropout
from prefbench.agents.reward_checkpoint import load_reward_model, save_reward_model
from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.agents.reward_wrapper import RewardVecEnv
from prefbench.envs.data import (
    ClipPairs,
    PreferenceDataset,
    Trajectory,
    load_dataset,
    save_dataset,
    stacked_view,
)
from prefbench.envs.rollout import EpisodeRecorder, rollout
from prefbench.envs.segments import sample_clip_pairs


class CounterFrames(gym.Env):
    """8x8 uint8 frames; frame t of an episode is filled with (10 * episode + t) % 256."""

    observation_space = gym.spaces.Box(0, 255, (8, 8), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def __init__(self, length: int = 12) -> None:
        self.length = length
        self.episode = -1
        self.t = 0

    def _frame(self) -> np.ndarray:
        return np.full((8, 8), (10 * self.episode + self.t) % 256, dtype=np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode += 1
        self.t = 0
        return self._frame(), {}

    def step(self, action):
        self.t += 1
        return self._frame(), float(action), self.t >= self.length, False, {}


def stacked_env(length: int = 12) -> gym.Env:
    return gym.wrappers.FrameStackObservation(CounterFrames(length), 4)


def explicit_stacks(frames: np.ndarray, k: int) -> np.ndarray:
    return np.stack([frames[t : t + k] for t in range(len(frames) - k + 1)])


def compact_trajectory(length: int, seed: int = 0, k: int = 4) -> Trajectory:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(length + k - 1, 6, 6), dtype=np.uint8)
    acts = rng.integers(0, 3, size=length)
    return Trajectory.from_frames(frames, k, acts, rng.normal(size=length).astype(np.float32))


def test_stacked_view_copies_nothing_and_matches_explicit_stacks():
    frames = np.arange(7 * 2 * 2, dtype=np.uint8).reshape(7, 2, 2)
    view = stacked_view(frames, 4, 0)
    assert view.shape == (4, 4, 2, 2)
    np.testing.assert_array_equal(view, explicit_stacks(frames, 4))
    assert np.shares_memory(view, frames) and not view.flags.writeable
    with pytest.raises(ValueError, match="cannot stack"):
        stacked_view(frames, 8, 0)


def test_recorder_keeps_each_frame_once_and_reproduces_the_observations():
    env = stacked_env()
    obs, _ = env.reset(seed=0)
    recorder, seen = EpisodeRecorder(frame_stack=4), []
    for t in range(10):
        seen.append(obs)
        recorder.add(obs, np.int64(t % 3), float(t))
        obs, *_ = env.step(t % 3)
    traj = recorder.finish()
    assert traj.frame_stack == 4 and traj.frames.shape == (10 + 3, 8, 8)
    np.testing.assert_array_equal(traj.obs, np.stack(seen))
    np.testing.assert_array_equal(traj.acts, np.arange(10) % 3)
    assert traj.frames.nbytes * 40 == np.stack(seen).nbytes * 13
    assert len(recorder) == 0  # finish starts afresh


def test_recorder_rejects_stacks_that_do_not_slide():
    recorder = EpisodeRecorder(frame_stack=2)
    recorder.add(np.zeros((2, 3), np.uint8), np.int64(0), 0.0)
    with pytest.raises(ValueError, match="slide by one frame"):
        recorder.add(np.ones((2, 3), np.uint8), np.int64(0), 0.0)
    with pytest.raises(ValueError, match="2-frame stacks"):
        EpisodeRecorder(frame_stack=2).add(np.zeros((3, 3), np.uint8), np.int64(0), 0.0)


def test_wrapper_and_rollout_record_compact_episodes():
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = RewardVecEnv(DummyVecEnv([stacked_env, stacked_env]), None, frame_stack=4)
    venv.reset()
    for _ in range(15):
        venv.step(np.array([1, 2]))
    finished = venv.pop_finished()
    assert len(finished) == 2 and all(len(t) == 12 and t.frame_stack == 4 for t in finished)
    first = finished[0]
    # The first stack repeats the reset frame (FrameStackObservation's padding).
    np.testing.assert_array_equal(first.obs[0, :, 0, 0], [0, 0, 0, 0])
    np.testing.assert_array_equal(first.obs[5, :, 0, 0], [2, 3, 4, 5])
    trajs = rollout(DummyVecEnv([stacked_env]), lambda o: np.zeros(len(o), int), frame_stack=4)
    assert trajs[0].frame_stack == 4 and len(trajs[0]) == 12


def test_clip_sampler_on_stacked_frames_keeps_clips_compact():
    trajs = [compact_trajectory(40, seed=s) for s in range(3)]
    pairs = sample_clip_pairs(trajs, 30, 25, np.random.default_rng(0))
    assert pairs.frame_stack == 4 and pairs.frames.shape == (30, 2, 28, 6, 6)
    assert pairs.obs.shape == (30, 2, 25, 4, 6, 6)
    # Every clip is a run of one trajectory's stacks, with its actions and rewards.
    for clip in range(2):
        obs, acts = pairs.obs[7, clip], pairs.acts[7, clip]
        hits = [
            (t, s)
            for t in trajs
            for s in range(len(t) - 24)
            if np.array_equal(t.obs[s : s + 25], obs) and np.array_equal(t.acts[s : s + 25], acts)
        ]
        assert hits
    assert pairs.frames.nbytes * 100 == pairs.obs.size * pairs.obs.itemsize * 28
    assert pairs.nbytes == pairs.frames.nbytes + pairs.acts.nbytes + pairs.true_rewards.nbytes
    plain = Trajectory(np.array(trajs[0].obs), trajs[0].acts, trajs[0].true_rewards)
    with pytest.raises(ValueError, match="mix compact and plain"):
        sample_clip_pairs([plain, trajs[1]], 2, 25, np.random.default_rng(0))


def test_indexing_concatenating_and_saving_keep_frames_compact(tmp_path):
    trajs = [compact_trajectory(30, seed=s) for s in range(2)]
    pairs = sample_clip_pairs(trajs, 10, 25, np.random.default_rng(1))
    full = np.array(pairs.obs)
    picked = pairs[np.array([3, 1])]
    assert picked.frame_stack == 4
    np.testing.assert_array_equal(picked.obs, full[[3, 1]])
    joined = ClipPairs.concatenate([pairs[:4], pairs[4:]])
    assert joined.frame_stack == 4
    np.testing.assert_array_equal(joined.obs, full)
    with pytest.raises(ValueError, match="different frame stacks"):
        ClipPairs.concatenate([pairs, ClipPairs(full, pairs.acts, pairs.true_rewards)])

    data = PreferenceDataset(pairs, np.linspace(0, 1, 10).astype(np.float32))
    save_dataset(data, tmp_path / "labels.npz")
    with np.load(tmp_path / "labels.npz") as f:
        assert "obs" not in f.files and f["frames"].shape == (10, 2, 28, 6, 6)
    back = load_dataset(tmp_path / "labels.npz")
    assert back.pairs.frame_stack == 4
    np.testing.assert_array_equal(back.pairs.obs, full)
    np.testing.assert_array_equal(back.prefs, data.prefs)


def test_memory_per_thousand_atari_clips():
    k, h = 4, 25
    frames = np.zeros((500, 2, h + k - 1, 84, 84), dtype=np.uint8)
    pairs = ClipPairs.from_frames(
        frames, k, np.zeros((500, 2, h), np.int64), np.zeros((500, 2, h), np.float32)
    )
    per_clip = pairs.frames.nbytes / 1000
    assert per_clip == (h + k - 1) * 84 * 84  # 197,568 bytes: 28 frames, not 100
    assert pairs.obs.size * pairs.obs.itemsize / pairs.frames.nbytes == pytest.approx(100 / 28)


def conv_model(seed=0) -> RewardModel:
    config = RewardModelConfig(
        encoder="cnn",
        hidden_sizes=(8,),
        use_actions=False,
        input_norm=False,
        batch_size=4,
        output_std=0.05,
    )
    return RewardModel((4, 84, 84), 1, config, seed=seed, device="cpu")


def atari_like_pairs(n: int, seed: int = 0) -> ClipPairs:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(n, 2, 5 + 3, 84, 84), dtype=np.uint8)
    return ClipPairs.from_frames(
        frames, 4, np.zeros((n, 2, 5), np.int64), rng.normal(size=(n, 2, 5)).astype(np.float32)
    )


def test_reward_model_reads_compact_frames_as_it_reads_whole_stacks():
    pairs = atari_like_pairs(6)
    plain = ClipPairs(np.array(pairs.obs), pairs.acts, pairs.true_rewards)
    model = conv_model()
    np.testing.assert_allclose(
        model.member_preferences(pairs), model.member_preferences(plain), rtol=1e-5
    )
    prefs = np.array([1, 0, 1, 0.5, 0, 1], np.float32)
    compact_data = model.to_device(PreferenceDataset(pairs, prefs))
    plain_data = model.to_device(PreferenceDataset(plain, prefs))
    assert compact_data.obs.shape == (6, 2, 8, 84, 84)  # frames, not stacks, on the device
    idx = torch.tensor([[0, 3], [5, 1], [2, 2]])
    torch.testing.assert_close(compact_data.clips(idx), plain_data.clips(idx))
    model.net.eval()
    torch.testing.assert_close(model._returns(compact_data, idx), model._returns(plain_data, idx))


def test_conv_reward_model_training_is_reproducible_and_resumable(tmp_path):
    pairs = atari_like_pairs(8)
    data = PreferenceDataset(pairs, (np.arange(8) % 2).astype(np.float32))

    def fit_twice(model):
        model.fit(data, epochs=1)
        save_reward_model(model, tmp_path / "m.pt")
        return model.fit(data, epochs=1).train_loss, model

    loss_a, _ = fit_twice(conv_model())
    loss_b, _ = fit_twice(conv_model())
    np.testing.assert_array_equal(loss_a, loss_b)  # dropout masks come from the model's seed
    resumed = load_reward_model(tmp_path / "m.pt", device="cpu")
    np.testing.assert_array_equal(resumed.fit(data, epochs=1).train_loss, loss_a)


def test_fit_on_a_window_keeps_each_labels_holdout_flags():
    pairs = atari_like_pairs(10)
    data = PreferenceDataset(pairs, (np.arange(10) % 2).astype(np.float32))
    model = conv_model()
    model.fit(data, epochs=0)
    flags = model.holdout.copy()
    model.fit(data.recent(4), epochs=0, first_label=6)
    np.testing.assert_array_equal(model.holdout, flags)  # no new flags: labels 6-9 known
    with pytest.raises(ValueError, match="first_label"):
        model.fit(data, epochs=0, first_label=-1)


def test_seeded_dropout():
    drop = SeededDropout(0.5)
    x = torch.ones(1000)
    drop.generator = torch.Generator().manual_seed(3)
    a = drop(x)
    drop.generator = torch.Generator().manual_seed(3)
    torch.testing.assert_close(drop(x), a)
    assert set(a.unique().tolist()) == {0.0, 2.0} and 350 < int((a == 0).sum()) < 650
    drop.eval()
    assert drop(x) is x
    with pytest.raises(ValueError, match="dropout p"):
        SeededDropout(1.0)
