"""MUTAN: bilinear fusion through a Tucker decomposition with a rank-constrained core."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import present_pooled


def check_rank(owner: str, rank: int, width: int, width_name: str) -> None:
    """Raise unless ``1 <= rank <= width``.

    ``rank`` bounds the rank of each ``width x width`` slice of a core tensor, which cannot
    exceed ``width``: a larger rank adds parameters but no expressiveness.

    Raises:
        ValueError: ``rank`` is below 1 or above ``width``; the message names both.
    """
    check_positive(owner, rank=rank)
    if rank > width:
        raise ValueError(
            f"{owner}: rank ({rank}) must not exceed {width_name} ({width}): it bounds the "
            f"rank of {width} x {width} slices of the core tensor"
        )


def core_factor(width: int, *leading: int) -> nn.Parameter:
    """A ``[*leading, width, width]`` factor of core tensors, initialised as ``nn.Linear`` is.

    Entry ``[..., r, k, i]`` is coordinate ``i`` of the vector ``m_r^k`` whose outer products
    with its partner factor's ``n_r^k`` sum to slice ``k`` of a core; ``leading`` ends with
    the rank (MUTAN: ``(rank,)``; BLOCK: ``(chunks, rank)``, one core per block).
    Used by :class:`MutanFusion` and :class:`~mmexp.fusion.BlockFusion`.
    """
    bound = 1 / math.sqrt(width)  # nn.Linear's default: uniform in +-1/sqrt(fan_in)
    return nn.Parameter(torch.empty(*leading, width, width).uniform_(-bound, bound))


class MutanFusion(FusionStrategy):
    """MUTAN: Multimodal Tucker fusion of two modalities.

    Ben-younes, Cadene, Cord and Thome, "MUTAN: Multimodal Tucker Fusion for Visual
    Question Answering", ICCV 2017. The full bilinear tensor ``T`` (``dim x dim x out``) is
    Tucker-decomposed, ``T = ((T_c x_1 W_x) x_2 W_y) x_3 W_o``: factor matrices project
    each input to width ``t``, the core ``T_c`` (``t x t x t``) makes them interact, and
    ``W_o`` maps the result to the output. Each slice of the core is constrained to rank
    ``R``, ``T_c[:, :, k] = sum_r m_r^k (n_r^k)^T``, so the core is never materialised:

        x' = W_x x + b_x,  y' = W_y y + b_y
        z = sum_r (M_r x') * (N_r y'),  f = W_o z + b_o

    with ``M_r``, ``N_r`` of shape ``t x t`` (row ``k`` of ``M_r`` is ``m_r^k``).

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.Mutan``): one width ``t`` for the projections
    and the core's output (``t_q = t_v = t_o``, as the library's ``mm_dim``); the factor
    projections are affine with no activation, as in the library; the rank factors have no
    biases (the library's ``merge_linear`` layers do), so ``T_c`` is exactly a Tucker core;
    no normalisation (the library's default); dropout on both projections (the library's
    ``dropout_input``); no attention glimpses: the strategy fuses pooled vectors. In the
    paper ``W_o`` maps to the answers; here it maps to ``dim`` (``out_dim``) and the shared
    head follows, as in every other row of an ablation.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`): its projection becomes the learned bias
    ``b_x``, independent of the placeholder features.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width ``t`` of the projections and of the core; ``None`` means ``dim``.
            This is the width :func:`mmexp.fusion.cost.match_params` scales.
        rank: Rank ``R`` of each slice of the core, at most ``hidden_dim``.
        dropout: Dropout on both projections.

    Raises:
        ValueError: ``hidden_dim`` or ``rank`` is below 1, or ``rank`` exceeds
            ``hidden_dim``.
    """

    config_name = "mutan"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        rank: int = 5,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        width = dim if hidden_dim is None else hidden_dim
        check_positive("MutanFusion", hidden_dim=width)
        check_rank("MutanFusion", rank, width, "hidden_dim")
        self.hidden_dim = width
        self.rank = rank
        self.projections = nn.ModuleDict({m: nn.Linear(dim, width) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        # M_r for the first modality, N_r for the second: [R, t, t] each.
        self.core = nn.ParameterDict({m: core_factor(width, rank) for m in self.modalities})
        self.output = nn.Linear(width, dim)  # W_o
        self.out_dim = dim

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` Tucker fusion of the two modalities."""
        self.check_inputs(features)
        factors = []
        for name in self.modalities:
            output = features[name]
            projected = self.projections[name](present_pooled(output))
            # [B, R, t]: (M_r x')_k = <x', m_r^k> for every rank r and core slice k.
            factors.append(torch.einsum("bi,rki->brk", self.dropout(projected), self.core[name]))
        left, right = factors
        return self.output((left * right).sum(dim=1))
