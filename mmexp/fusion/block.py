"""BLOCK: bilinear fusion through a block-term decomposition (a block-superdiagonal core)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import power_normalise, present_pooled
from mmexp.fusion.mutan import check_rank, core_factor


class BlockFusion(FusionStrategy):
    """BLOCK: Bilinear superdiagonal fusion of two modalities.

    Ben-younes, Cadene, Thome and Cord, "BLOCK: Bilinear Superdiagonal Fusion for Visual
    Question Answering and Visual Relationship Detection", AAAI 2019. The bilinear tensor is
    a sum of ``C`` block terms, ``T = sum_c ((D_c x_1 A_c) x_2 B_c) x_3 C_c``: a Tucker
    decomposition whose core is block-superdiagonal. Each input is projected to ``C``
    chunks of width ``s``, chunk ``c`` of one input interacts with chunk ``c`` of the other
    only, through its own core ``D_c`` (``s x s x s``) whose slices have rank ``R`` (the
    MUTAN constraint inside each block), and the mode-3 factors ``C_c`` together are one
    linear layer on the concatenated block outputs:

        x' = A x + b_x = [x'_1; ...; x'_C],  y' = B y + b_y = [y'_1; ...; y'_C]
        z_c = sum_r (M_{c,r} x'_c) * (N_{c,r} y'_c)
        f = W_o [L2(SignedSqrt(z_1)); ...; L2(SignedSqrt(z_C))] + b_o

    Between MUTAN (one block) and a CP decomposition (blocks of width one), the number of
    blocks trades the richness of each interaction against the number of interactions.

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.Block``): ``hidden_dim`` is the width of each
    block, so the blocks are always equally wide (the library takes the joint width and
    splits it into unequal chunks when ``chunks`` does not divide it); the rank factors have
    no biases (the library's ``merge_linears`` do), so each ``D_c`` is exactly a core
    tensor; each block is power- and L2-normalised before the concatenation (the library's
    default ``pos_norm="before_cat"``); dropout on both projections (the library's
    ``dropout_input``); no shared projections (the library's ``shared``); the strategy fuses
    pooled vectors. In the paper ``W_o`` maps to the task's output; here it maps to ``dim``
    (``out_dim``) and the shared head follows, as in every other row of an ablation.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`): its projection becomes the learned bias
    ``b_x``, independent of the placeholder features.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width ``s`` of each block; the joint width is ``chunks * hidden_dim``.
            This is the width :func:`mmexp.fusion.cost.match_params` scales.
        chunks: Number ``C`` of blocks.
        rank: Rank ``R`` of each slice of every block's core, at most ``hidden_dim``.
        dropout: Dropout on both projections.

    Raises:
        ValueError: ``hidden_dim``, ``chunks`` or ``rank`` is below 1, or ``rank`` exceeds
            ``hidden_dim``.
    """

    config_name = "block"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int = 16,
        chunks: int = 8,
        rank: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        check_positive("BlockFusion", hidden_dim=hidden_dim, chunks=chunks)
        check_rank("BlockFusion", rank, hidden_dim, "hidden_dim")
        self.hidden_dim = hidden_dim
        self.chunks = chunks
        self.rank = rank
        joint = chunks * hidden_dim
        self.projections = nn.ModuleDict({m: nn.Linear(dim, joint) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        # Per block c and rank r, M_{c,r} (first modality) and N_{c,r} (second): [C, R, s, s].
        self.core = nn.ParameterDict(
            {m: core_factor(hidden_dim, chunks, rank) for m in self.modalities}
        )
        self.output = nn.Linear(joint, dim)  # the mode-3 factors C_c side by side
        self.out_dim = dim

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` sum of the normalised block terms."""
        self.check_inputs(features)
        factors = []
        for name in self.modalities:
            output = features[name]
            projected = self.projections[name](present_pooled(output))
            chunked = self.dropout(projected).unflatten(-1, (self.chunks, self.hidden_dim))
            # [B, C, R, s]: chunk c against the rank factors of block c only.
            factors.append(torch.einsum("bci,crki->bcrk", chunked, self.core[name]))
        left, right = factors
        blocks = power_normalise((left * right).sum(dim=2))  # [B, C, s], each block on its own
        return self.output(blocks.flatten(1))
