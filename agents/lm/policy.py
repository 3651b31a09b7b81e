"""A causal language model as a policy: sampling continuations and their log-likelihood.

:class:`CausalLMPolicy` holds ``S`` models (one per seed, the same architecture and
tokenizer) and implements :class:`~prefbench.agents.offline.objectives.SequencePolicy`, so
the offline objectives written for control train it unchanged. Tokens follow one layout
everywhere:

- a sequence is ``<|endoftext|>`` (as BOS), the prompt's tokens, the response's tokens;
- batches are right-padded to ``T`` tokens behind an ``attention_mask``;
- ``targets`` equal ``input_ids`` on response tokens and ``IGNORE`` (-100, transformers'
  convention) on the BOS, prompt and padding, so a log-likelihood sums over the response
  only.

Any local Hugging Face causal-LM folder plugs in (:func:`load_causal_lm`); nothing is
downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from prefbench.agents.lm import deps
from prefbench.envs.data import CheckpointError

IGNORE = -100


def load_causal_lm(path: str | Path, device: str = "cpu") -> tuple[Any, Any]:
    """The model and tokenizer of a local Hugging Face causal-LM folder, in fp32.

    Raises:
        CheckpointError: If the folder does not exist, is not a causal LM, or its tokenizer
            does not fit the model's vocabulary.
    """
    tf = deps.transformers()
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a Hugging Face model folder (no config.json)")
    try:
        config = tf.AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path}: unreadable model config ({exc})") from exc
    if getattr(config, "is_encoder_decoder", False):
        raise CheckpointError(f"{path} holds an encoder-decoder model, not a causal LM")
    try:
        model = tf.AutoModelForCausalLM.from_pretrained(
            path, local_files_only=True, dtype=torch.float32
        )
        tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} is not a causal language model ({exc})") from exc
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        raise CheckpointError(
            f"{path}: the tokenizer has {len(tokenizer)} tokens, the model embeds "
            f"{model.get_input_embeddings().num_embeddings}"
        )
    if tokenizer.eos_token_id is None:
        raise CheckpointError(f"{path}: the tokenizer has no end-of-text token")
    return model.to(device), tokenizer


@dataclass(frozen=True)
class TokenBatch:
    """Prompts and responses as right-padded token tensors (see the module docstring).

    Attributes:
        input_ids: ``(B, T)`` int64.
        attention_mask: ``(B, T)`` int64, 1 on real tokens.
        targets: ``(B, T)`` int64, the response tokens and :data:`IGNORE` elsewhere.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    targets: torch.Tensor

    @property
    def response_tokens(self) -> torch.Tensor:
        """``(B,)`` response tokens per sequence."""
        return (self.targets != IGNORE).sum(dim=1)


def encode_pairs(
    tokenizer: Any,
    prompts: Sequence[str],
    responses: Sequence[str] | Sequence[Sequence[int]],
    max_length: int,
) -> TokenBatch:
    """Token tensors of ``(prompt, response)`` pairs; responses as text or token ids.

    Raises:
        ValueError: If lengths differ or a sequence is longer than ``max_length``.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    bos = tokenizer.eos_token_id
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"]
    rows, lengths = [], []
    for p, r in zip(prompt_ids, responses, strict=True):
        r_ids = tokenizer(r, add_special_tokens=False)["input_ids"] if isinstance(r, str) else r
        row = [bos, *p, *r_ids]
        if len(row) > max_length:
            raise ValueError(
                f"a prompt and response of {len(row)} tokens exceed the model's {max_length}"
            )
        rows.append(row)
        lengths.append(1 + len(p))
    t = max(len(r) for r in rows)
    ids = torch.full((len(rows), t), bos, dtype=torch.int64)
    mask = torch.zeros((len(rows), t), dtype=torch.int64)
    targets = torch.full((len(rows), t), IGNORE, dtype=torch.int64)
    for i, (row, start) in enumerate(zip(rows, lengths, strict=True)):
        ids[i, : len(row)] = torch.as_tensor(row)
        mask[i, : len(row)] = 1
        targets[i, start : len(row)] = ids[i, start : len(row)]
    return TokenBatch(ids, mask, targets)


def token_log_probs(
    model: Any, batch: Mapping[str, torch.Tensor], *, hidden: bool = False
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """``(B, T - 1)`` log p of each next token under ``model``, 0 where it is not a target.

    Position ``t`` scores token ``t + 1`` given tokens ``0..t``. With ``hidden`` also the
    last layer's ``(B, T, H)`` hidden states (for a value head).
    """
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        output_hidden_states=hidden,
    )
    targets = batch["targets"][:, 1:]
    logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    picked = picked * (targets != IGNORE)
    return (picked, out.hidden_states[-1]) if hidden else picked


def sequence_log_prob(model: Any, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """``(B,)`` sum of log p(target token | earlier tokens) over each row's targets.

    ``batch`` has ``input_ids``, ``attention_mask`` and ``targets``, each ``(B, T)``.
    """
    logp = token_log_probs(model, batch)
    assert isinstance(logp, torch.Tensor)
    return logp.sum(dim=1)


class CausalLMPolicy:
    """``S`` causal LMs sharing one tokenizer.

    Args:
        models: One model per seed.
        tokenizer: Their tokenizer.
        max_length: Longest sequence (the models' context).
    """

    def __init__(self, models: Sequence[Any], tokenizer: Any, max_length: int) -> None:
        if not models:
            raise ValueError("give at least one model")
        self.models = list(models)
        self.tokenizer = tokenizer
        self.max_length = int(max_length)

    @classmethod
    def from_path(cls, path: str | Path, n_seeds: int = 1, device: str = "cpu") -> CausalLMPolicy:
        """``n_seeds`` copies of the model in ``path`` (each trains on its own)."""
        loaded = [load_causal_lm(path, device) for _ in range(n_seeds)]
        tokenizer = loaded[0][1]
        context = getattr(loaded[0][0].config, "n_positions", None) or getattr(
            loaded[0][0].config, "max_position_embeddings", 1024
        )
        return cls([m for m, _ in loaded], tokenizer, context)

    @property
    def n_seeds(self) -> int:
        """``S``."""
        return len(self.models)

    def encode(
        self, prompts: Sequence[str], responses: Sequence[str] | Sequence[Sequence[int]]
    ) -> TokenBatch:
        """:func:`encode_pairs` with this policy's tokenizer and context."""
        return encode_pairs(self.tokenizer, prompts, responses, self.max_length)

    def log_prob(self, inputs: Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``(S, B)`` log-likelihood of the response tokens; inputs and targets ``(S, B, T)``."""
        return torch.stack(
            [
                sequence_log_prob(
                    model,
                    {
                        "input_ids": inputs["input_ids"][s],
                        "attention_mask": inputs["attention_mask"][s],
                        "targets": targets[s],
                    },
                )
                for s, model in enumerate(self.models)
            ]
        )

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        max_new_tokens: Sequence[int],
        seed: int,
        *,
        seed_index: int = 0,
        temperature: float = 1.0,
        top_k: int = 0,
        batch_size: int = 64,
    ) -> list[list[int]]:
        """Sampled response token ids, one list per prompt, with model ``seed_index``.

        A response stops at its prompt's ``max_new_tokens`` or after an end-of-text token,
        which it then ends with (as trl's completions do): stopping is an action the
        methods learn too. The same seed gives the same tokens.

        Raises:
            ValueError: If a prompt leaves no room in the context.
        """
        if len(max_new_tokens) != len(prompts):
            raise ValueError("give one max_new_tokens per prompt")
        if not temperature > 0 or top_k < 0:
            raise ValueError("temperature must be > 0 and top_k >= 0")
        model, tok = self.models[seed_index], self.tokenizer
        model.eval()
        eos = tok.eos_token_id
        out: list[list[int]] = []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            lengths = list(max_new_tokens[start : start + batch_size])
            ids = [[eos, *p] for p in tok(chunk, add_special_tokens=False)["input_ids"]]
            width, longest = max(len(r) for r in ids), max(lengths)
            if width + longest > self.max_length:
                raise ValueError(
                    f"a prompt of {width} tokens and {longest} new ones exceed the "
                    f"model's {self.max_length}"
                )
            # Left padding: every row's next token is at the same position.
            input_ids = torch.full((len(ids), width), eos, dtype=torch.int64)
            mask = torch.zeros((len(ids), width), dtype=torch.int64)
            for i, row in enumerate(ids):
                input_ids[i, width - len(row) :] = torch.as_tensor(row)
                mask[i, width - len(row) :] = 1
            device = next(model.parameters()).device
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + start)
                gen = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=mask.to(device),
                    do_sample=True,
                    temperature=temperature,
                    top_k=top_k,
                    top_p=1.0,
                    max_new_tokens=longest,
                    pad_token_id=eos,
                    eos_token_id=eos,
                )
            for row, n in zip(gen[:, width:].tolist(), lengths, strict=True):
                row = row[:n]
                out.append(row[: row.index(eos) + 1] if eos in row else row)
        return out

    def decode(self, responses: Sequence[Sequence[int]]) -> list[str]:
        """Text of response token ids (without the end-of-text token)."""
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in responses]
