"""Unimodal baseline: the pooled features of one modality, the others ignored."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import zero_absent


class UnimodalFusion(FusionStrategy):
    """Pass on the pooled vector of a single modality and ignore all other modalities.

    The baseline every multimodal result has to beat: Wang, Tran and Feiszli, "What Makes
    Training Multi-modal Classification Networks Hard?", CVPR 2020, show that the best
    unimodal network often matches or outperforms naively fused ones. Keeping the other
    encoders in the model (their features are simply unused) lets an ablation change only the
    fusion config while the data pipeline stays identical.

    The strategy is parameter-free, so :func:`mmexp.fusion.cost.match_params` has nothing to
    scale: match the budget through the head or the encoders instead.

    Args:
        modalities: Names of the modalities the data provide.
        dim: Width of every encoder output.
        modality: The modality whose features are used; ``None`` picks the first of
            ``modalities``.

    Attributes:
        modality: The modality whose features are used.

    Raises:
        ValueError: ``modality`` is not one of ``modalities``.
    """

    config_name = "unimodal"

    judges_pairs = False  # one modality only

    def __init__(self, modalities: Sequence[str], dim: int, modality: str | None = None) -> None:
        super().__init__(modalities, dim)
        self.modality = self.fused_modality("modality", modality)

    def extra_repr(self) -> str:
        """Name the used modality in the module summary, where the choice must be visible."""
        ignored = [m for m in self.modalities if m != self.modality]
        return f"modality={self.modality!r}, ignored={ignored}"

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` pooled vector of :attr:`modality`.

        Samples that lack the modality get a zero vector rather than the placeholder
        features, so the head sees the same input for every such sample.
        """
        self.check_inputs(features)
        output = features[self.modality]
        return zero_absent(output.pooled, output.present_mask())
