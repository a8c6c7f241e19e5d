"""ClipCap's mapping networks: a pooled memory vector to a prefix of LM embeddings.

Mokady et al. 2021 (arXiv 2111.09734) map a CLIP image embedding of width ``d`` to ``k``
vectors of the LM's width ``h`` with either

* an MLP: ``Linear(d, h*k/2) -> tanh -> Linear(h*k/2, h*k)``, reshaped to ``[k, h]``; or
* a transformer: ``Linear(d, c*h)`` makes ``c`` vectors of the embedding, ``k`` learned
  constants follow them, a pre-norm transformer (MLP ratio 2, ReLU) mixes the ``c + k``
  vectors, and the outputs at the constants' positions are the prefix.

Here the input is the decoder's memory, pooled to one vector (ClipCap reads one CLIP
vector): the mean of its real vectors, or its first vector.
"""

from __future__ import annotations

import torch
from torch import nn

from mmexp.decoders.base import Memory
from mmexp.encoders.base import masked_mean

MAPPINGS = ("mlp", "transformer")
POOLINGS = ("mean", "first")
KEY = "model.decoder"


class PrefixMapper(nn.Module):
    """ClipCap's MLP or transformer mapper on the pooled memory.

    Args:
        memory_dim: Width ``d`` of the memory vectors.
        hidden_size: LM embedding width ``h``.
        prefix_length: Prefix vectors ``k``.
        mapping: ``mlp`` or ``transformer``.
        pooling: ``mean`` over real memory vectors or ``first`` vector.
        clip_length: Vectors ``c`` the transformer makes of the pooled memory; ``None``
            means ``prefix_length`` (as ClipCap's default).
        depth: Transformer layers.
        heads: Transformer attention heads (must divide ``h``).
    """

    def __init__(
        self,
        memory_dim: int,
        hidden_size: int,
        prefix_length: int,
        mapping: str = "mlp",
        pooling: str = "mean",
        clip_length: int | None = None,
        depth: int = 8,
        heads: int = 8,
    ) -> None:
        super().__init__()
        if mapping not in MAPPINGS:
            raise ValueError(f"{KEY}.mapping must be one of {MAPPINGS}, got {mapping!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"{KEY}.pooling must be one of {POOLINGS}, got {pooling!r}")
        if prefix_length < 1:
            raise ValueError(f"{KEY}.prefix_length must be at least 1, got {prefix_length}")
        self.mapping = mapping
        self.pooling = pooling
        self.prefix_length = prefix_length
        self.hidden_size = hidden_size
        total = hidden_size * prefix_length
        if mapping == "mlp":
            self.mlp = nn.Sequential(
                nn.Linear(memory_dim, total // 2), nn.Tanh(), nn.Linear(total // 2, total)
            )
            return
        self.clip_length = prefix_length if clip_length is None else clip_length
        self.linear = nn.Linear(memory_dim, self.clip_length * hidden_size)
        self.constants = nn.Parameter(torch.randn(prefix_length, hidden_size))
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            heads,
            dim_feedforward=2 * hidden_size,
            dropout=0.0,
            activation="relu",
            batch_first=True,
            norm_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)

    def pool(self, memory: Memory) -> torch.Tensor:
        """One ``[B, d]`` vector per sample."""
        if self.pooling == "first":
            return memory.tokens[:, 0]
        return masked_mean(memory.tokens, memory.mask)

    def forward(self, memory: Memory) -> torch.Tensor:
        """The prefix ``[B, k, h]``."""
        pooled = self.pool(memory)
        batch = pooled.shape[0]
        if self.mapping == "mlp":
            return self.mlp(pooled).view(batch, self.prefix_length, self.hidden_size)
        made = self.linear(pooled).view(batch, self.clip_length, self.hidden_size)
        constants = self.constants.unsqueeze(0).expand(batch, -1, -1)
        mixed = self.transformer(torch.cat([made, constants], dim=1))
        return mixed[:, self.clip_length :]
