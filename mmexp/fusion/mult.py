"""Multimodal Transformer (MulT): directional cross-modal attention between all pairs."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion.attention_record import CrossModalAttention, cross_modal_map, record_attention
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import AttentionBlock, valid_tokens


class MulTFusion(FusionStrategy):
    """Multimodal Transformer fusion for unaligned sequences.

    Tsai, Bai, Liang, Kolter, Morency and Salakhutdinov, "Multimodal Transformer for
    Unaligned Multimodal Language Sequences", ACL 2019. For every ordered pair (source ->
    target) a cross-modal Transformer of ``depth`` blocks lets the target sequence attend to
    the source: queries come from the target's current states, keys and values from the
    source's (layer-normalised) input sequence at every block, as in the paper. The outputs
    of all sources of a target are concatenated along the channels and processed by
    ``self_depth`` self-attention blocks; each target is then masked-mean pooled and the
    targets are concatenated (``out_dim = M * (M - 1) * dim``). As in the authors' code
    (``modules/transformer.py``), every Transformer stack scales its input by ``sqrt(width)``
    before adding sinusoidal positions (queries, keys and values alike) and ends in a
    LayerNorm.

    Simplified: the 1-D convolutional input projection is omitted (the authors' code uses
    kernel size 1, i.e. a linear map, and the encoders already project every modality to the
    same width); the last-element pooling is replaced by the masked mean, which is robust to
    padding; the feed-forward layers use GELU instead of ReLU, keys and values have a
    LayerNorm of their own, there is no causal attention mask and no embedding dropout; the
    default depths (2 cross-modal, 1 self-attention) are smaller than the paper's 4-5 and 3.

    Padded tokens and absent modalities are masked as keys; a target whose source is absent
    for a sample skips that source's attention updates, and an absent target pools to zeros.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        depth: Cross-modal blocks per (source, target) pair.
        self_depth: Self-attention blocks per target after the cross-modal ones.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Feed-forward width of the cross-modal blocks (the self-attention blocks,
            ``M - 1`` times wider, use ``(M - 1) * hidden_dim``); ``None`` means ``4 * dim``.
            This is the width :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout inside the blocks.
    """

    config_name = "mult"

    uses_tokens = True
    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        depth: int = 2,
        self_depth: int = 1,
        heads: int = 4,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim)
        if depth <= 0 or self_depth < 0:
            raise ValueError(
                f"MulTFusion: need depth > 0 and self_depth >= 0, got {depth} and {self_depth}"
            )
        hidden = hidden_dim or 4 * dim
        sources = len(self.modalities) - 1
        self.out_dim = len(self.modalities) * sources * dim
        self.cross = nn.ModuleDict(
            {
                target: nn.ModuleDict(
                    {
                        source: nn.ModuleList(
                            AttentionBlock(dim, heads, hidden, dropout, cross=True)
                            for _ in range(depth)
                        )
                        for source in self.modalities
                        if source != target
                    }
                )
                for target in self.modalities
            }
        )
        self.self_attention = nn.ModuleDict(
            {
                target: nn.ModuleList(
                    AttentionBlock(sources * dim, heads, sources * hidden, dropout, cross=False)
                    for _ in range(self_depth)
                )
                for target in self.modalities
            }
        )
        # The LayerNorm that ends each cross-modal stack, and each self-attention stack.
        self.cross_norms = nn.ModuleDict(
            {
                target: nn.ModuleDict(
                    {source: nn.LayerNorm(dim) for source in self.modalities if source != target}
                )
                for target in self.modalities
            }
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(sources * dim) for m in self.modalities})

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, M * (M - 1) * dim]`` concatenation of the pooled targets."""
        self.check_inputs(features)
        valid, inputs = {}, {}
        for name in self.modalities:
            # Zeroing first keeps padding and absent placeholders out of every product.
            tokens, valid[name] = valid_tokens(features[name])
            inputs[name] = embed(tokens)
        pooled = []
        for target in self.modalities:
            branches = []
            for source, blocks in self.cross[target].items():
                states = inputs[target]
                for block in blocks:
                    states = block(states, valid[source], inputs[source])
                branches.append(self.cross_norms[target][source](states))
            states = embed(torch.cat(branches, dim=-1))
            for block in self.self_attention[target]:
                states = block(states, valid[target])
            pooled.append(masked_mean(self.norms[target](states), valid[target]))
        return torch.cat(pooled, dim=-1)

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """The weights of every cross-modal block: the target's tokens over the source's."""
        with record_attention() as records:
            self(features)
        maps = []
        for target, sources in self.cross.items():
            valid = valid_tokens(features[target])[1]
            for source, blocks in sources.items():
                for depth, block in enumerate(blocks):
                    weights = records.of(block.attention)
                    maps.append(cross_modal_map(target, source, depth, weights, valid))
        return maps


def embed(tokens: torch.Tensor) -> torch.Tensor:
    """MulT's stack input: ``sqrt(width) * tokens`` plus sinusoidal positions.

    The scale keeps the features from being drowned by the unit-amplitude positions (as in
    Vaswani et al., 2017, and the MulT code).
    """
    width = tokens.shape[-1]
    return math.sqrt(width) * tokens + sinusoidal_positions(tokens.shape[1], width, tokens)


def sinusoidal_positions(length: int, dim: int, like: torch.Tensor) -> torch.Tensor:
    """Return ``[length, dim]`` sinusoidal position embeddings (Vaswani et al., 2017).

    Args:
        length: Number of positions.
        dim: Embedding width.
        like: Tensor whose dtype and device the embeddings take.
    """
    position = torch.arange(length, device=like.device, dtype=torch.float32)[:, None]
    frequency = torch.exp(
        torch.arange(0, dim, 2, device=like.device, dtype=torch.float32) * (-math.log(1e4) / dim)
    )
    embedding = torch.zeros(length, dim, device=like.device, dtype=torch.float32)
    embedding[:, 0::2] = torch.sin(position * frequency)
    embedding[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return embedding.to(like.dtype)
