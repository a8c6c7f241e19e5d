"""Gated Multimodal Unit: learned per-feature gates choose between the modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy

GATE_KINDS = ("softmax", "sigmoid")


class GatedFusion(FusionStrategy):
    """Gated Multimodal Unit (GMU), generalised to any number of modalities.

    Arevalo, Solorio, Montes-y-Gómez and González, "Gated Multimodal Units for Information
    Fusion", ICLR 2017 Workshop. Every modality is mapped to a candidate
    ``h_m = tanh(W_m x_m)``; gates computed from the concatenation of all inputs decide, per
    output unit, how much each modality contributes: ``h = sum_m z_m * h_m``.

    For two modalities the paper uses ``z = sigmoid(W_z [x_1; x_2])`` and
    ``h = z * h_1 + (1 - z) * h_2``; its N-modality extension normalises the gates across
    modalities, which is ``gate="softmax"`` here (for two modalities the softmax of two logits
    is exactly that sigmoid form). ``gate="sigmoid"`` instead gives every modality an
    independent gate in ``(0, 1)``.

    A modality a sample lacks gets a zero gate (its softmax logit is masked, so the others
    are renormalised) and zeros in the gate input, so its placeholder cannot leak in.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width of the candidates and of the output; ``None`` means ``dim``. This
            is the width :func:`mmexp.fusion.cost.match_params` scales.
        gate: ``"softmax"`` (gates sum to one across modalities) or ``"sigmoid"``.

    Raises:
        ValueError: Unknown ``gate``.
    """

    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        gate: str = "softmax",
    ) -> None:
        super().__init__(modalities, dim)
        if gate not in GATE_KINDS:
            raise ValueError(f"GatedFusion: gate must be one of {list(GATE_KINDS)}, got {gate!r}")
        hidden = hidden_dim or dim
        self.gate_kind = gate
        self.hidden_dim = hidden
        self.out_dim = hidden
        self.candidates = nn.ModuleDict({m: nn.Linear(dim, hidden) for m in self.modalities})
        # One gate per modality and per output unit, all read from every modality.
        self.gates = nn.Linear(dim * len(self.modalities), hidden * len(self.modalities))

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the gated ``[B, hidden_dim]`` combination of the modalities."""
        self.check_inputs(features)
        present = torch.stack([features[m].present_mask() for m in self.modalities], dim=1)
        inputs = [
            features[m].pooled.masked_fill(~present[:, i, None], 0.0)
            for i, m in enumerate(self.modalities)
        ]
        candidates = torch.stack(
            [torch.tanh(self.candidates[m](inputs[i])) for i, m in enumerate(self.modalities)],
            dim=1,
        )  # [B, M, H]
        logits = self.gates(torch.cat(inputs, dim=-1)).view(
            -1, len(self.modalities), self.hidden_dim
        )
        absent = ~present[..., None]
        if self.gate_kind == "softmax":
            # A finite fill (not -inf) keeps a sample with no modality at all NaN-free: its
            # gates become uniform and are then zeroed below.
            logits = logits.masked_fill(absent, torch.finfo(logits.dtype).min)
            weights = logits.softmax(dim=1)
        else:
            weights = torch.sigmoid(logits)
        weights = weights.masked_fill(absent, 0.0)
        return (weights * candidates).sum(dim=1)
