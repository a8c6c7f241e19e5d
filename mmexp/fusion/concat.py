"""Feature-level (early) fusion by concatenation of pooled features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import zero_absent


class ConcatFusion(FusionStrategy):
    """Concatenate the pooled vector of every modality.

    The standard feature-level fusion baseline (e.g. Baltrusaitis, Ahuja and Morency,
    "Multimodal Machine Learning: A Survey and Taxonomy", TPAMI 2019, Sec. 5): an MLP head on
    top of the concatenation can model any interaction between the modalities. A modality
    missing for a sample contributes a zero block.

    Args:
        modalities: Names of the fused modalities, in concatenation order.
        dim: Width of every encoder output.
    """

    config_name = "concat"

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__(modalities, dim)
        self.out_dim = dim * len(self.modalities)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return ``[B, len(modalities) * dim]``."""
        self.check_inputs(features)
        # An absent modality contributes zeros, so its placeholder features (NaN included)
        # cannot leak in.
        parts = [
            zero_absent(features[m].pooled, features[m].present_mask()) for m in self.modalities
        ]
        return torch.cat(parts, dim=-1)
