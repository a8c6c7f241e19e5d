"""Decision-level (late) fusion: one classifier per modality, logits combined."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.layers import presence, zero_absent

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

    Each per-modality classifier is an :class:`~mmexp.lit.heads.MLPHead` of the shape every
    other row of an ablation gets as its shared head (``conf/fusion/late.yaml`` reads
    ``model.head``), so late fusion does not lose to a unimodal baseline on head size alone.
    With ``aux_weight > 0`` each per-modality classifier is also trained on the label by
    itself (:meth:`fuse_with_auxiliary`), as classic late fusion trains its unimodal
    classifiers.

    The output already is class logits (``produces_logits = True``), so the builder pairs it
    with an identity head and must pass ``num_classes``.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output.
        num_classes: Number of classes of every per-modality classifier.
        combine: ``"mean"``, ``"learned"`` or ``"poe"``.
        hidden_dims: Hidden widths of each per-modality classifier; empty makes them linear.
            These are the widths :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout before each linear layer after the first of a classifier.
        aux_weight: Weight of the per-modality auxiliary losses (0: trained on the fused
            logits only).

    Raises:
        ValueError: Unknown ``combine`` rule, non-positive ``num_classes`` or negative
            ``aux_weight``.
    """

    config_name = "late"

    judges_pairs = False  # per-modality decisions, never compared

    produces_logits = True

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        num_classes: int,
        combine: str = "mean",
        hidden_dims: Sequence[int] = (256,),
        dropout: float = 0.1,
        aux_weight: float = 0.0,
    ) -> None:
        super().__init__(modalities, dim)
        if combine not in COMBINE_RULES:
            raise ValueError(
                f"LateFusion: combine must be one of {list(COMBINE_RULES)}, got {combine!r}"
            )
        if num_classes <= 0:
            raise ValueError(f"LateFusion: num_classes must be positive, got {num_classes}")
        if aux_weight < 0:
            raise ValueError(f"LateFusion: aux_weight must be >= 0, got {aux_weight}")
        self.combine = combine
        self.out_dim = num_classes
        self.aux_weight = aux_weight
        # Imported here, not at the top: MLPHead builds on mmexp.fusion.layers, so importing
        # mmexp.lit.heads first would otherwise import this module before MLPHead exists.
        from mmexp.lit.heads import MLPHead

        self.classifiers = nn.ModuleDict(
            {m: MLPHead(dim, num_classes, tuple(hidden_dims), dropout) for m in self.modalities}
        )
        # Zeros: the learned rule starts as the plain mean and only departs from it if that
        # helps; the parameter exists only for that rule so the others have no unused weights.
        self.weight_logits = (
            nn.Parameter(torch.zeros(len(self.modalities))) if combine == "learned" else None
        )

    def modality_logits(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return every per-modality classifier's ``[B, M, num_classes]`` logits.

        An absent modality's classifier reads zeros; its logits are left out by the callers.
        """
        self.check_inputs(features)
        return torch.stack(
            [
                self.classifiers[m](zero_absent(features[m].pooled, features[m].present_mask()))
                for m in self.modalities
            ],
            dim=1,
        )

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the combined ``[B, num_classes]`` logits.

        A sample's absent modalities are left out of the combination; a sample with no
        modality at all gets zero logits (a uniform prediction).
        """
        return self.combine_logits(self.modality_logits(features), self.presence(features))

    def presence(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, M]`` mask of the modalities each sample has."""
        return presence(features, self.modalities)

    def combine_logits(self, logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Combine ``[B, M, C]`` per-modality logits over the present modalities."""
        if self.combine == "poe":
            return zero_absent(logits.log_softmax(dim=-1), present).sum(dim=1)
        if self.weight_logits is None:  # "mean"
            weights = present.to(logits.dtype)
        else:
            weights = self.weight_logits.softmax(dim=0) * present.to(logits.dtype)
        # Renormalise over the modalities the sample has; the clamp keeps a sample with none
        # at zero instead of dividing by zero.
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(1e-12)
        logits = zero_absent(logits, present)
        return (weights[..., None] * logits).sum(dim=1)

    def fuse_with_auxiliary(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The combined logits and, with ``aux_weight > 0``, each modality's own logits.

        Returns:
            ``(logits, auxiliary)``: ``auxiliary`` maps each modality to its ``[B, C]``
            logits and ``[B]`` presence mask (empty when ``aux_weight`` is 0).
        """
        logits = self.modality_logits(features)
        present = self.presence(features)
        combined = self.combine_logits(logits, present)
        if self.aux_weight == 0:
            return combined, {}
        return combined, {m: (logits[:, i], present[:, i]) for i, m in enumerate(self.modalities)}
