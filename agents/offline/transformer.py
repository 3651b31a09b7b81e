"""A GPT-2 style causal transformer over embeddings, shared by the offline and text tracks.

:class:`CausalTransformer` is GPT-2's stack without its token and position embeddings: the
caller embeds its tokens (Decision Transformer adds timestep embeddings instead of
positions, as the original removes GPT-2's ``wpe``) and gets back one hidden state per
token. Each block is pre-LN: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``, the MLP 4x
wide with GPT-2's tanh-approximated GELU (or ReLU: the Decision Transformer authors' setting
of GPT-2's ``activation_function``), and a final LayerNorm after the last block.
Weights start as GPT-2's: normal(0, 0.02), zero biases, the residual projections scaled
by ``1 / sqrt(2 * n_layer)``.

Attention is written out rather than taken from ``scaled_dot_product_attention`` so that
its dropout draws from an explicit generator (:func:`set_dropout_generator`) like every
other dropout here; the sequences are short (Decision Transformer: 60 tokens).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from prefbench.agents.encoders import SeededDropout

#: The MLP activations a block can use, by GPT-2's ``activation_function`` names.
ACTIVATIONS = {
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def set_dropout_generator(module: nn.Module, generator: torch.Generator | None) -> None:
    """Make every :class:`SeededDropout` inside ``module`` draw its masks from ``generator``."""
    for m in module.modules():
        if isinstance(m, SeededDropout):
            m.generator = generator


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention restricted by a boolean ``(B, 1, L, L)`` mask.

    Args:
        n_embd: Width ``H`` of the tokens.
        n_head: Heads; ``H`` must divide by it.
        dropout: Dropout on the attention weights and on the output projection.
    """

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head})")
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.attn_drop = SeededDropout(dropout)
        self.resid_drop = SeededDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``(B, L, H)`` tokens, ``allowed[b, 0, i, j]`` True where query i may see key j."""
        b, n, h = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_head, h // self.n_head).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(h // self.n_head)
        # -inf, not GPT-2's large negative, so a hidden key has exactly zero weight: a
        # later or padded token cannot change an earlier prediction, not even by rounding.
        weights = self.attn_drop(scores.masked_fill(~allowed, -math.inf).softmax(dim=-1))
        out = (weights @ v).transpose(1, 2).reshape(b, n, h)
        return self.resid_drop(self.proj(out))


class Block(nn.Module):
    """One pre-LN GPT-2 block (attention, then the 4x MLP), each with a residual."""

    def __init__(
        self, n_embd: int, n_head: int, dropout: float, activation: str = "gelu_new"
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}"
            )
        self.activation = ACTIVATIONS[activation]
        self.ln_1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln_2 = nn.LayerNorm(n_embd)
        self.fc = nn.Linear(n_embd, 4 * n_embd)
        self.proj = nn.Linear(4 * n_embd, n_embd)
        self.mlp_drop = SeededDropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """``(B, L, H) -> (B, L, H)``."""
        x = x + self.attn(self.ln_1(x), allowed)
        return x + self.mlp_drop(self.proj(self.activation(self.fc(self.ln_2(x)))))


class CausalTransformer(nn.Module):
    """GPT-2's transformer on ready-made embeddings: ``(B, L, H) -> (B, L, H)``.

    Token ``i`` sees tokens ``0..i`` that the mask marks real. Padded tokens (mask False)
    are hidden from every other token; each still sees itself, so its own output is
    finite (meaningless, and to be ignored by the caller) rather than NaN.

    Args:
        n_layer: Blocks.
        n_head: Attention heads per block.
        n_embd: Token width ``H``.
        dropout: Dropout on the input embeddings, attention weights and residual branches
            (GPT-2's ``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop`` all at this value).
        max_tokens: Longest sequence ``L`` accepted.
        activation: The MLP's activation, a key of :data:`ACTIVATIONS` (GPT-2's
            ``gelu_new`` by default).
    """

    def __init__(
        self,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float,
        max_tokens: int,
        activation: str = "gelu_new",
    ) -> None:
        super().__init__()
        if min(n_layer, n_head, n_embd, max_tokens) < 1:
            raise ValueError("n_layer, n_head, n_embd and max_tokens must be >= 1")
        self.n_embd = n_embd
        self.max_tokens = max_tokens
        self.drop = SeededDropout(dropout)
        self.blocks = nn.ModuleList(
            Block(n_embd, n_head, dropout, activation) for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.register_buffer(
            "causal", torch.ones(max_tokens, max_tokens, dtype=torch.bool).tril(), persistent=False
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """GPT-2's initialisation (draws from torch's global generator)."""
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln_" in name or name.startswith("ln_"):
                nn.init.ones_(p)
            else:
                # Residual projections shrink with depth so the residual stream's variance
                # stays put (GPT-2's c_proj rule).
                std = (
                    0.02 / math.sqrt(2 * len(self.blocks)) if name.endswith("proj.weight") else 0.02
                )
                nn.init.normal_(p, 0.0, std)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden states of every token.

        Args:
            x: ``(B, L, H)`` token embeddings, ``L <= max_tokens``.
            mask: ``(B, L)`` bool, True for real tokens, False for padding; None: all real.

        Returns:
            ``(B, L, H)`` hidden states after the final LayerNorm.
        """
        b, n, h = x.shape
        if n > self.max_tokens or h != self.n_embd:
            raise ValueError(
                f"expected (B, L <= {self.max_tokens}, {self.n_embd}) embeddings,"
                f" got {tuple(x.shape)}"
            )
        allowed = self.causal[:n, :n].expand(b, 1, n, n)
        if mask is not None:
            if mask.shape != (b, n):
                raise ValueError(f"mask must be {(b, n)}, got {tuple(mask.shape)}")
            eye = torch.eye(n, dtype=torch.bool, device=x.device)
            allowed = allowed & (mask[:, None, None, :] | eye)
        x = self.drop(x)
        for block in self.blocks:
            x = block(x, allowed)
        return self.ln_f(x)
