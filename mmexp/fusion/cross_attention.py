"""Co-attention fusion: every modality stream attends to the others (ViLBERT, LXMERT)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion.attention_record import CrossModalAttention, cross_modal_map, record_attention
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import AttentionBlock, valid_tokens


class CrossAttentionFusion(FusionStrategy):
    """Bidirectional co-attention between the modality token streams.

    The two-stream design of ViLBERT (Lu, Batra, Parikh and Lee, "ViLBERT: Pretraining
    Task-Agnostic Visiolinguistic Representations for Vision-and-Language Tasks", NeurIPS
    2019) and LXMERT (Tan and Bansal, "LXMERT: Learning Cross-Modality Encoder
    Representations from Transformers", EMNLP 2019). Each layer has, per modality, a
    cross-attention block whose queries come from that stream and whose keys and values are
    the other stream (with three or more modalities: the concatenation of all other
    streams), followed by a self-attention block, as in LXMERT's cross-modality layer. All
    streams read the previous layer's states, so the exchange is symmetric. The output is the
    concatenation of the masked-mean pooled streams (``out_dim = dim * M``).

    Simplified relative to LXMERT: the cross- and the self-attention block each have a
    feed-forward layer (LXMERT has one after both), the cross-attention weights are not
    shared between the directions (LXMERT shares them), and the output pools the streams
    instead of reading a CLS token (LXMERT) or multiplying the streams' summaries (ViLBERT).

    Padded tokens and all tokens of an absent modality are masked as keys; an absent
    modality's own stream pools to zeros, and a stream whose context is entirely absent skips
    the cross-attention update.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        depth: Number of co-attention layers.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Feed-forward width; ``None`` means ``4 * dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout inside the blocks.
    """

    config_name = "cross_attention"

    uses_tokens = True
    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        depth: int = 1,
        heads: int = 4,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim)
        if depth <= 0:
            raise ValueError(f"CrossAttentionFusion: depth must be positive, got {depth}")
        hidden = hidden_dim or 4 * dim
        self.out_dim = dim * len(self.modalities)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    m: nn.ModuleDict(
                        {
                            "cross": AttentionBlock(dim, heads, hidden, dropout, cross=True),
                            "self": AttentionBlock(dim, heads, hidden, dropout, cross=False),
                        }
                    )
                    for m in self.modalities
                }
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim * M]`` concatenation of the pooled co-attended streams."""
        self.check_inputs(features)
        streams, valid = {}, {}
        for m in self.modalities:
            # Padding and absent placeholders zeroed, so no garbage value enters any product.
            streams[m], valid[m] = valid_tokens(features[m])
        for layer in self.layers:
            updated = {}
            for m in self.modalities:
                others = [o for o in self.modalities if o != m]
                context = torch.cat([streams[o] for o in others], dim=1)
                context_valid = torch.cat([valid[o] for o in others], dim=1)
                updated[m] = layer[m]["cross"](streams[m], context_valid, context)
            streams = {m: layer[m]["self"](updated[m], valid[m]) for m in self.modalities}
        pooled = [masked_mean(self.norms[m](streams[m]), valid[m]) for m in self.modalities]
        return torch.cat(pooled, dim=-1)

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """The weights of every cross-attention block, split by the context's modalities."""
        with record_attention() as records:
            self(features)
        valid = {m: valid_tokens(features[m])[1] for m in self.modalities}
        maps = []
        for depth, layer in enumerate(self.layers):
            for query in self.modalities:
                weights = records.of(layer[query]["cross"].attention)
                start = 0
                for key in (o for o in self.modalities if o != query):
                    span = slice(start, start + features[key].tokens.shape[1])
                    maps.append(
                        cross_modal_map(query, key, depth, weights[..., span], valid[query])
                    )
                    start = span.stop
        return maps
