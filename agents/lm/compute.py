"""Compute accounting of the text track: FLOPs by the usual transformer estimates.

With ``N`` the non-embedding parameters of a model (Kaplan et al. 2020), a forward pass
costs about ``2N`` FLOPs per token and a training step (forward and backward) ``6N``.
Every method counts what it spends: sampling (``2N`` per generated token, prompt tokens
included once per sequence), scoring by the reward model or the reference
(``2N_rm``/``2N_ref`` per token read), training (``6N`` per token of each trained
sequence) and value passes. :class:`FlopCounter` keeps the total by kind, so a report
can show each method's compute and PPO's share.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

KINDS = ("generate", "score", "train")


def non_embedding_parameters(model: Any) -> int:
    """Parameters of ``model`` outside its token and position embeddings.

    Tied output heads share the token embedding, so they are not counted either.
    """
    embedding_ids = set()
    get_in = getattr(model, "get_input_embeddings", None)
    if callable(get_in) and get_in() is not None:
        embedding_ids.add(id(get_in().weight))
    for module in model.modules():
        name = type(module).__name__
        if name == "Embedding":
            embedding_ids.add(id(module.weight))
    return sum(p.numel() for p in model.parameters() if id(p) not in embedding_ids)


@dataclass
class FlopCounter:
    """FLOPs spent so far, by kind (``generate``, ``score``, ``train``).

    Attributes:
        flops: Kind -> FLOPs.
        tokens: Kind -> tokens.
    """

    flops: Counter[str] = field(default_factory=Counter)
    tokens: Counter[str] = field(default_factory=Counter)

    def add(self, kind: str, parameters: int, tokens: int) -> None:
        """Count ``tokens`` passed through a model of ``parameters`` non-embedding weights.

        Raises:
            ValueError: For an unknown kind or negative counts.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if parameters < 0 or tokens < 0:
            raise ValueError("parameters and tokens must be >= 0")
        per_token = 6 if kind == "train" else 2
        self.flops[kind] += per_token * parameters * tokens
        self.tokens[kind] += tokens

    @property
    def total(self) -> int:
        """All FLOPs."""
        return int(sum(self.flops.values()))

    def as_dict(self) -> dict[str, float]:
        """``flops``, ``flops_<kind>`` and ``tokens_<kind>`` for the record."""
        out: dict[str, float] = {"flops": float(self.total)}
        for kind in KINDS:
            out[f"flops_{kind}"] = float(self.flops[kind])
            out[f"tokens_{kind}"] = float(self.tokens[kind])
        return out
