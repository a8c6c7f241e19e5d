"""Feature-level fusion by elementwise sum or product of the pooled features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy


class _ElementwiseFusion(FusionStrategy):
    """Reduce the pooled vectors of all modalities with one elementwise operation.

    Subclasses set :attr:`identity`, the neutral element that replaces the features of a
    sample lacking a modality, and implement :meth:`reduce`.
    """

    identity: float = 0.0

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = dim

    def reduce(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Combine two ``[B, dim]`` tensors elementwise."""
        raise NotImplementedError  # pragma: no cover - abstract

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` elementwise reduction over the modalities."""
        self.check_inputs(features)
        fused: torch.Tensor | None = None
        for name in self.modalities:
            output = features[name]
            # The neutral element makes an absent modality drop out of the reduction exactly,
            # so a sample with one modality missing is fused from the remaining ones.
            pooled = output.pooled.masked_fill(~output.present_mask()[:, None], self.identity)
            fused = pooled if fused is None else self.reduce(fused, pooled)
        assert fused is not None  # at least one modality, checked by the base class
        return fused


class SumFusion(_ElementwiseFusion):
    """Elementwise sum of the pooled vector of every modality.

    The additive feature-level baseline of Baltrusaitis, Ahuja and Morency, "Multimodal
    Machine Learning: A Survey and Taxonomy", TPAMI 2019 (Sec. 5.1): cheaper than
    concatenation (the output keeps width ``dim``) but it can only model additive
    interactions before the head. A missing modality contributes zero.

    Parameter-free: :func:`mmexp.fusion.cost.match_params` has nothing to scale.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
    """

    config_name = "sum"

    # Matching trains the towers to align (a close to b for a match), and then the sum of a
    # pair, a + b, cannot be told from c + c with c = (a + b) / 2: no head can judge it.
    judges_pairs = False

    identity = 0.0

    def reduce(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Add two ``[B, dim]`` tensors."""
        return left + right


class ProductFusion(_ElementwiseFusion):
    """Elementwise (Hadamard) product of the pooled vector of every modality.

    The multiplicative fusion of the VQA baseline (Antol et al., "VQA: Visual Question
    Answering", ICCV 2015), later analysed as low-rank bilinear pooling by Kim et al.,
    "Hadamard Product for Low-rank Bilinear Pooling", ICLR 2017. Each output channel is a
    multiplicative interaction of the modalities. A missing modality contributes one, so the
    product runs over the modalities the sample has.

    Parameter-free: :func:`mmexp.fusion.cost.match_params` has nothing to scale.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
    """

    config_name = "product"

    identity = 1.0

    def reduce(self, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """Multiply two ``[B, dim]`` tensors elementwise."""
        return left * right
