"""Causal-LM policies: loading, the token layout, response-only likelihood and sampling."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from lm_tiny import tiny_config  # noqa: E402

from prefbench.agents.lm.policy import (  # noqa: E402
    IGNORE,
    CausalLMPolicy,
    encode_pairs,
    load_causal_lm,
    sequence_log_prob,
)
from prefbench.agents.lm.pretrain import Pretrainer  # noqa: E402
from prefbench.agents.offline.objectives import SequencePolicy  # noqa: E402
from prefbench.envs.data import CheckpointError  # noqa: E402
from prefbench.envs.text_tasks import get_text_task  # noqa: E402

PARITY = get_text_task("digit-parity")
TINY = tiny_config(steps=10)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("PREFBENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
    torch.set_num_threads(1)
    path = Pretrainer(PARITY, TINY, lambda _: None).build()
    mp.undo()
    return path


def test_targets_cover_the_response_only(model_path):
    _, tok = load_causal_lm(model_path)
    batch = encode_pairs(tok, ["12", "3"], ["45", "678"], max_length=32)
    # <eos> 1 2 4 5 | <eos> 3 6 7 8: byte tokens, right-padded.
    assert batch.input_ids.shape == (2, 5)
    assert batch.attention_mask.tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    ids = batch.input_ids
    assert batch.targets[0].tolist() == [IGNORE, IGNORE, IGNORE, ids[0, 3], ids[0, 4]]
    assert batch.targets[1].tolist() == [IGNORE, IGNORE, ids[1, 2], ids[1, 3], ids[1, 4]]
    padded = encode_pairs(tok, ["1", "1234"], ["2", "5"], max_length=32)
    assert padded.attention_mask[0].tolist() == [1, 1, 1, 0, 0, 0]
    assert padded.response_tokens.tolist() == [1, 1]
    with pytest.raises(ValueError, match="exceed the model's 4"):
        encode_pairs(tok, ["1234"], ["5"], max_length=4)


def test_log_prob_is_the_response_tokens_and_ignores_padding(model_path):
    model, tok = load_causal_lm(model_path)
    alone = encode_pairs(tok, ["1"], ["23"], 32)
    padded = encode_pairs(tok, ["1", "98765"], ["23", "4"], 32)
    a = sequence_log_prob(model, vars(alone))
    b = sequence_log_prob(model, vars(padded))
    torch.testing.assert_close(a[0], b[0], rtol=1e-5, atol=1e-5)
    # By hand: log p(2 | <eos> 1) + log p(3 | <eos> 1 2).
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=alone.input_ids).logits[0], dim=-1)
    ids = alone.input_ids[0]
    expected = logp[1, ids[2]] + logp[2, ids[3]]
    torch.testing.assert_close(a[0], expected, rtol=1e-5, atol=1e-5)


def test_policy_is_a_sequence_policy_with_one_model_per_seed(model_path):
    policy = CausalLMPolicy.from_path(model_path, n_seeds=2)
    assert isinstance(policy, SequencePolicy) and policy.n_seeds == 2
    assert policy.max_length == 32
    batch = policy.encode(["12", "3"], ["45", "6"])
    inputs = {
        k: torch.stack([v, v])
        for k, v in (("input_ids", batch.input_ids), ("attention_mask", batch.attention_mask))
    }
    out = policy.log_prob(inputs, torch.stack([batch.targets, batch.targets]))
    assert out.shape == (2, 2)
    torch.testing.assert_close(out[0], out[1])  # the same weights loaded twice
    out.sum().backward()
    assert policy.models[0].transformer.wte.weight.grad is not None


def test_generation_is_seeded_and_matches_the_likelihood(model_path):
    policy = CausalLMPolicy.from_path(model_path)
    prompts = ["1234", "9", "55555"]
    a = policy.generate(prompts, [6, 3, 8], seed=1)
    assert a == policy.generate(prompts, [6, 3, 8], seed=1)
    assert a != policy.generate(prompts, [6, 3, 8], seed=2)
    assert [len(r) <= n for r, n in zip(a, [6, 3, 8], strict=True)] == [True] * 3
    eos = policy.tokenizer.eos_token_id
    assert all(eos not in r[:-1] for r in a)  # an end-of-text token only ends a response
    assert not any("<|endoftext|>" in text for text in policy.decode(a))
    # Left-padded sampling and right-padded scoring agree on the sampled tokens' logits.
    model, tok = policy.models[0], policy.tokenizer
    enc = encode_pairs(tok, ["1", "98765"], [[], []], 32)
    left = torch.tensor(
        [[0, 0, 0, 0, *enc.input_ids[0, :2].tolist()], enc.input_ids[1, :6].tolist()]
    )
    mask = torch.tensor([[0, 0, 0, 0, 1, 1], [1] * 6])
    with torch.no_grad():
        out = model.generate(
            input_ids=left,
            attention_mask=mask,
            do_sample=False,
            max_new_tokens=3,
            pad_token_id=0,
            eos_token_id=None,
            output_logits=True,
            return_dict_in_generate=True,
        )
    new = out.sequences[:, 6:]
    step_logp = torch.stack([torch.log_softmax(x, -1) for x in out.logits], dim=1)
    picked = step_logp.gather(-1, new.unsqueeze(-1)).squeeze(-1).sum(1)
    scored = sequence_log_prob(model, vars(encode_pairs(tok, ["1", "98765"], new.tolist(), 32)))
    torch.testing.assert_close(scored, picked, rtol=1e-4, atol=1e-4)


def test_bad_model_folders_are_rejected(tmp_path, model_path):
    with pytest.raises(CheckpointError, match="no config.json"):
        load_causal_lm(tmp_path / "missing")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_causal_lm(tmp_path / "broken")
    policy = CausalLMPolicy.from_path(model_path)
    with pytest.raises(ValueError, match="exceed the model's 32"):
        policy.generate(["1" * 30], [8], seed=0)


def test_folders_that_are_not_causal_lms_or_mismatch_are_rejected(tmp_path, model_path):
    import shutil

    import transformers

    # An encoder-decoder and an encoder-only model are not causal LMs.
    t5 = transformers.T5Config(vocab_size=300, d_model=8, d_ff=8, num_layers=1, num_heads=1)
    t5.save_pretrained(tmp_path / "t5")
    with pytest.raises(CheckpointError, match="encoder-decoder"):
        load_causal_lm(tmp_path / "t5")
    encoder = transformers.DistilBertConfig(
        vocab_size=300, dim=8, hidden_dim=8, n_layers=1, n_heads=1
    )
    transformers.DistilBertModel(encoder).save_pretrained(tmp_path / "encoder")
    with pytest.raises(CheckpointError, match="not a causal language model"):
        load_causal_lm(tmp_path / "encoder")
    # A tokenizer with more tokens than the model embeds.
    small = tmp_path / "small"
    shutil.copytree(model_path, small)
    model, tokenizer = load_causal_lm(model_path)
    model.resize_token_embeddings(len(tokenizer) - 1)
    model.save_pretrained(small)
    with pytest.raises(CheckpointError, match="the tokenizer has"):
        load_causal_lm(small)
