"""Multimodal Factorized Bilinear pooling (MFB): rank-k bilinear outputs by sum pooling."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import power_normalise, present_pooled


def check_factor(owner: str, factor: int, dim: int) -> None:
    """Raise unless ``1 <= factor <= dim``.

    The factor ``k`` is the rank of each output's ``dim x dim`` bilinear matrix
    ``W_i = U_i V_i^T``; a rank above ``dim`` adds parameters but no expressiveness.

    Raises:
        ValueError: ``factor`` is below 1 or above ``dim``; the message names both.
    """
    check_positive(owner, factor=factor)
    if factor > dim:
        raise ValueError(
            f"{owner}: factor ({factor}) must not exceed dim ({dim}): it is the rank of "
            f"{dim} x {dim} bilinear matrices"
        )


def sum_pool(expanded: torch.Tensor, factor: int) -> torch.Tensor:
    """Sum each run of ``factor`` consecutive features: ``[B, o * k] -> [B, o]``.

    Output ``i`` sums features ``i * k`` to ``i * k + k - 1``, the paper's non-overlapping
    window; with factored projections it is the rank-``k`` bilinear form of output ``i``.
    Used by :class:`MFBFusion` and :class:`~mmexp.fusion.MFHFusion`.
    """
    return expanded.unflatten(-1, (-1, factor)).sum(dim=-1)


class MFBFusion(FusionStrategy):
    """Multi-modal Factorized Bilinear (MFB) pooling of two modalities.

    Yu, Yu, Fan and Tao, "Multi-modal Factorized Bilinear Pooling with Co-Attention Learning
    for Visual Question Answering", ICCV 2017. Each of the ``o`` outputs is a bilinear form
    ``z_i = x^T W_i y`` whose matrix is factorised with rank ``k``, ``W_i = U_i V_i^T``
    (``U_i``, ``V_i`` of shape ``dim x k``). All outputs come from one expansion of each
    input to width ``k * o``, an elementwise product, and sum pooling over windows of
    ``k``; the result is power- and L2-normalised:

        z = SumPool(Dropout((U x + b_x) * (V y + b_y)), k)
        z = sign(z) sqrt(|z|),  z = z / ||z||

    and a linear layer maps ``z`` to ``dim``.

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.MFB``): the expansions have biases, so ``z_i``
    is the rank-``k`` bilinear form of ``[x; 1]`` and ``[y; 1]`` (linear terms included); no
    activation on the expansions (the library defaults to ReLU) and none after the output
    layer (the library applies ReLU); normalisation always on (the library's ``normalize``
    defaults to off, its VQA options turn it on); dropout after the product and before the
    sum pooling, as in the paper (the library's ``dropout_pre_norm``); no co-attention: the
    strategy fuses pooled vectors. In the paper the classifier reads ``z``; here the output
    layer (the library's ``linear_out``) maps it to ``dim`` (``out_dim``) and the shared
    head follows, as in every other row of an ablation.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`): its expansion becomes the learned bias
    ``b_x``, independent of the placeholder features.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Number ``o`` of pooled outputs; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        factor: Rank ``k`` of each output's bilinear matrix (the paper uses 5).
        dropout: Dropout on the expanded product.

    Raises:
        ValueError: ``hidden_dim`` or ``factor`` is below 1, or ``factor`` exceeds ``dim``.
    """

    config_name = "mfb"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        factor: int = 5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        width = dim if hidden_dim is None else hidden_dim
        check_positive("MFBFusion", hidden_dim=width)
        check_factor("MFBFusion", factor, dim)
        self.hidden_dim = width
        self.factor = factor
        # U and V of the paper, one expansion to k * o per modality.
        self.expansions = nn.ModuleDict(
            {m: nn.Linear(dim, factor * width) for m in self.modalities}
        )
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width, dim)
        self.out_dim = dim

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` projection of the normalised pooled bilinear features."""
        self.check_inputs(features)
        left, right = (self.expansions[m](present_pooled(features[m])) for m in self.modalities)
        pooled = sum_pool(self.dropout(left * right), self.factor)
        return self.output(power_normalise(pooled))
