"""Atari tasks: preprocessing, score masks, the batched conv reward encoder."""

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from test_frames import conv_model
from torch import nn

from prefbench.agents.encoders import EnsembleConvEncoder, SeededDropout
from prefbench.agents.reward_checkpoint import load_reward_model, save_reward_model
from prefbench.agents.reward_model import RewardModelConfig
from prefbench.envs.atari import ATARI_TASKS, SCORE_MASKS, ScoreMask, ScoreMaskWrapper
from prefbench.envs.data import ClipPairs, PreferenceDataset, load_dataset


def test_the_seven_games_are_registered():
    assert set(ATARI_TASKS) == {
        "beamrider",
        "breakout",
        "enduro",
        "pong",
        "qbert",
        "seaquest",
        "spaceinvaders",
    }
    for task in ATARI_TASKS.values():
        assert task.clip_length == 25
        assert task.frame_stack == 4


def test_score_mask_blanks_its_boxes_only():
    mask = ScoreMask(((0, 9, 0, 84), (70, 80, 10, 20)))
    frame = np.full((84, 84), 200, dtype=np.uint8)
    out = mask.apply(frame)
    assert (out[0:9] == 0).all() and (out[70:80, 10:20] == 0).all()
    assert out[9:70].min() == 200 and out[70:80, 20:].min() == 200
    assert frame.min() == 200  # the input is not modified
    with pytest.raises(ValueError, match="outside"):
        ScoreMask(((0, 90, 0, 84),))


@pytest.mark.parametrize("name", sorted(ATARI_TASKS))
def test_atari_task_masks_the_score_in_every_stacked_frame(name):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    task = ATARI_TASKS[name]
    env = task.make()
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (4, 84, 84) and obs.dtype == np.uint8
        env.action_space.seed(0)
        for _ in range(40):
            obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            assert np.isfinite(reward)
            for r0, r1, c0, c1 in SCORE_MASKS[task.env_id.split("/")[1].split("-")[0]].boxes:
                assert (np.asarray(obs)[:, r0:r1, c0:c1] == 0).all()
            if terminated or truncated:
                obs, _ = env.reset()
        assert np.asarray(obs).max() > 0  # the rest of the screen is there
    finally:
        env.close()


def test_mask_wrapper_rejects_unprocessed_frames():
    gym = pytest.importorskip("gymnasium")
    env = gym.make("Pendulum-v1")
    with pytest.raises(ValueError, match="84x84"):
        ScoreMaskWrapper(env, SCORE_MASKS["Pong"])


def test_conv_encoder_equals_separate_members():
    torch.manual_seed(0)
    k, m = 3, 5
    enc = EnsembleConvEncoder(k, (4, 84, 84)).eval()
    for module in enc.modules():  # non-trivial batch-norm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    x = torch.randint(0, 256, (k, m, 4, 84, 84), dtype=torch.uint8)
    with torch.no_grad():
        full = enc(x)
        assert full.shape == (k, m, enc.out_dim) and enc.out_dim == 16 * 7 * 7
        for member in range(k):
            h = x[member].float() / 255
            for layer in enc.net:
                if isinstance(layer, nn.Conv2d):
                    c = layer.out_channels // k
                    sl = slice(member * c, (member + 1) * c)
                    h = nn.functional.conv2d(h, layer.weight[sl], layer.bias[sl], layer.stride)
                elif isinstance(layer, nn.BatchNorm2d):
                    c = layer.num_features // k
                    sl = slice(member * c, (member + 1) * c)
                    h = nn.functional.batch_norm(
                        h,
                        layer.running_mean[sl],
                        layer.running_var[sl],
                        layer.weight[sl],
                        layer.bias[sl],
                        False,
                        0.0,
                        layer.eps,
                    )
                elif isinstance(layer, nn.LeakyReLU):
                    h = layer(h)
            torch.testing.assert_close(h.reshape(m, -1), full[member], atol=1e-5, rtol=1e-5)


def test_conv_encoder_on_shared_observations_matches_the_copied_input():
    # In eval mode, expanded input (every member sees the same states) takes the one-copy
    # first layer; training always takes the per-member path.
    torch.manual_seed(0)
    base = EnsembleConvEncoder(3, (4, 84, 84))
    obs = torch.randint(0, 256, (6, 4, 84, 84), dtype=torch.uint8)
    shared, copied = obs.expand(3, *obs.shape), obs.expand(3, *obs.shape).contiguous()
    outputs = {}
    for name, x in (("shared", shared), ("copied", copied)):
        enc = copy.deepcopy(base)  # a training pass moves the batch-norm statistics
        for module in enc.modules():
            if isinstance(module, SeededDropout):
                module.generator = torch.Generator().manual_seed(1)
        enc.train()
        train_out = enc(x)  # batch statistics and dropout masks as in training
        enc.eval()
        with torch.no_grad():
            outputs[name] = (train_out.detach(), enc(x))
    for a, b in zip(outputs["shared"], outputs["copied"], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_folded_weights_are_cached_and_follow_every_change():
    torch.manual_seed(0)
    enc = EnsembleConvEncoder(2, (4, 84, 84)).eval()
    obs = torch.randint(0, 256, (2, 3, 4, 84, 84), dtype=torch.uint8)

    def fresh() -> torch.Tensor:
        ref = copy.deepcopy(enc)
        ref._folded.clear()
        with torch.no_grad():
            return ref(obs)

    with torch.no_grad():
        first = enc(obs)
        cached = enc._folded_params()
        assert torch.equal(enc(obs), first)
        assert all(a is b for a, b in zip(enc._folded_params(), cached, strict=True))  # reused
    # An optimiser step and a training pass (new running statistics).
    optimizer = torch.optim.SGD(enc.parameters(), lr=0.1)
    enc.train()
    enc(obs).square().mean().backward()
    optimizer.step()
    enc.eval()
    with torch.no_grad():
        after_step = enc(obs)
    assert not torch.allclose(after_step, first)
    torch.testing.assert_close(after_step, fresh())
    # In-place edits of a statistic, and another model's weights loaded.
    with torch.no_grad():
        enc.net[1].running_mean.add_(0.3)
        edited = enc(obs)
    torch.testing.assert_close(edited, fresh())
    assert not torch.allclose(edited, after_step)
    other = EnsembleConvEncoder(2, (4, 84, 84)).eval()
    enc.load_state_dict(other.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(enc(obs), other(obs))
    # With autograd on, eval mode still reaches the parameters.
    enc.zero_grad()
    enc(obs).sum().backward()
    assert enc.net[0].weight.grad is not None and enc.net[0].weight.grad.abs().sum() > 0


def test_conv_l2_penalty_is_per_member():
    model = conv_model()
    k = model.config.ensemble_size
    expected = torch.zeros(k)
    for module in model.net.modules():
        if isinstance(module, nn.Conv2d):
            c = module.out_channels // k
            for member in range(k):
                expected[member] += module.weight[member * c : (member + 1) * c].pow(2).sum()
    for layer in [*model.net.trunk, model.net.head]:
        expected += layer.weight.pow(2).sum(dim=(1, 2))
    torch.testing.assert_close(model._l2_penalty(), expected)


def test_conv_reward_model_fits_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    n, h = 8, 2
    obs = rng.integers(0, 256, (n, 2, h, 4, 84, 84), dtype=np.uint8)
    rewards = obs[:, :, :, -1].mean(axis=(-1, -2)).astype(np.float32) / 255
    pairs = ClipPairs(obs, np.zeros((n, 2, h, 1), np.float32), rewards)
    prefs = (rewards.sum(-1)[:, 0] > rewards.sum(-1)[:, 1]).astype(np.float32)
    model = conv_model()
    stats = model.fit(PreferenceDataset(pairs, prefs), epochs=1)
    assert np.isfinite(stats.train_loss).all() and stats.steps >= 1
    states = obs[:, 0].reshape(-1, 4, 84, 84)
    model.update_normalization(states, np.zeros((len(states), 1), np.float32))
    r = model.reward(states, np.zeros((len(states), 1), np.float32))
    assert r.shape == (len(states),) and abs(float(r.mean())) < 0.05
    save_reward_model(model, tmp_path / "rm.pt")
    loaded = load_reward_model(tmp_path / "rm.pt", device="cpu")
    np.testing.assert_allclose(
        loaded.reward(states, np.zeros((len(states), 1), np.float32)), r, rtol=1e-5, atol=1e-6
    )


def test_batch_norm_calibration_matches_dropout_free_statistics():
    rng = np.random.default_rng(0)
    n, h = 8, 3
    obs = rng.integers(0, 256, (n, 2, h, 4, 84, 84), dtype=np.uint8)
    pairs = ClipPairs(obs, np.zeros((n, 2, h, 1), np.float32), np.zeros((n, 2, h), np.float32))
    data = PreferenceDataset(pairs, rng.integers(0, 2, n).astype(np.float32))
    model = conv_model()
    model.config = replace(model.config, bn_calibration_pairs=0)
    model.fit(data, epochs=2)  # running averages of training, taken with dropout on
    d, k = model.to_device(data), model.config.ensemble_size
    idx = torch.arange(n).expand(k, -1)
    dropouts = [m for m in model.net.modules() if isinstance(m, SeededDropout)]

    def eval_returns():
        model.net.eval()
        with torch.no_grad():
            return model._returns(d, idx)

    # Reference: batch statistics of these pairs, dropout off, running averages untouched.
    state = {key: value.clone() for key, value in model.net.state_dict().items()}
    model.net.train()
    for m in dropouts:
        m.eval()
    with torch.no_grad():
        reference = model._returns(d, idx)
    model.net.load_state_dict(state)
    before = eval_returns()
    model.calibrate_batch_norm(d, [np.arange(n)] * k)  # 0 pairs: a no-op
    torch.testing.assert_close(eval_returns(), before)

    model.config = replace(model.config, bn_calibration_pairs=n, batch_size=n)  # one batch
    model.calibrate_batch_norm(d, [np.arange(n)] * k)
    assert not torch.allclose(before, reference, rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(eval_returns(), reference, rtol=1e-3, atol=1e-4)
    assert not model.net.training
    assert all(m.momentum == 0.1 for m in model.net.modules() if isinstance(m, nn.BatchNorm2d))
    with pytest.raises(ValueError, match="bn_calibration_pairs"):
        RewardModelConfig(bn_calibration_pairs=-1)


def test_atari_agents_follow_the_paper():
    from prefbench.agents import AGENTS

    pref = AGENTS.get("pref-a2c-atari").config
    assert (pref.rl.algo, pref.rl.n_envs, pref.rl.n_steps) == ("a2c", 16, 5)
    assert (pref.rl.learning_rate, pref.rl.lr_schedule) == (7e-4, "linear")
    assert pref.rl.optimizer == "rmsprop-tf"
    assert (pref.rl.gamma, pref.rl.ent_coef) == (0.99, 0.01)
    assert (pref.reward.encoder, pref.reward.output_std, pref.reward.use_actions) == (
        "cnn",
        0.05,
        False,
    )
    loop = pref.loop
    assert (loop.initial_labels, loop.initial_epochs) == (500, 200)
    assert (loop.label_decay_steps, loop.recent_labels) == (5e6, 3000)
    baseline = AGENTS.get("a2c-atari").config
    assert baseline.rl == pref.rl and baseline.sign_reward


def test_linear_learning_rate_schedule_reaches_the_learner():
    from prefbench.agents.rl import LinearSchedule, RLConfig

    assert LinearSchedule(7e-4)(1.0) == 7e-4 and LinearSchedule(7e-4)(0.25) == 1.75e-4
    with pytest.raises(ValueError, match="lr_schedule"):
        RLConfig(lr_schedule="cosine")


def test_tf_rmsprop_reaches_the_a2c_learner():
    from stable_baselines3.common.sb2_compat.rmsprop_tf_like import RMSpropTFLike

    from prefbench.agents.rl import RLConfig, build_learner
    from prefbench.envs.rollout import make_vec_env
    from prefbench.envs.tasks import get_task

    task = get_task("pendulum")
    venv = make_vec_env(task, 2, 0)
    for optimizer, expected in (("rmsprop-tf", RMSpropTFLike), ("default", torch.optim.RMSprop)):
        learner = build_learner(
            RLConfig(algo="a2c", n_envs=2, optimizer=optimizer), task, venv, seed=0, device="cpu"
        )
        assert type(learner.policy.optimizer) is expected
    with pytest.raises(ValueError, match="rl.optimizer"):
        RLConfig(optimizer="adam")


def test_tiny_preference_run_on_pong(tmp_path):
    pytest.importorskip("ale_py")
    pytest.importorskip("cv2")
    import pandas as pd
    from tiny import tiny_config

    from prefbench.benchmarks.train import train

    cfg = tiny_config(
        tmp_path,
        "pref-a2c-atari",
        task="pong",
        label_budget=30,
        steps=320,
        eval_every=320,
        overrides=(
            "rl.n_envs=4",
            "loop.initial_epochs=1",
            "loop.random_steps=300",
            "loop.update_every=160",
            "loop.norm_samples=200",
            "reward.batch_size=4",
        ),
    )
    summary = train(cfg)
    run_dir = tmp_path / "pong-pref-a2c-atari-oracle-30-s0"
    metrics = pd.read_csv(run_dir / "metrics.csv")
    assert metrics["steps"].iloc[-1] >= 320 and metrics["labels_used"].iloc[-1] == 30
    assert -21 <= summary["final_true_return"] <= 21
    assert math.isfinite(summary["final_rm_accuracy"])
    labels = load_dataset(run_dir / "checkpoints" / "labels.npz")
    assert labels.pairs.frame_stack == 4 and labels.pairs.frames.shape[2:] == (28, 84, 84)
    model = load_reward_model(run_dir / "checkpoints" / "reward_model.pt", device="cpu")
    assert model.config.encoder == "cnn"
