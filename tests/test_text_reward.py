"""The reward ensemble on text: the tokens encoder, member independence and learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefbench.agents.reward_model import RewardModel, RewardModelConfig
from prefbench.agents.text_encoder import PAD
from prefbench.envs.data import ClipPairs, PreferenceDataset
from prefbench.envs.teachers import make_teacher

T = 12  # a prompt digit, then up to 11 response digits


def config(**kw) -> RewardModelConfig:
    base = dict(
        encoder="tokens",
        encoder_kwargs={"vocab_size": 10, "n_embd": 32, "n_layer": 1, "n_head": 2},
        use_actions=False,
        input_norm=False,
        ensemble_size=3,
        lr=1e-3,
        batch_size=32,
    )
    return RewardModelConfig(**{**base, **kw})


def texts(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Digit texts (prompt digit + response, right-padded) and their parity score."""
    ids = np.full((n, T), PAD, dtype=np.int64)
    scores = np.zeros(n, dtype=np.float32)
    for i in range(n):
        length = int(rng.integers(4, T))
        row = rng.integers(0, 10, size=length)
        ids[i, :length] = row
        scores[i] = np.mean(row[1:] % 2 == row[0] % 2)
    return ids, scores


def pairs(n: int, seed: int) -> ClipPairs:
    rng = np.random.default_rng(seed)
    ids, scores = texts(2 * n, rng)
    obs = ids.reshape(n, 2, 1, T)
    return ClipPairs(obs, np.zeros((n, 2, 1, 0), np.float32), scores.reshape(n, 2, 1))


def test_members_are_independent_and_padding_changes_nothing():
    torch.manual_seed(0)
    model = RewardModel((T,), 0, config(), seed=0, device="cpu")
    ids, _ = texts(16, np.random.default_rng(0))
    obs = torch.as_tensor(ids)[None].expand(3, -1, -1)
    net = model.net
    before = net.step_rewards(obs, None).detach()  # (K, M)
    with torch.no_grad():
        for p in net.encoder.blocks[1].parameters():
            p.add_(1.0)
        net.encoder.tokens[1].weight.mul_(3.0)
    after = net.step_rewards(obs, None).detach()
    torch.testing.assert_close(after[[0, 2]], before[[0, 2]], rtol=0, atol=0)
    assert not torch.allclose(after[1], before[1])
    # A shorter text padded to T scores as itself: padding is invisible.
    short = torch.full((3, 1, T), PAD)
    short[:, 0, :4] = torch.tensor([1, 3, 5, 7])
    longer = short.clone()
    longer[:, 0, 4] = 2
    r_short, r_long = net.step_rewards(short, None), net.step_rewards(longer, None)
    wider = torch.full((3, 1, T), PAD)
    wider[:, 0, :4] = torch.tensor([1, 3, 5, 7])
    torch.testing.assert_close(net.step_rewards(wider, None), r_short)
    assert not torch.allclose(r_short, r_long)
    # Trailing padding columns are dropped per batch: a text alone (4 columns read) and
    # beside a longer one (5 read) scores the same.
    both = torch.cat([short, longer], dim=1)
    torch.testing.assert_close(net.step_rewards(both, None)[:, :1], r_short, rtol=1e-3, atol=1e-4)


def test_bad_token_ids_are_rejected():
    model = RewardModel((T,), 0, config(), seed=0, device="cpu")
    bad = torch.full((3, 1, T), PAD)
    with pytest.raises(ValueError, match="at least one token"):
        model.net.step_rewards(bad, None)
    bad[:, 0, 0] = 10
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        model.net.step_rewards(bad, None)
    with pytest.raises(ValueError, match="input_norm needs the flatten encoder"):
        config(input_norm=True)


def test_text_reward_model_learns_parity_preferences():
    torch.set_num_threads(1)
    train = pairs(600, 0)
    labels = make_teacher("oracle", np.random.default_rng(0)).label(train)
    model = RewardModel((T,), 0, config(), seed=0, device="cpu")
    model.fit(PreferenceDataset.from_labels(train, labels), epochs=60)
    test = pairs(400, 1)
    test_labels = make_teacher("oracle", np.random.default_rng(1)).label(test)
    acc = model.preference_accuracy(test, test_labels.prefs)
    # Measured 0.886 (seed 0, 600 labels, 60 epochs; 2 layers: 0.926); chance is 0.5.
    assert acc > 0.8, acc
