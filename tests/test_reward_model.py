import math
import pickle
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from prefbench.agents.device import resolve_device
from prefbench.agents.losses import bradley_terry_loss
from prefbench.agents.reward_checkpoint import (
    load_reward_model,
    restore_reward_model,
    save_reward_model,
)
from prefbench.agents.reward_model import FitStats, RewardModel, RewardModelConfig
from prefbench.envs.data import CheckpointError, ClipPairs, PreferenceDataset
from prefbench.envs.teachers import BPREF_TEACHERS, BPrefTeacher

SLOPE = 0.01


def small_model(k=3, hidden=(8, 8), seed=0, **cfg) -> RewardModel:
    config = RewardModelConfig(ensemble_size=k, hidden_sizes=hidden, **cfg)
    return RewardModel((5,), 2, config, seed=seed, device="cpu")


def member_sequential(model: RewardModel, k: int) -> nn.Sequential:
    """Member ``k`` of the ensemble as a plain torch MLP with copied weights."""
    layers: list[nn.Module] = []
    for layer in model.net.trunk:
        w = layer.weight[k]  # (in, out)
        lin = nn.Linear(w.shape[0], w.shape[1])
        with torch.no_grad():
            lin.weight.copy_(w.T)
            lin.bias.copy_(layer.bias[k, 0])
        layers += [lin, nn.LeakyReLU(SLOPE)]
    head = nn.Linear(model.net.head.weight.shape[1], 1)
    with torch.no_grad():
        head.weight.copy_(model.net.head.weight[k].T)
        head.bias.copy_(model.net.head.bias[k, 0])
    layers.append(head)
    return nn.Sequential(*layers)


def test_batched_ensemble_equals_separate_members():
    model = small_model()
    net = model.net
    k = 3
    gen = torch.Generator().manual_seed(0)
    obs = torch.randn(k, 7, 5, generator=gen)  # each member gets its own inputs
    acts = torch.randn(k, 7, 2, generator=gen)
    out = net.step_rewards(obs, acts)
    assert out.shape == (k, 7)
    for m in range(k):
        seq = member_sequential(model, m)
        expected = seq(torch.cat([obs[m], acts[m]], dim=-1)).squeeze(-1)
        torch.testing.assert_close(out[m], expected, atol=1e-5, rtol=1e-5)

    clip_obs = torch.randn(k, 4, 6, 5, generator=gen)  # (K, P, H, O)
    clip_acts = torch.randn(k, 4, 6, 2, generator=gen)
    ret = net.clip_returns(clip_obs, clip_acts)
    assert ret.shape == (k, 4)
    for m in range(k):
        seq = member_sequential(model, m)
        per_step = seq(torch.cat([clip_obs[m], clip_acts[m]], dim=-1)).squeeze(-1)  # (P, H)
        torch.testing.assert_close(ret[m], per_step.sum(dim=1), atol=1e-5, rtol=1e-5)
        # Summed-before-head equals the per-step path of the ensemble itself.
        steps = net.step_rewards(clip_obs.reshape(k, 24, 5), clip_acts.reshape(k, 24, 2))
        torch.testing.assert_close(ret, steps.reshape(k, 4, 6).sum(-1), atol=1e-5, rtol=1e-5)


def test_batched_gradients_equal_per_member_gradients():
    model = small_model()
    net = model.net
    k = 3
    gen = torch.Generator().manual_seed(1)
    obs = torch.randn(k, 4, 6, 5, generator=gen)
    acts = torch.randn(k, 4, 6, 2, generator=gen)
    targets = torch.randn(k, 4, generator=gen)
    seqs = [member_sequential(model, m) for m in range(k)]

    net.zero_grad()
    ((net.clip_returns(obs, acts) - targets) ** 2).sum().backward()
    linear_layers = [*net.trunk, net.head]
    for m in range(k):
        seq = seqs[m]
        pred = seq(torch.cat([obs[m], acts[m]], dim=-1)).squeeze(-1).sum(dim=1)
        ((pred - targets[m]) ** 2).sum().backward()
        seq_linears = [mod for mod in seq if isinstance(mod, nn.Linear)]
        for ens, lin in zip(linear_layers, seq_linears, strict=True):
            torch.testing.assert_close(ens.weight.grad[m], lin.weight.grad.T, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(ens.bias.grad[m, 0], lin.bias.grad, atol=1e-5, rtol=1e-4)

    # A loss of member 0 alone touches only member 0's slices.
    net.zero_grad()
    net.clip_returns(obs, acts)[0].sum().backward()
    for ens in linear_layers:
        assert ens.weight.grad[0].abs().sum() > 0
        assert torch.all(ens.weight.grad[1:] == 0)
        assert torch.all(ens.bias.grad[1:] == 0)


def test_bradley_terry_loss_with_random_answers():
    returns = torch.tensor([[2.0, 0.5], [-1.0, 1.0], [0.3, 0.3]])
    d = returns[:, 0] - returns[:, 1]
    loss1 = bradley_terry_loss(returns, torch.ones(3), 0.1)
    expected1 = -torch.log(0.9 * torch.sigmoid(d) + 0.05)
    torch.testing.assert_close(loss1, expected1, atol=1e-6, rtol=1e-6)
    loss0 = bradley_terry_loss(returns, torch.zeros(3), 0.1)
    expected0 = -torch.log(0.9 * torch.sigmoid(-d) + 0.05)
    torch.testing.assert_close(loss0, expected0, atol=1e-6, rtol=1e-6)
    # Hand-computed for d = 1.5 and pref 1.
    assert loss1[0].item() == pytest.approx(-math.log(0.9 / (1 + math.exp(-1.5)) + 0.05), rel=1e-6)
    # Half preference mixes both terms.
    half = bradley_terry_loss(returns, torch.full((3,), 0.5), 0.1)
    torch.testing.assert_close(half, 0.5 * expected1 + 0.5 * expected0)
    # The mixture bounds the loss by -log(0.05).
    huge = bradley_terry_loss(torch.tensor([[-100.0, 100.0]]), torch.ones(1), 0.1)
    assert huge.item() == pytest.approx(-math.log(0.05), rel=1e-4)


def test_bradley_terry_loss_without_random_answers_is_bce():
    gen = torch.Generator().manual_seed(0)
    returns = torch.randn(2, 10, 2, generator=gen) * 3
    prefs = torch.rand(2, 10, generator=gen)
    prefs[0, :5] = 1.0
    prefs[0, 5:] = 0.0
    loss = bradley_terry_loss(returns, prefs, 0.0)
    expected = F.binary_cross_entropy_with_logits(
        returns[..., 0] - returns[..., 1], prefs, reduction="none"
    )
    assert loss.shape == (2, 10)
    torch.testing.assert_close(loss, expected, atol=1e-5, rtol=1e-5)


def linear_problem(n_pairs, seed, h=5, obs_dim=4):
    rng = np.random.default_rng(seed)
    w = np.array([1.0, -2.0, 0.5, 1.5], dtype=np.float32)[:obs_dim]
    obs = rng.normal(size=(n_pairs, 2, h, obs_dim)).astype(np.float32)
    acts = rng.normal(size=(n_pairs, 2, h, 1)).astype(np.float32)
    rewards = (obs @ w).astype(np.float32)
    pairs = ClipPairs(obs, acts, rewards)
    labels = BPrefTeacher(BPREF_TEACHERS["oracle"], rng).label(pairs)
    return pairs, labels


def test_fit_learns_linear_reward():
    torch.set_num_threads(1)
    pairs, labels = linear_problem(400, seed=0)
    data = PreferenceDataset.from_labels(pairs, labels)
    config = RewardModelConfig(ensemble_size=3, hidden_sizes=(32, 32), epochs_per_fit=5, lr=3e-3)
    model = RewardModel((4,), 1, config, seed=0, device="cpu")
    fresh_pairs, fresh_labels = linear_problem(500, seed=1)
    before = model.preference_accuracy(fresh_pairs, fresh_labels.prefs)
    for _ in range(4):
        stats = model.fit(data)
    after = model.preference_accuracy(fresh_pairs, fresh_labels.prefs)
    assert after > 0.85, (before, after)
    assert isinstance(stats, FitStats)
    assert stats.n_labels == 400
    assert stats.steps == 5 * math.ceil(round(400 * (1 - 1 / math.e)) / 64)
    for arr in (stats.train_loss, stats.val_loss, stats.l2):
        assert arr.shape == (3,)
        assert np.all(np.isfinite(arr))
    assert stats.val_accuracy > 0.8  # held-out labels of a learnable linear reward
    assert all(math.isfinite(v) for v in stats.summary().values())
    assert np.all(stats.train_loss < math.log(2))  # better than chance


def test_holdout_flags_are_stable_and_near_one_over_e():
    n, k = 3000, 3
    pairs, labels = linear_problem(n + 500, seed=2, h=2, obs_dim=2)
    full = PreferenceDataset.from_labels(pairs, labels)
    model = RewardModel(
        (2,), 1, RewardModelConfig(ensemble_size=k, hidden_sizes=(4,)), seed=0, device="cpu"
    )
    first = PreferenceDataset(full.pairs[slice(0, n)], full.prefs[:n])
    model.fit(first, epochs=0)
    assert model.holdout.shape == (n, k)
    assert model.holdout.dtype == np.bool_
    snapshot = model.holdout.copy()
    assert abs(snapshot.mean() - 1 / math.e) < 0.05
    model.fit(full, epochs=1)
    assert model.holdout.shape == (n + 500, k)
    np.testing.assert_array_equal(model.holdout[:n], snapshot)
    # Members have different holdout sets.
    assert not np.array_equal(snapshot[:, 0], snapshot[:, 1])


def test_l2_adaptation():
    model = small_model(l2_init=1e-3, l2_step=2.0)
    ones = np.ones(3)
    model._adapt_l2(ones, np.array([1.6, 1.0, 1.3]))
    np.testing.assert_allclose(model.l2, [2e-3, 5e-4, 1e-3])
    model._adapt_l2(ones, np.array([np.nan, 1.2, 1.49]))  # NaN (no holdout) and in range
    np.testing.assert_allclose(model.l2, [2e-3, 5e-4, 1e-3])
    model._adapt_l2(2 * ones, np.array([3.2, 2.0, 2.1]))  # ratio 1.6, 1.0, 1.05
    np.testing.assert_allclose(model.l2, [4e-3, 2.5e-4, 5e-4])


def test_fit_raises_on_nan_inputs():
    pairs, labels = linear_problem(50, seed=3)
    obs = pairs.obs.copy()
    obs[:, 0, 0, 0] = np.nan
    data = PreferenceDataset.from_labels(ClipPairs(obs, pairs.acts, pairs.true_rewards), labels)
    model = RewardModel(
        (4,), 1, RewardModelConfig(ensemble_size=2, hidden_sizes=(8,)), seed=0, device="cpu"
    )
    with pytest.raises(FloatingPointError):
        model.fit(data)


def test_fit_rejects_empty_dataset():
    model = small_model()
    empty = PreferenceDataset(
        ClipPairs(np.zeros((0, 2, 3, 5)), np.zeros((0, 2, 3, 2)), np.zeros((0, 2, 3))),
        np.zeros(0, dtype=np.float32),
    )
    with pytest.raises(ValueError):
        model.fit(empty)


def states(m=400, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(m, 5)).astype(np.float32) * 2 + 1,
        rng.normal(size=(m, 2)).astype(np.float32),
    )


def test_normalisation_single_member_mean_zero_std_output_std():
    obs, acts = states()
    for output_std in (1.0, 2.5):
        model = small_model(k=1, output_std=output_std)
        model.update_normalization(obs, acts)
        r = model.reward(obs, acts)
        assert r.dtype == np.float32 and r.shape == (len(obs),)
        assert abs(r.mean()) < 1e-4
        assert r.std(ddof=1) == pytest.approx(output_std, rel=1e-3)


def test_normalisation_ensemble_members_standardised():
    obs, acts = states()
    model = small_model(k=3)
    model.update_normalization(obs, acts)
    r = model.reward(obs, acts)
    assert abs(r.mean()) < 1e-4
    k = 3
    raw = model.net.step_rewards(
        torch.as_tensor(obs).expand(k, *obs.shape), torch.as_tensor(acts).expand(k, *acts.shape)
    ).detach()
    normed = (raw - model.net.out_mean[:, None]) / model.net.out_std[:, None]
    torch.testing.assert_close(normed.mean(dim=1), torch.zeros(k), atol=1e-4, rtol=0)
    torch.testing.assert_close(normed.std(dim=1), torch.ones(k), atol=1e-4, rtol=0)
    np.testing.assert_allclose(r, normed.mean(dim=0).numpy(), atol=1e-5)


def test_numpy_fast_path_matches_torch_path():
    obs, acts = states()
    model = small_model(k=3, output_std=1.7)
    model.update_normalization(obs, acts)
    fast = model.reward(obs[:50], acts[:50])
    slow = model.net.normalized_reward(torch.as_tensor(obs[:50]), torch.as_tensor(acts[:50]))
    np.testing.assert_allclose(fast, slow.numpy(), atol=1e-5, rtol=1e-5)
    # After a training step the snapshot is refreshed.
    pairs, labels = linear_problem(64, seed=4, obs_dim=4)
    pairs = ClipPairs(
        np.concatenate([pairs.obs, pairs.obs[..., :1]], axis=-1),
        np.concatenate([pairs.acts, pairs.acts], axis=-1),
        pairs.true_rewards,
    )
    model.fit(PreferenceDataset.from_labels(pairs, labels), epochs=2)
    fast2 = model.reward(obs[:50], acts[:50])
    slow2 = model.net.normalized_reward(torch.as_tensor(obs[:50]), torch.as_tensor(acts[:50]))
    assert not np.allclose(fast, fast2)
    np.testing.assert_allclose(fast2, slow2.numpy(), atol=1e-5, rtol=1e-5)


def trained_model():
    pairs, labels = linear_problem(120, seed=5)
    model = RewardModel(
        (4,), 1, RewardModelConfig(ensemble_size=2, hidden_sizes=(8, 8)), seed=3, device="cpu"
    )
    model.fit(PreferenceDataset.from_labels(pairs, labels), epochs=2)
    model.update_normalization(pairs.obs.reshape(-1, 4), pairs.acts.reshape(-1, 1))
    return model, pairs


def test_save_load_round_trip(tmp_path):
    model, pairs = trained_model()
    path = tmp_path / "rm.pt"
    save_reward_model(model, path)
    loaded = load_reward_model(path, device="cpu")
    obs, acts = pairs.obs.reshape(-1, 4)[:100], pairs.acts.reshape(-1, 1)[:100]
    np.testing.assert_array_equal(loaded.reward(obs, acts), model.reward(obs, acts))
    np.testing.assert_array_equal(loaded.l2, model.l2)
    np.testing.assert_array_equal(loaded.holdout, model.holdout)
    assert loaded.holdout.shape == (120, 2)
    assert loaded.config == model.config
    np.testing.assert_allclose(loaded.member_preferences(pairs), model.member_preferences(pairs))
    assert not (tmp_path / "rm.tmp.pt").exists()


def test_restore_in_place_keeps_bound_scorers_and_refreshes_the_numpy_copy(tmp_path):
    model, pairs = trained_model()
    path = tmp_path / "rm.pt"
    save_reward_model(model, path)
    obs, acts = pairs.obs.reshape(-1, 4)[:100], pairs.acts.reshape(-1, 1)[:100]
    fresh = RewardModel((4,), 1, model.config, seed=3, device="cpu")
    score = fresh.reward  # what an environment wrapper holds
    before = score(obs, acts)  # builds the NumPy copy of the untrained weights
    restore_reward_model(fresh, path)
    np.testing.assert_array_equal(score(obs, acts), model.reward(obs, acts))
    assert not np.array_equal(score(obs, acts), before)
    other = RewardModel((4,), 1, replace(model.config, lr=0.5), seed=3, device="cpu")
    with pytest.raises(CheckpointError, match="another config"):
        restore_reward_model(other, path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_load_rejects_bad_files(tmp_path):
    model, _ = trained_model()
    good = tmp_path / "good.pt"
    save_reward_model(model, good)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint at all" * 10)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    plain = tmp_path / "plain.pt"
    torch.save({"x": 1}, plain)
    other_format = tmp_path / "other.pt"
    payload = torch.load(good, weights_only=True)
    payload["format"] = "someone.else"
    torch.save(payload, other_format)
    other_version = tmp_path / "version.pt"
    payload["format"] = torch.load(good, weights_only=True)["format"]
    payload["version"] = 99
    torch.save(payload, other_version)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps(object()))

    for path in (
        garbage,
        truncated,
        plain,
        other_format,
        other_version,
        pickled,
        tmp_path / "missing.pt",
        tmp_path,
    ):
        with pytest.raises(CheckpointError):
            load_reward_model(path, device="cpu")


def test_load_rejects_inconsistent_weights(tmp_path):
    model, _ = trained_model()
    good = tmp_path / "good.pt"
    save_reward_model(model, good)
    payload = torch.load(good, weights_only=True)
    payload["obs_shape"] = [7]
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError):
        load_reward_model(bad, device="cpu")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ensemble_size": 0},
        {"lr": -1.0},
        {"holdout_prob": 1.0},
        {"holdout_prob": 0.0},
        {"hidden_sizes": ()},
        {"random_answer_prob": 1.0},
        {"output_std": 0.0},
        {"l2_step": 1.0},
    ],
)
def test_reward_model_config_rejects_bad_values(kwargs):
    with pytest.raises(ValueError):
        RewardModelConfig(**kwargs)


def test_resolve_device():
    if torch.cuda.is_available():
        assert resolve_device("auto").type == "cuda"
    else:
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError):
        resolve_device("not-a-device")


def test_same_seed_same_model_different_seed_differs():
    obs, acts = states(20)
    a, b, c = small_model(seed=4), small_model(seed=4), small_model(seed=5)
    np.testing.assert_array_equal(a.reward(obs, acts), b.reward(obs, acts))
    assert not np.allclose(a.reward(obs, acts), c.reward(obs, acts))
