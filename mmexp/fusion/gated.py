"""Gated Multimodal Unit: learned per-feature gates choose between the modalities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import masked_softmax, presence, zero_absent

GATE_KINDS = ("paper", "sigmoid", "softmax")


class GatedFusion(FusionStrategy):
    """Gated Multimodal Unit (GMU) for two or more modalities.

    Arevalo, Solorio, Montes-y-Gómez and González, "Gated Multimodal Units for Information
    Fusion", ICLR 2017 Workshop. Every modality is mapped to a candidate
    ``h_m = tanh(W_m x_m)``; gates computed from the concatenation of all inputs decide, per
    output unit, how much each modality contributes.

    ``gate="paper"`` (default) is the paper's form: for two modalities one gate
    ``z = sigmoid(W_z [x_1; x_2])`` and ``h = z * h_1 + (1 - z) * h_2``; for ``M >= 3`` the
    paper's N-modal unit, an independent gate per modality
    ``z_m = sigmoid(W_zm [x_1; ...; x_M])`` and ``h = sum_m z_m * h_m`` (gates not
    normalised across modalities). ``gate="sigmoid"`` uses the independent gates for two
    modalities as well; ``gate="softmax"`` normalises the gates across modalities (a
    mixture-of-experts variant, not the paper's).

    Differences from the authors' code (johnarevalo/gmu-mmimdb), which are immaterial to the
    function class: the linear maps have biases, and the gates read the raw inputs as the
    paper writes them (the code reads the projected features).

    A modality a sample lacks gets a zero gate (under ``softmax`` the others are
    renormalised) and zeros in the gate input, so its placeholder cannot leak in.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        hidden_dim: Width of the candidates and of the output; ``None`` means ``dim``. This
            is the width :func:`mmexp.fusion.cost.match_params` scales.
        gate: ``"paper"``, ``"sigmoid"`` or ``"softmax"``.

    Raises:
        ValueError: Unknown ``gate``.
    """

    config_name = "gated"

    min_modalities = 2

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        hidden_dim: int | None = None,
        gate: str = "paper",
    ) -> None:
        super().__init__(modalities, dim)
        if gate not in GATE_KINDS:
            raise ValueError(f"GatedFusion: gate must be one of {list(GATE_KINDS)}, got {gate!r}")
        hidden = hidden_dim or dim
        count = len(self.modalities)
        # The paper's bimodal unit has a single gate z (the other modality gets 1 - z).
        self.gate_kind = (
            "pair" if gate == "paper" and count == 2 else ("sigmoid" if gate == "paper" else gate)
        )
        self.hidden_dim = hidden
        self.out_dim = hidden
        self.candidates = nn.ModuleDict({m: nn.Linear(dim, hidden) for m in self.modalities})
        # Gates per output unit (one per modality, or the single z), read from every modality.
        gate_count = 1 if self.gate_kind == "pair" else count
        self.gates = nn.Linear(dim * count, hidden * gate_count)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the gated ``[B, hidden_dim]`` combination of the modalities."""
        self.check_inputs(features)
        present = presence(features, self.modalities)
        inputs = [
            zero_absent(features[m].pooled, present[:, i]) for i, m in enumerate(self.modalities)
        ]
        candidates = torch.stack(
            [torch.tanh(self.candidates[m](inputs[i])) for i, m in enumerate(self.modalities)],
            dim=1,
        )  # [B, M, H]
        logits = self.gates(torch.cat(inputs, dim=-1))
        if self.gate_kind == "pair":
            gate = torch.sigmoid(logits)
            weights = torch.stack([gate, 1.0 - gate], dim=1)
        elif self.gate_kind == "softmax":
            # Normalised over the modalities the sample has; all zero (not NaN) for a sample
            # with none.
            logits = logits.view(-1, len(self.modalities), self.hidden_dim)
            weights = masked_softmax(logits, present, dim=1)
        else:
            weights = torch.sigmoid(logits.view(-1, len(self.modalities), self.hidden_dim))
        # An absent modality's gate is zero (after the masked softmax it is already).
        weights = zero_absent(weights, present)
        return (weights * candidates).sum(dim=1)
