"""Multi-modal Factorized High-order pooling (MFH): a cascade of MFB blocks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import power_normalise, present_pooled
from mmexp.fusion.mfb import check_factor, sum_pool


class MFHFusion(FusionStrategy):
    """Multi-modal Factorized High-order (MFH) pooling of two modalities.

    Yu, Yu, Xiang, Fan and Tao, "Beyond Bilinear: Generalized Multimodal Factorized
    High-order Pooling for Visual Question Answering", IEEE TNNLS 2018. ``p`` MFB blocks
    (:class:`~mmexp.fusion.mfb.MFBFusion`), each with its own expansions ``U_i``, ``V_i``,
    are cascaded: the expanded product of block ``i`` is multiplied by that of block
    ``i - 1``, so block ``i`` holds interactions of order ``2 i``. Each block is squeezed
    (sum pooling over windows of ``k``, signed square root, L2 norm) and the ``p`` results
    are concatenated:

        e_0 = 1,  e_i = Dropout(e_{i-1} * (U_i x + b_x) * (V_i y + b_y))
        z_i = L2(SignedSqrt(SumPool(e_i, k))),  z = [z_1; ...; z_p]

    and a linear layer maps ``z`` (``p * o`` wide) to ``dim``. With ``blocks=1`` it is MFB.

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.MFH``, which hard-codes ``p = 2``): any number
    of blocks; dropout on each block's expanded product, which the next block then
    multiplies (as in the library); the expansions have biases and no activation (the
    library defaults to ReLU), no activation after the output layer (the library applies
    ReLU), normalisation always on (the library's ``normalize`` defaults to off); no
    co-attention: the strategy fuses pooled vectors. In the paper the classifier reads
    ``z``; here the output layer (the library's ``linear_out``) maps it to ``dim``
    (``out_dim``) and the shared head follows, as in every other row of an ablation.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`): each of its expansions becomes the
    learned bias ``b_x``, independent of the placeholder features.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Pooled outputs ``o`` per block; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        factor: Rank ``k`` of the sum pooling, shared by the blocks (the paper uses 5).
        blocks: Number ``p`` of cascaded MFB blocks (the paper's MFH uses 2).
        dropout: Dropout on each block's expanded product.

    Raises:
        ValueError: ``hidden_dim``, ``factor`` or ``blocks`` is below 1, or ``factor``
            exceeds ``dim``.
    """

    config_name = "mfh"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        factor: int = 5,
        blocks: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        width = dim if hidden_dim is None else hidden_dim
        check_positive("MFHFusion", hidden_dim=width, blocks=blocks)
        check_factor("MFHFusion", factor, dim)
        self.hidden_dim = width
        self.factor = factor
        self.blocks = blocks
        # Block i's U_i and V_i: the blocks share no weights, only the running product.
        self.expansions = nn.ModuleList(
            nn.ModuleDict({m: nn.Linear(dim, factor * width) for m in self.modalities})
            for _ in range(blocks)
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(blocks * width, dim)
        self.out_dim = dim

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` projection of the concatenated squeezed blocks."""
        self.check_inputs(features)
        inputs = [present_pooled(features[m]) for m in self.modalities]
        expanded: torch.Tensor | None = None
        squeezed = []
        for expansion in self.expansions:
            left, right = (expansion[m](x) for m, x in zip(self.modalities, inputs, strict=True))
            product = left * right
            expanded = self.dropout(product if expanded is None else expanded * product)
            squeezed.append(power_normalise(sum_pool(expanded, self.factor)))
        return self.output(torch.cat(squeezed, dim=-1))
