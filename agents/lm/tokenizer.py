"""Tokenizers trained here: byte-level BPE on a task's corpus, as GPT-2's but small.

``char`` tasks get the 256 byte tokens and no merges (one token per character of ASCII
text); ``bpe`` tasks get merges up to the task's ``vocab_size``. Either way the one
special token ``<|endoftext|>`` starts every text and ends every generation, and pads
(always behind an attention mask). The result is a transformers tokenizer, saved beside
the model so that the checkpoint folder loads with ``AutoTokenizer``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prefbench.agents.lm import deps

EOS = "<|endoftext|>"
#: Byte tokens of the byte-level alphabet, plus :data:`EOS`.
BYTE_VOCAB = 257


def train_tokenizer(texts: Iterable[str], kind: str, vocab_size: int = 0) -> Any:
    """A transformers fast tokenizer trained on ``texts``.

    Args:
        texts: The corpus (its ``train`` split).
        kind: ``char`` (bytes only) or ``bpe``.
        vocab_size: Target vocabulary of ``bpe`` (at least :data:`BYTE_VOCAB`).

    Raises:
        ValueError: For another kind or a vocabulary below the byte alphabet.
    """
    tk = deps.tokenizers()
    if kind == "char":
        vocab_size = BYTE_VOCAB
    elif kind != "bpe":
        raise ValueError(f"tokenizer kind must be char or bpe, got {kind!r}")
    if vocab_size < BYTE_VOCAB:
        raise ValueError(f"vocab_size must be >= {BYTE_VOCAB}, got {vocab_size}")
    tok = tk.Tokenizer(tk.models.BPE())
    tok.pre_tokenizer = tk.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tk.decoders.ByteLevel()
    trainer = tk.trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=tk.pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return wrap(tok)


def wrap(tok: Any) -> Any:
    """A transformers tokenizer around a ``tokenizers.Tokenizer`` (EOS doubles as BOS, pad)."""
    return deps.transformers().PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS
    )
