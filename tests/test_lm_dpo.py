"""DPO's loss against trl 1.16's DPOTrainer on one batch, and its pair handling.

The reference number comes from trl 1.16.0 (transformers 5.25.0, torch 2.13.0 CPU) in its
own virtual environment: ``DPOTrainer(model, ref_model, DPOConfig(beta=0.1, bf16=False,
gradient_checkpointing=False, use_cpu=True))`` on the two pairs below with the models
built by :func:`tiny`, ``trainer._compute_loss(model, batch, False)`` on its first batch
(policy in eval mode), which printed 1.6688685417175293. trl tokenises prompt and
completion apart and appends the end-of-text token to each completion; the token ids
here are the ones its batch held.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from prefbench.agents.lm.dpo import DPOConfig, decided_pairs, dpo_loss  # noqa: E402
from prefbench.agents.lm.policy import encode_pairs, sequence_log_prob  # noqa: E402
from prefbench.agents.lm.tokenizer import train_tokenizer  # noqa: E402

TRL_LOSS = 1.6688685417175293


def tiny():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=257,
        n_positions=32,
        n_embd=16,
        n_layer=1,
        n_head=2,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config)


def test_dpo_loss_matches_trl_on_one_batch():
    policy, reference = tiny(), tiny()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.5 * torch.randn_like(p))
    tok = train_tokenizer(["0123456789"], "char")
    prompts = ["1234", "97"]
    chosen = [[16, 18, 20, 22, 24, 0], [17, 19, 21, 23, 25, 17, 19, 21, 0]]  # "02468", ...
    rejected = [[17, 19, 21, 23, 25, 0], [18, 0]]  # "13579", "2", each + end of text
    assert tok("02468", add_special_tokens=False)["input_ids"] == chosen[0][:-1]
    batch = vars(encode_pairs(tok, prompts + prompts, chosen + rejected, 32))
    policy.eval()
    reference.eval()
    logp = sequence_log_prob(policy, batch)
    ref = sequence_log_prob(reference, batch)
    loss = dpo_loss(logp[:2], logp[2:], ref[:2], ref[2:], beta=0.1)
    assert float(loss.detach()) == pytest.approx(TRL_LOSS, rel=1e-5)


def test_dpo_loss_by_hand_and_bad_values():
    z = torch.zeros(3)
    assert float(dpo_loss(z, z, z, z, 0.1)) == pytest.approx(np.log(2))
    loss = dpo_loss(torch.tensor([2.0]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 0.5)
    assert float(loss) == pytest.approx(-np.log(1 / (1 + np.exp(-1.0))))
    with pytest.raises(FloatingPointError):
        dpo_loss(torch.tensor([float("nan")]), z[:1], z[:1], z[:1], 0.1)
    with pytest.raises(ValueError, match="beta and lr"):
        DPOConfig(beta=0)


def test_decided_pairs_order_by_preference_and_drop_ties():
    pairs = np.array([[0, 1], [2, 3], [4, 5]])
    out = decided_pairs(pairs, np.array([1.0, 0.5, 0.0]))
    assert out.tolist() == [[0, 1], [5, 4]]
