"""Decision-level (late) fusion: one classifier per modality, logits combined."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy

COMBINE_RULES = ("mean", "learned", "poe")


class LateFusion(FusionStrategy):
    """Classify every modality on its own and combine the per-modality decisions.

    Late fusion as defined by Snoek, Worring and Smeulders, "Early versus Late Fusion in
    Semantic Video Analysis", ACM Multimedia 2005: unimodal classifiers whose scores are
    combined into the final decision. Three combination rules are offered:

    * ``"mean"``: the average of the logits of the modalities a sample has;
    * ``"learned"``: a weighted average with one learned weight per modality, softmax-
      normalised over the modalities the sample has;
    * ``"poe"``: a product of experts (Hinton, "Training Products of Experts by Minimizing
      Contrastive Divergence", Neural Computation 2002): the sum of the per-modality
      log-probabilities, i.e. the logits of the normalised product of their distributions.

    The output already is class logits (``produces_logits = True``), so the builder pairs it
    with an identity head and must pass ``num_classes``.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        num_classes: Number of classes of every per-modality classifier.
        combine: ``"mean"``, ``"learned"`` or ``"poe"``.
        hidden_dim: Width of the hidden layer of each per-modality classifier; ``None`` makes
            them linear. This is the width :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout before the output layer of an MLP classifier.

    Raises:
        ValueError: Unknown ``combine`` rule or non-positive ``num_classes``.
    """

    produces_logits = True

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_classes: int,
        combine: str = "mean",
        hidden_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        if combine not in COMBINE_RULES:
            raise ValueError(
                f"LateFusion: combine must be one of {list(COMBINE_RULES)}, got {combine!r}"
            )
        if num_classes <= 0:
            raise ValueError(f"LateFusion: num_classes must be positive, got {num_classes}")
        self.combine = combine
        self.out_dim = num_classes
        self.classifiers = nn.ModuleDict(
            {name: _classifier(dim, num_classes, hidden_dim, dropout) for name in self.modalities}
        )
        # Zeros: the learned rule starts as the plain mean and only departs from it if that
        # helps; the parameter exists only for that rule so the others have no unused weights.
        self.weight_logits = (
            nn.Parameter(torch.zeros(len(self.modalities))) if combine == "learned" else None
        )

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the combined ``[B, num_classes]`` logits.

        A sample's absent modalities are left out of the combination; a sample with no
        modality at all gets zero logits (a uniform prediction).
        """
        self.check_inputs(features)
        present = torch.stack([features[m].present_mask() for m in self.modalities], dim=1)
        logits = torch.stack(
            [
                self.classifiers[m](
                    features[m].pooled.masked_fill(~features[m].present_mask()[:, None], 0.0)
                )
                for m in self.modalities
            ],
            dim=1,
        )  # [B, M, C]
        if self.combine == "poe":
            log_probs = logits.log_softmax(dim=-1).masked_fill(~present[..., None], 0.0)
            return log_probs.sum(dim=1)
        if self.weight_logits is None:  # "mean"
            weights = present.to(logits.dtype)
        else:
            weights = self.weight_logits.softmax(dim=0) * present.to(logits.dtype)
        # Renormalise over the modalities the sample has; the clamp keeps a sample with none
        # at zero instead of dividing by zero.
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        logits = logits.masked_fill(~present[..., None], 0.0)
        return (weights[..., None] * logits).sum(dim=1)


def _classifier(dim: int, num_classes: int, hidden_dim: int | None, dropout: float) -> nn.Module:
    """A linear classifier, or a one-hidden-layer MLP when ``hidden_dim`` is given."""
    if hidden_dim is None:
        return nn.Linear(dim, num_classes)
    return nn.Sequential(
        nn.Linear(dim, hidden_dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_dim, num_classes),
    )
