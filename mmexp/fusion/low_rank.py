"""Low-rank Multimodal Fusion: the tensor fusion computed through modality-specific factors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import zero_absent


class LowRankFusion(FusionStrategy):
    """Low-rank Multimodal Fusion (LMF).

    Liu, Shen, Lakshminarasimhan, Liang, Zadeh and Morency, "Efficient Low-rank Multimodal
    Fusion with Modality-Specific Factors", ACL 2018. The weight tensor of a Tensor Fusion
    Network is decomposed into ``rank`` modality-specific factors, so the fusion
    ``h = sum_i lambda_i * prod_m (W_m^(i) z_m) + b`` with ``z_m = [x_m; 1]`` costs linear
    rather than exponential time and parameters in the number of modalities, and the outer
    product is never materialised.

    A modality a sample lacks enters as ``z_m = [0; 1]`` (the same convention as
    :class:`~mmexp.fusion.tensor.TensorFusion`), so its factor contributes only a learned
    constant that does not depend on the placeholder features.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        rank: Rank of the decomposition.
        hidden_dim: Width of the output; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.

    Raises:
        ValueError: ``rank`` is not positive.
    """

    config_name = "low_rank"

    min_modalities = 2

    def __init__(
        self, modalities: Sequence[str], dim: int, rank: int = 4, hidden_dim: int | None = None
    ) -> None:
        super().__init__(modalities, dim)
        if rank <= 0:
            raise ValueError(f"LowRankFusion: rank must be positive, got {rank}")
        self.rank = rank
        self.out_dim = hidden_dim or dim
        self.factors = nn.ParameterDict(
            {m: nn.Parameter(torch.empty(rank, dim + 1, self.out_dim)) for m in self.modalities}
        )
        for factor in self.factors.values():
            nn.init.xavier_normal_(factor)  # the initialisation of the authors' code
        self.rank_weights = nn.Parameter(torch.empty(1, rank))
        nn.init.xavier_normal_(self.rank_weights)
        self.bias = nn.Parameter(torch.zeros(self.out_dim))

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, out_dim]`` low-rank fused representation."""
        self.check_inputs(features)
        fused: torch.Tensor | None = None
        for name in self.modalities:
            output = features[name]
            pooled = zero_absent(output.pooled, output.present_mask())
            extended = torch.cat([pooled, pooled.new_ones(pooled.shape[0], 1)], dim=-1)
            factor = torch.einsum("bd,rdh->brh", extended, self.factors[name])  # [B, rank, H]
            fused = factor if fused is None else fused * factor
        assert fused is not None  # at least two modalities, checked by the base class
        return torch.einsum("r,brh->bh", self.rank_weights[0], fused) + self.bias
