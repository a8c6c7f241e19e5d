"""FiLM: one modality modulates the token features of the others channel by channel."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import valid_tokens, zero_absent


class FiLMFusion(FusionStrategy):
    """Feature-wise Linear Modulation of the other modalities by a conditioning modality.

    Perez, Strub, de Vries, Dumoulin and Courville, "FiLM: Visual Reasoning with a General
    Conditioning Layer", AAAI 2018. The pooled vector of the ``conditioning`` modality is
    mapped to a per-channel scale and shift, ``gamma = 1 + dgamma`` and ``beta`` (predicting
    the deviation from one, as the paper recommends), that modulate the tokens of every other
    modality inside a residual block shaped like the paper's: ``x + W_2 ReLU(gamma * N(W_1 x)
    + beta)``, with ``N`` a normalisation without affine parameters (FiLM supplies them).
    Each modulated sequence is masked-mean pooled and the output concatenates the modulated
    pooled vectors in modality order (``out_dim = dim * (M - 1)``): as in the paper, the
    classifier sees the conditioning modality only through the modulation.
    ``concat_conditioning=True`` also puts the conditioning pooled vector into the output
    (``out_dim = dim * M``), a variant that contains concatenation fusion and so is not a
    clean "FiLM vs concat" row.

    Simplified: one FiLM-ed residual block per modulated modality instead of the paper's four
    convolutional ones, a LayerNorm without affine parameters in place of BatchNorm, and the
    residual wraps the whole block with a linear output projection.

    A sample that lacks the conditioning modality gets the identity modulation
    (``gamma = 1, beta = 0``) (and a zero conditioning slot); a sample that lacks a modulated
    modality gets a zero slot for it.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        conditioning: The modulating modality; ``None`` means ``"text"`` if it is fused (the
            paper conditions vision on language), else the first of ``modalities``.
        hidden_dim: Width of the modulated hidden layer; ``None`` means ``dim``. This is the
            width :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout before the output projection of each block.
        concat_conditioning: Also output the conditioning modality's pooled vector.

    Raises:
        ValueError: ``conditioning`` is not one of ``modalities``.
    """

    config_name = "film"

    uses_tokens = True
    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        conditioning: str | None = None,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        concat_conditioning: bool = False,
    ) -> None:
        super().__init__(modalities, dim)
        default = "text" if "text" in self.modalities else None
        conditioning = self.fused_modality("conditioning", conditioning, default)
        hidden = hidden_dim or dim
        self.conditioning = conditioning
        self.targets = tuple(m for m in self.modalities if m != conditioning)
        self.concat_conditioning = concat_conditioning
        self.outputs_order = self.modalities if concat_conditioning else self.targets
        self.out_dim = dim * len(self.outputs_order)
        # One FiLM generator and one residual block per modulated modality.
        self.generators = nn.ModuleDict({m: nn.Linear(dim, 2 * hidden) for m in self.targets})
        self.inputs = nn.ModuleDict({m: nn.Linear(dim, hidden) for m in self.targets})
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False)
        self.dropout = nn.Dropout(dropout)
        self.outputs = nn.ModuleDict({m: nn.Linear(hidden, dim) for m in self.targets})

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, out_dim]`` modulated (and conditioning) pooled vectors."""
        self.check_inputs(features)
        condition = features[self.conditioning]
        has_condition = condition.present_mask()
        pooled = {self.conditioning: zero_absent(condition.pooled, has_condition)}
        for name in self.targets:
            delta_gamma, beta = self.generators[name](pooled[self.conditioning]).chunk(2, dim=-1)
            # Identity modulation where the conditioning modality is absent, so the target is
            # processed as if unconditioned instead of by a placeholder-derived gamma/beta.
            gamma = (1.0 + delta_gamma).masked_fill(~has_condition[:, None], 1.0)
            beta = zero_absent(beta, has_condition)
            tokens, real = valid_tokens(features[name])
            hidden = self.norm(self.inputs[name](tokens))
            hidden = torch.relu(gamma[:, None] * hidden + beta[:, None])
            modulated = tokens + self.outputs[name](self.dropout(hidden))
            pooled[name] = masked_mean(modulated, real)
        return torch.cat([pooled[m] for m in self.outputs_order], dim=-1)
