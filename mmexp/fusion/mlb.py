"""Multimodal Low-rank Bilinear pooling (MLB): a Hadamard product of projected modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, check_positive
from mmexp.fusion.layers import present_pooled

#: The activations of the projections: the paper's tanh, or none (the plain low-rank form).
ACTIVATIONS = ("tanh", "none")


class MLBFusion(FusionStrategy):
    """Multimodal Low-rank Bilinear (MLB) pooling of two modalities.

    Kim, On, Lim, Kim, Ha and Zhang, "Hadamard Product for Low-rank Bilinear Pooling",
    ICLR 2017. A bilinear model ``f_k = x^T W_k y`` needs a ``dim x dim`` matrix per output.
    MLB factorises all of them through one joint space of width ``d``,
    ``W_k = U^T diag(P_k) V`` with ``U`` and ``V`` of shape ``d x dim``, so the bilinear
    form becomes a Hadamard product of two projections:

        f = P (tanh(U x + b_x) * tanh(V y + b_y)) + b

    With ``activation="none"`` the output is exactly the bilinear form of ``[x; 1]`` and
    ``[y; 1]`` with that rank-``d`` weight tensor (the biases add the linear terms); the
    paper applies tanh to both projections, which makes it a non-linear variant.

    Differences from the paper and from the BLOCK authors' library
    (``block.bootstrap.pytorch``, ``fusions.MLB``): tanh on the projections as in the paper
    (the library defaults to ReLU); dropout on each activated projection before the product
    (the library's ``dropout_input``); no activation after ``P`` (the library applies ReLU)
    and no attention glimpses: the strategy fuses pooled vectors. In the paper ``P`` maps
    to the answers; here it maps back to ``dim`` (``out_dim``) and the shared head follows,
    as in every other row of an ablation.

    Defined for two modalities (``max_modalities``), as in the paper and the library. A
    modality a sample lacks enters as ``x = 0`` (the convention of
    :class:`~mmexp.fusion.low_rank.LowRankFusion`): its factor becomes the learned constant
    ``tanh(b_x)``, independent of the placeholder features.

    Args:
        modalities: Names of the two fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width ``d`` of the joint space; ``None`` means ``dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        activation: ``"tanh"`` (the paper) or ``"none"``.
        dropout: Dropout on each activated projection.

    Raises:
        ValueError: ``hidden_dim`` is below 1, or ``activation`` is unknown.
    """

    config_name = "mlb"

    min_modalities = 2
    max_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        activation: str = "tanh",
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        width = dim if hidden_dim is None else hidden_dim
        check_positive("MLBFusion", hidden_dim=width)
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"MLBFusion: activation must be one of {list(ACTIVATIONS)}, got {activation!r}"
            )
        self.hidden_dim = width
        self.activation = activation
        # U and V of the paper, one per modality in the order of `modalities`.
        self.projections = nn.ModuleDict({m: nn.Linear(dim, width) for m in self.modalities})
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(width, dim)  # P and b
        self.out_dim = dim

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` projection of the Hadamard product."""
        self.check_inputs(features)
        factors = []
        for name in self.modalities:
            output = features[name]
            projected = self.projections[name](present_pooled(output))
            if self.activation == "tanh":
                projected = torch.tanh(projected)
            factors.append(self.dropout(projected))
        left, right = factors
        return self.output(left * right)
