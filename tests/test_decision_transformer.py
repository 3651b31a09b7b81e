"""Decision Transformer: causality, padding, windows, options, seeds, resume and learning."""

from __future__ import annotations

import copy
import dataclasses
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prefbench.agents.offline.dt import (
    Config,
    DecisionTransformer,
    DTModel,
    resolve_returns,
    window_steps,
)
from prefbench.agents.offline.transformer import CausalTransformer
from prefbench.envs.episodes import Episodes

TINY = Config(
    context_length=4, n_embd=16, n_layer=2, n_head=2, batch_size=8, warmup_steps=3, lr=1e-3
)


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_episodes(
    lengths: list[int], obs_dim: int = 3, act_dim: int = 2, seed: int = 0
) -> Episodes:
    """Random episodes; next_obs is the following obs within each episode."""
    rng = np.random.default_rng(seed)
    obs, nxt = [], []
    for n in lengths:
        path = rng.normal(size=(n + 1, obs_dim)).astype(np.float32)
        obs.append(path[:-1])
        nxt.append(path[1:])
    total = sum(lengths)
    starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    term = np.zeros(total, dtype=bool)
    term[starts[1:] - 1] = True
    return Episodes(
        np.concatenate(obs),
        rng.uniform(-1, 1, size=(total, act_dim)).astype(np.float32),
        rng.normal(1.0, 1.0, size=total).astype(np.float32),
        np.concatenate(nxt),
        term,
        np.zeros(total, dtype=bool),
        starts,
    )


def learner(
    data: Episodes, config: Config = TINY, seeds: tuple[int, ...] = (0,)
) -> DecisionTransformer:
    a = data.acts.shape[1]
    return DecisionTransformer(data, -np.ones(a), np.ones(a), config, list(seeds))


def model_inputs(b: int, k: int, obs_dim: int = 3, act_dim: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, k, generator=g),
        torch.randn(b, k, obs_dim, generator=g),
        torch.rand(b, k, act_dim, generator=g) * 2 - 1,
        torch.arange(k).repeat(b, 1) + 3,
        torch.ones(b, k, dtype=torch.bool),
    ]


def tiny_model(context: int = 6) -> DTModel:
    torch.manual_seed(0)
    cfg = Config(context_length=context, n_embd=16, n_layer=2, n_head=2, dropout=0.1)
    return DTModel(3, 2, cfg).eval()


# ------------------------------------------------------------- (a) causal mask
def test_transformer_is_causal():
    torch.manual_seed(0)
    net = CausalTransformer(n_layer=2, n_head=2, n_embd=8, dropout=0.0, max_tokens=10).eval()
    with torch.no_grad():  # weights larger than GPT-2's 0.02, so attention matters
        for p in net.parameters():
            p.normal_(0.0, 0.3)
    x = torch.randn(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, :2] = False  # with left padding too
    base = net(x, mask)
    y = x.clone()
    y[:, 6] += torch.randn(8)  # not a constant shift, which LayerNorm would remove
    out = net(y, mask)
    assert torch.equal(out[:, :6], base[:, :6])
    assert ((out - base).abs().amax(dim=-1)[:, 6:] > 1e-4).all()


@pytest.mark.parametrize("field", ["rtg", "states", "actions", "timesteps"])
def test_future_inputs_cannot_change_earlier_actions(field):
    model = tiny_model()
    inputs = model_inputs(3, 6)
    names = ["rtg", "states", "actions", "timesteps", "mask"]
    base = model(*inputs)
    j = 3
    changed = [t.clone() for t in inputs]
    changed[names.index(field)][:, j] += 5
    out = model(*changed)
    # a_j comes after s_j: the action of step j is predicted without seeing it.
    first_seen = j + 1 if field == "actions" else j
    assert torch.equal(out[:, :first_seen], base[:, :first_seen])
    diff = (out - base).abs().amax(dim=-1)
    assert (diff[:, first_seen:] > 1e-6).all(), diff


def test_earlier_inputs_change_every_later_action():
    model = tiny_model()
    inputs = model_inputs(3, 6)
    base = model(*inputs)
    inputs[1] = inputs[1].clone()
    inputs[1][:, 1] += 3
    diff = (model(*inputs) - base).abs().amax(dim=-1)
    assert torch.equal(diff[:, 0], torch.zeros(3)) and (diff[:, 1:] > 1e-6).all(), diff


# ------------------------------------------------------------------ (b) padding
def test_left_padding_matches_the_short_window():
    model = tiny_model(context=6)
    short = model_inputs(2, 3, seed=1)
    want = model(*short)
    padded = []
    for fill in (0.0, 7.0):  # whatever the padding holds, it is invisible
        rtg, states, actions, timesteps, _ = model_inputs(2, 6, seed=2)
        rtg, states, actions = rtg * 0 + fill, states * 0 + fill, actions * 0 + fill
        timesteps = timesteps * 0
        for full, part in zip((rtg, states, actions, timesteps), short[:4], strict=True):
            full[:, 3:] = part
        mask = torch.tensor([[False] * 3 + [True] * 3] * 2)
        out = model(rtg, states, actions, timesteps, mask)
        assert torch.isfinite(out).all()
        padded.append(out[:, 3:])
    assert torch.equal(padded[0], padded[1])
    torch.testing.assert_close(padded[0], want, rtol=0, atol=1e-6)


# ------------------------------------------------------- (c) windows and rtg
def test_window_steps_stop_at_episode_starts():
    episode_start = torch.tensor([0, 0, 2, 2, 2, 2, 2, 2, 2, 9, 9, 9, 9])
    steps, mask = window_steps(torch.tensor([0, 1, 5, 9, 12]), episode_start, 3)
    assert steps.tolist() == [
        [-1, -1, 0],
        [-1, 0, 1],
        [3, 4, 5],
        [-1, -1, 9],
        [10, 11, 12],
    ]
    assert torch.equal(mask, steps >= 0)


def test_sampled_windows_stay_in_one_episode():
    data = make_episodes([2, 7, 3, 12])
    cfg = Config(**{**TINY.__dict__, "context_length": 5, "batch_size": 512})
    dt = learner(data, cfg)
    b = dt.sample_batch(0)
    steps, mask = b.steps.numpy(), b.mask.numpy()
    episode, timesteps = data.episode_of_step, data.timesteps
    rtg = data.returns_to_go()
    ends = steps[:, -1]
    assert set(ends.tolist()) == set(range(len(data)))  # every step ends some window
    assert mask[:, -1].all() and (np.diff(mask.astype(int), axis=1) >= 0).all()  # left-padded
    for row, real in zip(steps, mask, strict=True):
        idx = row[real]
        assert (np.diff(idx) == 1).all() and (episode[idx] == episode[idx[-1]]).all()
        # The window is as long as the episode allows, from timestep 0 if it reaches there.
        assert len(idx) == min(5, timesteps[idx[-1]] + 1)
        assert timesteps[idx[0]] == 0 or len(idx) == 5
    real = mask
    assert np.array_equal(b.timesteps.numpy()[real], timesteps[steps[real]])
    np.testing.assert_allclose(b.rtg.numpy()[real] * dt.rtg_scale, rtg[steps[real]], rtol=1e-5)
    normed = (data.obs - dt.obs_mean) / dt.obs_std
    np.testing.assert_allclose(b.states.numpy()[real], normed[steps[real]], rtol=1e-5, atol=1e-5)
    assert not b.states.numpy()[~real].any() and not b.rtg.numpy()[~real].any()
    # At each episode's last step the return-to-go is that step's reward.
    last = data.starts[1:] - 1
    np.testing.assert_allclose(rtg[last], data.rewards[last], rtol=1e-6)
    np.testing.assert_allclose(dt._rtg.numpy()[last] * dt.rtg_scale, data.rewards[last], rtol=1e-5)


# -------------------------------------------------------- (d) options and config
def test_target_return_and_rtg_scale_resolve():
    returns = np.array([3.0, -8.0, 10.0, 1.0])
    base = Config()
    assert resolve_returns(base, returns) == (1000.0, 10.0)
    cases = {"dataset_max": 10.0, "quantile:0.5": 2.0, "quantile:0": -8.0, 42.5: 42.5}
    for option, want in cases.items():
        cfg = Config(target_return=option, rtg_scale="dataset")
        assert resolve_returns(cfg, returns) == (10.0, want)
    # "dataset" scales by the largest absolute return, so negative returns keep their sign.
    assert resolve_returns(Config(rtg_scale="dataset"), np.array([-8.0, 3.0]))[0] == 8.0
    with pytest.raises(ValueError, match="non-zero"):
        resolve_returns(Config(rtg_scale="dataset"), np.zeros(3))

    data = make_episodes([4, 6, 5])
    ret = data.returns()
    dt = learner(data, Config(**{**TINY.__dict__, "target_return": "quantile:0.9"}))
    assert dt.target_return == pytest.approx(float(np.quantile(ret.astype(np.float64), 0.9)))
    assert dt.info["target_return"] == dt.target_return and dt.info["rtg_scale"] == 1000.0
    assert dt.info["target_return_from"] == "quantile:0.9"
    # The policy starts every env at the target and subtracts what it observes.
    policy = dt.policy(2)
    assert np.array_equal(policy.returns_to_go, np.full((1, 2), dt.target_return))
    policy.act(np.zeros((1, 2, 3)))
    policy.observe(np.array([[1.5, -2.0]]))
    np.testing.assert_allclose(
        policy.returns_to_go, [[dt.target_return - 1.5, dt.target_return + 2]]
    )
    policy.reset(np.array([False, True]))
    assert policy.returns_to_go[0, 1] == dt.target_return


@pytest.mark.parametrize(
    "bad",
    [
        {"context_length": 0},
        {"n_embd": 30, "n_head": 4},
        {"n_layer": 0},
        {"dropout": 1.0},
        {"lr": 0.0},
        {"weight_decay": -1.0},
        {"warmup_steps": -1},
        {"grad_clip": 0.0},
        {"batch_size": 0},
        {"max_timestep": 0},
        {"rtg_scale": -1.0},
        {"rtg_scale": math.inf},
        {"rtg_scale": "max"},
        {"target_return": "best"},
        {"target_return": "quantile:1.5"},
        {"target_return": "quantile:x"},
        {"target_return": math.nan},
        {"activation": "gelu"},
    ],
)
def test_bad_config_raises(bad):
    with pytest.raises(ValueError):
        Config(**bad)


def test_blocks_use_the_configured_activation():
    # The authors' DT runs GPT-2 with activation_function="relu"; the text encoder keeps
    # GPT-2's gelu_new. A block's MLP must apply exactly the one asked for.
    torch.manual_seed(0)
    x = torch.randn(2, 5, 16)
    outs = {}
    for name in ("relu", "gelu_new"):
        torch.manual_seed(1)
        block = CausalTransformer(1, 2, 16, 0.0, 5, activation=name).blocks[0].eval()
        hidden = block.fc(block.ln_2(x))
        expected = torch.relu(hidden) if name == "relu" else F.gelu(hidden, approximate="tanh")
        assert torch.equal(block.activation(hidden), expected)
        outs[name] = block(x, torch.ones(2, 1, 5, 5, dtype=torch.bool))
    assert not torch.allclose(outs["relu"], outs["gelu_new"])
    assert DTModel(3, 2, TINY).transformer.blocks[0].activation(torch.tensor(-1.0)) == 0
    with pytest.raises(ValueError, match="activation"):
        CausalTransformer(1, 1, 8, 0.0, 4, activation="swish")


def test_action_bounds_scale_to_unit_interval_and_back():
    data = make_episodes([6, 5])
    data = dataclasses.replace(data, acts=(data.acts + 1) * 2)  # in [0, 4]
    dt = DecisionTransformer(data, np.zeros(2), np.full(2, 4.0), TINY, [0])
    np.testing.assert_allclose(dt._acts.numpy(), data.acts / 2 - 1, atol=1e-6)
    out = dt.policy(3).act(np.zeros((1, 3, 3)))
    assert out.shape == (1, 3, 2) and (out > 0).all() and (out < 4).all()
    for low, high in ((np.zeros(3), np.ones(3)), (np.ones(2), np.ones(2))):
        with pytest.raises(ValueError):
            DecisionTransformer(data, low, high, TINY, [0])
    with pytest.raises(ValueError):
        DecisionTransformer(data, np.zeros(2), np.ones(2), TINY, [])


def test_policy_keeps_k_steps_and_reset_restarts_envs():
    cfg = Config(**{**TINY.__dict__, "max_timestep": 3})  # the episodes outrun the embedding
    dt = learner(make_episodes([5, 6]), cfg, seeds=(0, 1))
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(8, 2, 3, 3))
    policy = dt.policy(3)
    for t in range(7):
        out = policy.act(obs[t])
        policy.observe(np.ones((2, 3)))
        assert out.shape == (2, 3, 2) and np.isfinite(out).all()
    policy.reset(np.array([True, False, False]))
    out = policy.act(obs[7])
    fresh = dt.policy(3).act(obs[7])
    np.testing.assert_array_equal(out[:, 0], fresh[:, 0])  # env 0 starts over
    assert not np.array_equal(out[:, 1:], fresh[:, 1:])  # the others keep their history
    with pytest.raises(ValueError):
        policy.act(obs[7][:, :2])


# ------------------------------------------------------------ (e) seeds batched
def test_batched_seeds_equal_separate_learners():
    data = make_episodes([5, 9, 7])
    together = learner(data, seeds=(3, 5, 7))
    alone = [learner(data, seeds=(s,)) for s in (3, 5, 7)]
    for _ in range(10):
        together.update()
        for one in alone:
            one.update()
    for i, one in enumerate(alone):
        for (name, p), q in zip(
            together.models[i].named_parameters(), one.models[0].parameters(), strict=True
        ):
            assert torch.equal(p, q), name
    obs = np.random.default_rng(0).normal(size=(3, 2, 3))
    acts = together.policy(2).act(obs)
    for i, one in enumerate(alone):
        assert np.array_equal(acts[i : i + 1], one.policy(2).act(obs[i : i + 1]))
    # Seeds differ from each other.
    assert not torch.equal(
        together.models[0].predict_action.weight, alone[1].models[0].predict_action.weight
    )


# ---------------------------------------------------------------- (f) resume
def test_state_dict_round_trip_continues_identically():
    data = make_episodes([5, 9, 7])
    first = learner(data, seeds=(1, 2))
    for _ in range(10):
        first.update()
    buf = io.BytesIO()
    torch.save(copy.deepcopy(first.state_dict()), buf)
    buf.seek(0)
    second = learner(data, seeds=(1, 2))
    second.load_state_dict(torch.load(buf, weights_only=True))
    for _ in range(5):
        assert first.update() == second.update()
    for p, q in zip(first.models.parameters(), second.models.parameters(), strict=True):
        assert torch.equal(p, q)
    assert second.updates == 15
    with pytest.raises(ValueError, match="seeds"):
        learner(data, seeds=(1,)).load_state_dict(first.state_dict())


def test_warmup_is_linear():
    dt = learner(make_episodes([5, 6]))
    lrs = [dt.update()["lr"] for _ in range(5)]
    np.testing.assert_allclose(lrs, [1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3, 1e-3])


# --------------------------------------------------------------- (g) NaN loss
def test_non_finite_loss_raises_and_moves_nothing():
    dt = learner(make_episodes([5, 6]), seeds=(0, 1))
    dt.update()
    with torch.no_grad():
        dt.models[1].embed_state.weight[0, 0] = math.nan
    before = [p.clone() for p in dt.models.parameters()]
    with pytest.raises(FloatingPointError, match="non-finite"):
        dt.update()
    after = list(dt.models.parameters())
    for p, q in zip(before, after, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, equal_nan=True)


# ---------------------------------------------------------- (h) it learns
def test_learns_actions_from_the_return_condition():
    """Obs are noise; only the return-to-go tells high-return episodes (a=+0.8) from low."""
    n_ep, length = 40, 10
    rng = np.random.default_rng(0)
    path = rng.normal(size=(n_ep, length + 1, 3)).astype(np.float32)
    high = np.arange(n_ep) % 2 == 0
    acts = np.repeat(np.where(high, 0.8, -0.8), length)[:, None].repeat(2, axis=1)
    rewards = np.repeat(np.where(high, 1.0, 0.1), length).astype(np.float32)
    trunc = np.zeros(n_ep * length, dtype=bool)
    trunc[length - 1 :: length] = True
    data = Episodes(
        path[:, :-1].reshape(-1, 3),
        acts.astype(np.float32),
        rewards,
        path[:, 1:].reshape(-1, 3),
        np.zeros_like(trunc),
        trunc,
        np.arange(0, n_ep * length + 1, length),
    )
    cfg = Config(
        context_length=5, n_embd=32, n_layer=1, n_head=1, dropout=0.0, lr=1e-3,
        warmup_steps=10, rtg_scale="dataset",
    )  # fmt: skip
    dt = learner(data, cfg)
    assert dt.target_return == pytest.approx(10.0) and dt.rtg_scale == pytest.approx(10.0)
    for _ in range(150):
        dt.update()
    out = {}
    for target, reward in ((dt.target_return, 1.0), (1.0, 0.1)):
        policy = dt.policy(4, target)
        acts_seen = []
        for _ in range(length):
            acts_seen.append(policy.act(rng.normal(size=(1, 4, 3))))
            policy.observe(np.full((1, 4), reward))
        out[target] = np.stack(acts_seen)
    print("high target:", out[10.0].min(), "low target:", out[1.0].max())
    assert out[10.0].min() > 0.5 and out[1.0].max() < -0.5
