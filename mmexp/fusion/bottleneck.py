"""Attention bottlenecks: modalities exchange information only through a few shared tokens."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.attention_record import CrossModalAttention, cross_modal_map, record_attention
from mmexp.fusion.base import FusionStrategy, check_heads
from mmexp.fusion.layers import presence, transformer_encoder_layer, valid_tokens, zero_absent


class BottleneckFusion(FusionStrategy):
    """Multimodal Bottleneck Transformer (MBT) fusion.

    Nagrani, Yang, Arnab, Jansen, Schmid and Sun, "Attention Bottlenecks for Multimodal
    Fusion", NeurIPS 2021. Every modality has its own Transformer layers and CLS token;
    cross-modal exchange is forced through ``num_bottleneck`` shared latent tokens. In each
    fusion layer every modality attends over ``[its CLS and tokens; bottleneck tokens]`` and
    the bottleneck updates of the modalities are averaged (the paper's Eq. 8). Layers before
    ``fusion_layer`` are purely unimodal (the paper's mid fusion). The output is the mean of
    the modalities' final CLS states.

    As in the paper and scenic's implementation, the bottleneck a fusion layer reads is the
    one the previous layer wrote, so the first fusion layer sees the learned initial tokens
    and cross-modal information first reaches a stream in layer ``fusion_layer + 1``. A last
    layer that only writes the bottleneck therefore exchanges nothing; settings without a
    layer that reads what another modality wrote (``fusion_layer > depth - 2``, which
    includes ``depth = 1``) are refused rather than silently trained as late fusion.

    Simplified: the paper classifies each modality's CLS and averages the logits (trained
    with per-modality losses in scenic); here the CLS states are averaged and go to the same
    head as every other strategy of the ablation.

    Padded tokens and all tokens of an absent modality are masked; an absent modality is left
    out of the bottleneck average and of the CLS mean (a sample with no modality keeps its
    bottleneck and gets a zero output).

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output (and of the output).
        depth: Number of layers per modality.
        heads: Attention heads; must divide ``dim``.
        num_bottleneck: Number of shared bottleneck tokens.
        fusion_layer: Index of the first layer that uses the bottleneck; at most
            ``depth - 2``.
        hidden_dim: Feed-forward width; ``None`` means ``4 * dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout inside the Transformer layers.

    Raises:
        ValueError: Invalid ``heads``, ``num_bottleneck`` or ``fusion_layer`` (including
            ``depth < 2``).
    """

    config_name = "bottleneck"

    uses_tokens = True
    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        depth: int = 2,
        heads: int = 4,
        num_bottleneck: int = 4,
        fusion_layer: int = 0,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim)
        check_heads(type(self).__name__, dim, heads)
        if num_bottleneck <= 0:
            raise ValueError(
                f"BottleneckFusion: num_bottleneck must be positive, got {num_bottleneck}"
            )
        if not 0 <= fusion_layer <= depth - 2:
            # The bottleneck written in layer l is read in layer l + 1: a fusion that starts in
            # the last layer (or a single layer) would exchange nothing between modalities.
            raise ValueError(
                f"BottleneckFusion: fusion_layer must be in [0, depth - 2] = [0, {depth - 2}] "
                f"for depth={depth}, got {fusion_layer}: the bottleneck a layer writes is read "
                "by the next one, so a fusion that starts in the last layer exchanges nothing "
                "(raise fusion.depth or lower fusion.fusion_layer)"
            )
        self.out_dim = dim
        self.fusion_layer = fusion_layer
        self.cls_tokens = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(1, 1, dim)) for m in self.modalities}
        )
        self.bottleneck = nn.Parameter(torch.zeros(1, num_bottleneck, dim))
        for parameter in [*self.cls_tokens.values(), self.bottleneck]:
            nn.init.trunc_normal_(parameter, std=0.02)
        self.layers = nn.ModuleList(
            nn.ModuleDict(
                {
                    m: transformer_encoder_layer(dim, heads, hidden_dim or 4 * dim, dropout)
                    for m in self.modalities
                }
            )
            for _ in range(depth)
        )
        self.norms = nn.ModuleDict({m: nn.LayerNorm(dim) for m in self.modalities})

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` mean of the final CLS states of the present modalities."""
        self.check_inputs(features)
        present = presence(features, self.modalities)
        count = present.sum(dim=1)
        streams, valid = {}, {}
        for name in self.modalities:
            tokens, real = valid_tokens(features[name])
            batch = real.shape[0]
            streams[name] = torch.cat([self.cls_tokens[name].expand(batch, -1, -1), tokens], 1)
            valid[name] = torch.cat([real.new_ones(batch, 1), real], dim=1)
        bottleneck = self.bottleneck.expand(count.shape[0], -1, -1)
        bottleneck_valid = present.new_ones(count.shape[0], bottleneck.shape[1])
        for index, layer in enumerate(self.layers):
            if index < self.fusion_layer:
                streams = {
                    m: layer[m](streams[m], src_key_padding_mask=~valid[m]) for m in self.modalities
                }
                continue
            updates = []
            for name in self.modalities:
                length = streams[name].shape[1]
                joint = layer[name](
                    torch.cat([streams[name], bottleneck], dim=1),
                    src_key_padding_mask=~torch.cat([valid[name], bottleneck_valid], dim=1),
                )
                streams[name] = joint[:, :length]
                updates.append(joint[:, length:])
            stacked = zero_absent(torch.stack(updates, dim=1), present)
            average = stacked.sum(dim=1) / count.clamp_min(1)[:, None, None]
            bottleneck = torch.where(count[:, None, None] > 0, average, bottleneck)
        cls = torch.stack([self.norms[m](streams[m][:, 0]) for m in self.modalities], dim=1)
        cls = zero_absent(cls, present)
        return cls.sum(dim=1) / count.clamp_min(1)[:, None]

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """Two-hop maps through the bottleneck (``route="bottleneck"``).

        No token attends to another modality's tokens here. For each layer that reads a
        bottleneck another modality wrote (from ``fusion_layer + 1`` on, numbered from 0),
        the query modality's tokens' attention over the bottleneck tokens (mean over heads)
        times the bottleneck tokens' attention over the key modality's tokens in the layer
        before (mean over heads), as in attention rollout; residual connections and the
        averaging of the modalities' bottleneck updates are left out. ``[B, 1, Lq, Lk]``.
        """
        with record_attention() as records:
            self(features)
        lengths = {m: features[m].tokens.shape[1] for m in self.modalities}
        valid = {m: valid_tokens(features[m])[1] for m in self.modalities}
        maps = []
        for index in range(self.fusion_layer + 1, len(self.layers)):
            for query, key in itertools.permutations(self.modalities, 2):
                # Stream layout: [CLS, tokens, bottleneck].
                reads = records.of(self.layers[index][query].self_attn).mean(dim=1)
                to_bottleneck = reads[:, 1 : 1 + lengths[query], 1 + lengths[query] :]
                wrote = records.of(self.layers[index - 1][key].self_attn).mean(dim=1)
                from_key = wrote[:, 1 + lengths[key] :, 1 : 1 + lengths[key]]
                routed = (to_bottleneck @ from_key)[:, None]
                depth = index - self.fusion_layer - 1
                maps.append(
                    cross_modal_map(query, key, depth, routed, valid[query], route="bottleneck")
                )
        return maps
