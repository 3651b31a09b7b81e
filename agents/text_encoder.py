"""A token-sequence encoder for the reward ensemble: the text tasks' reward model.

Registered as the ``tokens`` encoder of :data:`prefbench.agents.encoders.ENCODERS`, it
makes the Bradley-Terry ensemble of the control tracks a text reward model unchanged: a
text is one "step" whose observation is its ``(T,)`` token ids, right-padded with
:data:`PAD` (-1), and a labelled pair is a pair of one-step clips (the continuations of
one prompt, each with its prompt). Each member has its own token and position
embeddings and its own small causal transformer
(:class:`~prefbench.agents.offline.transformer.CausalTransformer`, GPT-2's blocks); a
text's feature is the hidden state of its last real token, as in GPT-2 reward models,
which the ensemble's MLP trunk and head turn into a score.
"""

from __future__ import annotations

import torch
from torch import nn

from prefbench.agents.offline.transformer import CausalTransformer

#: Token id marking padding in a text observation.
PAD = -1


class TokenEncoder(nn.Module):
    """``(K, M, T)`` int token ids -> ``(K, M, n_embd)`` features, one transformer per member.

    Args:
        n_members: ``K``.
        obs_shape: ``(T,)``, the longest text in tokens.
        vocab_size: Token ids are in ``[0, vocab_size)`` (or :data:`PAD`).
        n_embd: Width.
        n_layer: Transformer blocks per member.
        n_head: Attention heads.
        dropout: Dropout in the transformer.
    """

    def __init__(
        self,
        n_members: int,
        obs_shape: tuple[int, ...],
        *,
        vocab_size: int,
        n_embd: int = 64,
        n_layer: int = 2,
        n_head: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(obs_shape) != 1 or obs_shape[0] < 1:
            raise ValueError(f"the tokens encoder reads (T,) token ids, got shape {obs_shape}")
        if vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
        self.n_members = n_members
        self.vocab_size = vocab_size
        self.out_dim = n_embd
        t = obs_shape[0]
        self.tokens = nn.ModuleList(nn.Embedding(vocab_size, n_embd) for _ in range(n_members))
        self.positions = nn.ModuleList(nn.Embedding(t, n_embd) for _ in range(n_members))
        self.blocks = nn.ModuleList(
            CausalTransformer(n_layer, n_head, n_embd, dropout, t) for _ in range(n_members)
        )
        for emb in [*self.tokens, *self.positions]:
            nn.init.normal_(emb.weight, 0.0, 0.02)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Features of each member's texts.

        Raises:
            ValueError: For ids out of range or a text without tokens.
        """
        ids = obs.long()
        real = ids != PAD
        if not bool(real.any(dim=-1).all()):
            raise ValueError("every text needs at least one token")
        if bool(((ids < PAD) | (ids >= self.vocab_size)).any()):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}) or {PAD}")
        last = real.sum(dim=-1) - 1  # right padding: the last real token's index
        # Columns after every text's end are padding only: causal attention never lets a
        # real token see them, so dropping them changes no feature and saves the compute
        # of a context-wide window (texts are often a quarter of it).
        width = int(last.max()) + 1
        ids, real = ids[..., :width], real[..., :width]
        safe = ids.clamp(min=0)
        pos = torch.arange(width, device=ids.device)
        out = []
        for k in range(self.n_members):
            x = self.tokens[k](safe[k]) + self.positions[k](pos)
            h = self.blocks[k](x, real[k])  # (M, T, H)
            out.append(h.gather(1, last[k][:, None, None].expand(-1, 1, h.shape[-1]))[:, 0])
        return torch.stack(out)
