"""Attention pooling over modalities: a learned score weighs each modality's vector."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import masked_softmax, presence, zero_absent


class AttentionFusion(FusionStrategy):
    """Attention-weighted sum of the pooled vectors of the modalities.

    Modality attention as in Hori et al., "Attention-Based Multimodal Fusion for Video
    Description", ICCV 2017: each modality gets a scalar relevance score
    ``e_m = w^T tanh(W_m x_m + b_m)`` from a modality-specific projection and a shared
    learned query ``w``; the scores are softmax-normalised over the modalities and the fused
    vector is ``sum_m alpha_m x_m``. Unlike a fixed average, the weights depend on the
    sample, so an uninformative modality can be down-weighted per input.

    Simplified: the paper's scores also read the decoder state (``W_B s_{i-1}``), which a
    classifier does not have, and its values are modality-specific projections
    ``W_ck x_k``; here the values are the encoder outputs themselves (already projected to
    ``dim`` by each encoder).

    Modalities a sample lacks are masked out of the softmax; a sample with none gets zeros.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output (and of the output).
        hidden_dim: Width of the scoring projections; ``None`` means ``dim``. This is the
            width :func:`mmexp.fusion.cost.match_params` scales.
    """

    config_name = "attention"

    # A weighted mean of the vectors, like a sum (see SumFusion), cannot tell a matching pair
    # of aligned towers from another.
    judges_pairs = False

    def __init__(self, modalities: Sequence[str], dim: int, hidden_dim: int | None = None) -> None:
        super().__init__(modalities, dim)
        hidden = hidden_dim or dim
        self.out_dim = dim
        self.keys = nn.ModuleDict({m: nn.Linear(dim, hidden) for m in self.modalities})
        self.query = nn.Linear(hidden, 1, bias=False)

    def modality_weights(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, M]`` attention weights over the modalities (zero where absent)."""
        present = presence(features, self.modalities)
        scores = torch.cat(
            [
                self.query(torch.tanh(self.keys[m](self._pooled(features[m]))))
                for m in self.modalities
            ],
            dim=1,
        )  # [B, M]
        # A sample with no modality gets all-zero weights, not NaN.
        return masked_softmax(scores, present, dim=1)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` attention-weighted sum of the pooled vectors."""
        self.check_inputs(features)
        weights = self.modality_weights(features)
        values = torch.stack([self._pooled(features[m]) for m in self.modalities], dim=1)
        return (weights[..., None] * values).sum(dim=1)

    @staticmethod
    def _pooled(output: EncoderOutput) -> torch.Tensor:
        """Pooled vector with absent samples zeroed, so placeholders never enter a product."""
        return zero_absent(output.pooled, output.present_mask())
