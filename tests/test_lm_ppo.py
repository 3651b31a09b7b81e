"""PPO for language models: the KL-penalised rewards and advantages by hand."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from prefbench.agents.lm.ppo import PPOConfig, gae, kl_penalised_rewards, whiten  # noqa: E402

# Two rows of length 5; response tokens at positions 1-3 and 2-4.
MASK = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)


def test_rewards_penalise_the_log_ratio_and_credit_the_last_token():
    logp = torch.tensor([[0.0, -1.0, -2.0, -1.0, 0.0], [0.0, 0.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[0.0, -2.0, -2.0, -3.0, 0.0], [0.0, 0.0, -1.0, -2.0, 0.0]])
    r = kl_penalised_rewards(logp, ref, MASK, torch.tensor([10.0, -4.0]), kl_coef=0.5)
    expected = torch.tensor([[0.0, -0.5, 0.0, -1.0 + 10.0, 0.0], [0.0, 0.0, 0.0, -0.5, 0.5 - 4.0]])
    torch.testing.assert_close(r, expected)


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    values = torch.tensor([[9.0, 0.5, 1.0, 1.5, 9.0], [9.0, 9.0, 0.0, 0.0, 0.0]])
    # gamma = lam = 1: advantage = rewards to go - value, and returns = rewards to go.
    adv, ret = gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    torch.testing.assert_close(ret, torch.tensor([[0, 3, 2, 2, 0], [0, 0, 1, 1, 1]]).float())
    torch.testing.assert_close(adv, ret - values * MASK)
    # lam = 0: one-step TD errors; the value after the last token is 0.
    adv0, _ = gae(rewards, values, MASK, gamma=0.9, lam=0.0)
    row0 = [0.0, 1 + 0.9 * 1.0 - 0.5, 0 + 0.9 * 1.5 - 1.0, 2.0 - 1.5, 0.0]
    torch.testing.assert_close(adv0[0], torch.tensor(row0))
    # gamma 0.9, lam 0.5 on row 1 (values 0): deltas 0, 0, 1; A_4 = 1, A_3 = 0.45, A_2 = 0.2025.
    adv_h, _ = gae(rewards, torch.zeros_like(values), MASK, gamma=0.9, lam=0.5)
    torch.testing.assert_close(adv_h[1], torch.tensor([0.0, 0.0, 0.2025, 0.45, 1.0]))


def test_whiten_over_the_mask_only():
    x = torch.tensor([[5.0, 1.0, 2.0, 3.0, -7.0]])
    m = torch.tensor([[False, True, True, True, False]])
    w = whiten(x, m)
    assert w[0, 0] == 0 and w[0, 4] == 0
    assert float(w[m].mean()) == pytest.approx(0.0, abs=1e-6)
    assert float(w[m].pow(2).mean()) == pytest.approx(1.0, rel=1e-4)


def test_bad_ppo_settings_are_rejected():
    with pytest.raises(ValueError, match="mini_batch_size must be <= batch_size"):
        PPOConfig(batch_size=4, mini_batch_size=8)
    with pytest.raises(ValueError, match="gamma"):
        PPOConfig(gamma=0)
