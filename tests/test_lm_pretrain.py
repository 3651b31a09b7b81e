"""Base models of text tasks: tokenizer, training, the cached folder, resume and bad input."""

from __future__ import annotations

import json

import pytest
import torch

pytest.importorskip("transformers")

from lm_tiny import tiny_config  # noqa: E402

from prefbench.agents.lm.config import PretrainConfig, default_config  # noqa: E402
from prefbench.agents.lm.pretrain import Pretrainer, model_dir, read_info  # noqa: E402
from prefbench.agents.lm.tokenizer import BYTE_VOCAB, EOS, train_tokenizer  # noqa: E402
from prefbench.benchmarks.cli import main  # noqa: E402
from prefbench.envs.data import CheckpointError  # noqa: E402
from prefbench.envs.text_tasks import get_text_task  # noqa: E402

PARITY = get_text_task("digit-parity")
TINY = tiny_config()


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


def test_char_tokenizer_is_bytes_and_round_trips():
    tok = train_tokenizer(["0123", "hello world"], "char")
    assert len(tok) == BYTE_VOCAB and tok.convert_tokens_to_ids(EOS) == 0
    ids = tok("1234 hi", add_special_tokens=False)["input_ids"]
    assert len(ids) == 7 and tok.decode(ids) == "1234 hi"
    bpe = train_tokenizer(["the movie was great. "] * 50, "bpe", vocab_size=300)
    assert bpe.tokenize("the movie was") == ["the", "Ġmovie", "Ġwas"]  # merged words
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["x"], "bpe", vocab_size=10)


def test_pretrain_writes_a_hugging_face_folder_once():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lines = []
    path = Pretrainer(PARITY, TINY, lines.append).build({"command": "test"})
    assert path == model_dir(PARITY, TINY) and not path.with_name(path.name + ".partial").exists()
    info = read_info(path)
    assert info["command"] == "test" and info["config"]["steps"] == 20
    assert [h["step"] for h in info["history"]] == [10, 20]
    assert info["tokens_trained"] == 20 * 8 * 16
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    assert model.config.n_layer == 1 and len(tok) == BYTE_VOCAB
    # The loss fell from its start (ln 257 = 5.55 for uniform bytes).
    assert info["history"][-1]["train_loss"] < 5.0
    # A second build finds it and trains nothing.
    again: list[str] = []
    assert Pretrainer(PARITY, TINY, again.append).build() == path and again == []


def test_a_killed_pretrain_resumes_to_the_same_model(tmp_path, monkeypatch):
    full = Pretrainer(PARITY, TINY, lambda _: None).build()
    reference = {k: v.clone() for k, v in _weights(full).items()}

    monkeypatch.setenv("PREFBENCH_CACHE", str(tmp_path / "other"))

    def killed_at_first_checkpoint(line: str) -> None:
        if "step 10/20" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Pretrainer(PARITY, TINY, killed_at_first_checkpoint).build()
    lines: list[str] = []
    path = Pretrainer(PARITY, TINY, lines.append).build()
    assert any("resuming at step 10" in line for line in lines)
    for key, value in _weights(path).items():
        torch.testing.assert_close(value, reference[key], rtol=0, atol=0, msg=key)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(path / "model.safetensors")


def test_corrupt_checkpoint_and_foreign_folder_are_rejected(tmp_path):
    builder = Pretrainer(PARITY, TINY, lambda _: None)
    builder.partial.mkdir(parents=True)
    (builder.partial / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        builder.build()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "prefbench.json").write_text(json.dumps({"format": "x"}))
    with pytest.raises(CheckpointError, match="not a prefbench base-model record"):
        read_info(tmp_path / "foreign")


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="must divide by n_head"):
        PretrainConfig(n_embd=10, n_head=4)
    with pytest.raises(ValueError, match="block_size must be <= n_positions"):
        PretrainConfig(block_size=64, n_positions=32)
    assert default_config(PARITY, steps=5).steps == 5
    assert default_config(PARITY, steps=None) == default_config(PARITY)


def test_cli_pretrain_and_its_errors(capsys):
    flags = ["--n-layer", "1", "--n-embd", "16", "--n-head", "2", "--n-positions", "32"]
    flags += ["--block-size", "16", "--batch-size", "4", "--steps", "4", "--eval-every", "2"]
    assert main(["lm", "pretrain", "digit-parity", "--threads", "1", *flags]) == 0
    assert "final: parameters" in capsys.readouterr().out
    assert main(["lm", "pretrain", "no-such-task"]) == 2
    assert "unknown text task 'no-such-task'" in capsys.readouterr().err
    assert main(["lm", "pretrain", "digit-parity", "--n-embd", "10", "--n-head", "4"]) == 2
    assert "must divide by n_head" in capsys.readouterr().err
