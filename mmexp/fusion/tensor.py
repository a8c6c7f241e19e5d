"""Tensor Fusion Network: the outer product of the modality vectors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from math import prod

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import zero_absent


class TensorFusion(FusionStrategy):
    """Tensor Fusion Network (TFN) fusion layer.

    Zadeh, Chen, Poria, Cambria and Morency, "Tensor Fusion Network for Multimodal Sentiment
    Analysis", EMNLP 2017. Every modality is projected to a small vector ``h_m`` and extended
    with a constant one, ``z_m = [h_m; 1]``; the fused tensor is the outer product
    ``z_1 ⊗ z_2 ⊗ ... ⊗ z_M``. Thanks to the appended one it holds the unimodal terms, all
    pairwise products and the higher-order ones. A linear layer maps the flattened tensor
    (``prod(rank_dim + 1)`` features) to the output.

    The tensor grows exponentially with the number of modalities, which is why the
    projection width defaults to 16 for two modalities and 8 for more. A modality a sample
    lacks gets ``h_m = 0``, i.e. ``z_m = [0; 1]``: only the terms of the other modalities
    remain, exactly as if the modality had not been fused.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        rank_dim: Width of each projected ``h_m``; ``None`` means 16 for two modalities and 8
            for three or more.
        hidden_dim: Width of the output; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout on the flattened tensor, as in the paper's post-fusion network.
    """

    config_name = "tensor"

    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        rank_dim: int | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        rank = rank_dim or (16 if len(self.modalities) <= 2 else 8)
        self.rank_dim = rank
        self.out_dim = hidden_dim or dim
        self.projections = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(dim, rank), nn.ReLU()) for m in self.modalities}
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(prod([rank + 1] * len(self.modalities)), self.out_dim)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, out_dim]`` projection of the flattened outer product."""
        self.check_inputs(features)
        fused: torch.Tensor | None = None
        for name in self.modalities:
            output = features[name]
            present = output.present_mask()
            # Zeroed before the projection too: its weight gradient would carry NaN * 0 from
            # a non-finite placeholder.
            pooled = zero_absent(output.pooled, present)
            projected = zero_absent(self.projections[name](pooled), present)
            extended = torch.cat([projected, projected.new_ones(projected.shape[0], 1)], dim=-1)
            # Running outer product, flattened after each modality: [B, prod of sizes so far].
            fused = (
                extended if fused is None else (fused[:, :, None] * extended[:, None, :]).flatten(1)
            )
        assert fused is not None  # at least two modalities, checked by the base class
        return self.output(self.dropout(fused))
