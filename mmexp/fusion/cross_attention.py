"""Co-attention fusion: every modality stream attends to the others (ViLBERT, LXMERT)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion.base import FusionStrategy, check_heads


def masked_attention(
    attention: nn.MultiheadAttention,
    query: torch.Tensor,
    context: torch.Tensor,
    context_valid: torch.Tensor,
) -> torch.Tensor:
    """Multi-head attention of ``query`` over the valid positions of ``context``.

    Rows whose context has no valid position at all (the other modality is absent for that
    sample) get a zero update instead of the NaN that a softmax over no keys produces; NaN
    would otherwise survive any later masking, since ``NaN * 0`` is NaN.

    Args:
        attention: A ``batch_first`` attention module.
        query: ``[B, L, D]`` queries.
        context: ``[B, S, D]`` keys and values.
        context_valid: ``[B, S]`` boolean, ``True`` for keys that may be attended to.

    Returns:
        ``[B, L, D]`` attention output, zero for samples with no valid key.
    """
    has_key = context_valid.any(dim=1)
    # Let key-less rows attend everywhere (finite values, so no NaN) and discard the result.
    ignore = ~(context_valid | ~has_key[:, None])
    update, _ = attention(query, context, context, key_padding_mask=ignore, need_weights=False)
    return update.masked_fill(~has_key[:, None, None], 0.0)


class AttentionBlock(nn.Module):
    """Pre-norm Transformer block: (cross- or self-) attention, then a feed-forward layer.

    Args:
        dim: Token width.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Width of the feed-forward layer.
        dropout: Dropout on the attention weights and the residual branches.
        cross: Whether the block attends to a separate context sequence (with its own
            normalisation) instead of to its input.

    Raises:
        ValueError: ``heads`` does not divide ``dim``.
    """

    def __init__(
        self, dim: int, heads: int, hidden_dim: int, dropout: float = 0.0, cross: bool = True
    ) -> None:
        super().__init__()
        check_heads(type(self).__name__, dim, heads)
        self.cross = cross
        self.norm_query = nn.LayerNorm(dim)
        # Only cross-attention normalises the context separately; a self-attention block
        # without it has no unused parameters (which DDP would reject).
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(
            nn.Linear(dim, hidden_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, dim),
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Update ``x`` by attending to ``context`` (cross) or to itself.

        Args:
            x: ``[B, L, D]`` tokens to update.
            key_valid: ``[B, S]`` validity of the keys: of ``context`` for a cross block, of
                ``x`` for a self-attention block.
            context: ``[B, S, D]`` context tokens; required iff the block is a cross block.

        Returns:
            The updated ``[B, L, D]`` tokens.
        """
        query = self.norm_query(x)
        if self.norm_context is not None:
            if context is None:
                raise ValueError("a cross-attention block needs a context sequence")
            keys = self.norm_context(context)
        else:
            keys = query
        x = x + self.dropout(masked_attention(self.attention, query, keys, key_valid))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


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
        valid = {m: features[m].mask & features[m].present_mask()[:, None] for m in self.modalities}
        # Zero the padding and absent placeholders so no garbage value enters any product.
        streams = {
            m: features[m].tokens.masked_fill(~valid[m][..., None], 0.0) for m in self.modalities
        }
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
