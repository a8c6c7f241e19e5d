"""Blocks of the built-in caption decoder, written so that generation can cache keys and values.

Attention is ``F.scaled_dot_product_attention`` on explicit keys and values: a generation
step feeds one token, appends its self-attention keys/values to those of the tokens before
it, and reuses the memory's cross-attention keys/values, computed once per generation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention on keys and values computed separately from the queries.

    Args:
        width: Model width (queries, keys, values and output).
        heads: Attention heads; must divide ``width``.
        dropout: Dropout on the attention weights while training.
    """

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"decoder width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(width, width)
        self.key_value = nn.Linear(width, 2 * width)
        self.out = nn.Linear(width, width)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, W]`` into heads ``[N, H, T, W / H]``."""
        n, t, w = x.shape
        return x.view(n, t, self.heads, w // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values ``[N, H, T, W / H]`` of ``x`` ``[N, T, W]``."""
        keys, values = self.key_value(x).chunk(2, dim=-1)
        return self.split(keys), self.split(values)

    def forward(
        self,
        x: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attend from ``x`` ``[N, T, W]`` to ``keys``/``values`` (``mask``: True = allowed)."""
        attended = F.scaled_dot_product_attention(
            self.split(self.query(x)),
            keys,
            values,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        n, _, t, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(n, t, -1))


@dataclass
class LayerCache:
    """Keys and values one layer has seen during a generation.

    Attributes:
        self_keys: ``[N, H, t, d]`` self-attention keys of the tokens so far (grows).
        self_values: Their values.
        cross_keys: ``[N, H, S, d]`` cross-attention keys of the memory (fixed).
        cross_values: Their values.
    """

    self_keys: torch.Tensor
    self_values: torch.Tensor
    cross_keys: torch.Tensor
    cross_values: torch.Tensor


@dataclass
class DecoderCache:
    """Everything a cached generation reuses: per-layer keys/values and the memory mask.

    Attributes:
        layers: One :class:`LayerCache` per decoder block.
        memory_mask: ``[N, 1, 1, S]`` attention mask of the memory.
        has_memory: ``[N, 1, 1]``, 0 for rows without any real memory vector.
        length: Tokens fed so far.
    """

    layers: list[LayerCache] = field(default_factory=list)
    memory_mask: torch.Tensor | None = None
    has_memory: torch.Tensor | None = None
    length: int = 0

    def reorder(self, rows: torch.Tensor) -> None:
        """Row ``i`` becomes former row ``rows[i]`` (beam search)."""
        for layer in self.layers:
            for name in ("self_keys", "self_values", "cross_keys", "cross_values"):
                setattr(layer, name, getattr(layer, name).index_select(0, rows))
        assert self.memory_mask is not None and self.has_memory is not None
        self.memory_mask = self.memory_mask.index_select(0, rows)
        self.has_memory = self.has_memory.index_select(0, rows)


def memory_attention_mask(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-attention mask ``[N, 1, 1, S]`` of a memory mask, and which rows have memory.

    A row without any real memory vector would attend to nothing (NaN); it attends to its
    placeholders instead and its cross-attention output is zeroed with ``has_memory``.
    """
    has_memory = mask.any(dim=1)
    allowed = mask | ~has_memory.unsqueeze(1)
    return allowed[:, None, None, :], has_memory.to(torch.float32)[:, None, None]


class DecoderBlock(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention over the memory, MLP.

    Args:
        width: Model width.
        heads: Attention heads.
        mlp_ratio: Hidden width of the MLP over ``width``.
        dropout: Dropout on attention weights and on each residual branch.
    """

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.self_norm = nn.LayerNorm(width)
        self.self_attention = Attention(width, heads, dropout)
        self.cross_norm = nn.LayerNorm(width)
        self.cross_attention = Attention(width, heads, dropout)
        self.mlp_norm = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        self.drop = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        self_mask: torch.Tensor | None,
        memory_mask: torch.Tensor,
        has_memory: torch.Tensor,
        memory: torch.Tensor | None = None,
        cache: LayerCache | None = None,
    ) -> torch.Tensor:
        """One block on ``x`` ``[N, T, W]``.

        Args:
            x: Token states.
            self_mask: ``[N, 1, T, T']`` allowed self-attention, or ``None`` for all.
            memory_mask: ``[N, 1, 1, S]`` allowed memory positions.
            has_memory: ``[N, 1, 1]`` rows with real memory.
            memory: ``[N, S, W]`` projected memory; ``None`` when ``cache`` holds its keys.
            cache: Keys/values of earlier tokens, extended in place; ``None`` to attend
                within ``x`` only (teacher forcing).
        """
        h = self.self_norm(x)
        keys, values = self.self_attention.keys_values(h)
        if cache is not None:
            keys = torch.cat([cache.self_keys, keys], dim=2)
            values = torch.cat([cache.self_values, values], dim=2)
            cache.self_keys, cache.self_values = keys, values
        x = x + self.drop(self.self_attention(h, keys, values, self_mask))
        if cache is not None:
            keys, values = cache.cross_keys, cache.cross_values
        else:
            assert memory is not None
            keys, values = self.cross_attention.keys_values(memory)
        cross = self.cross_attention(self.cross_norm(x), keys, values, memory_mask)
        x = x + self.drop(cross * has_memory.to(cross.dtype))
        return x + self.drop(self.mlp(self.mlp_norm(x)))
