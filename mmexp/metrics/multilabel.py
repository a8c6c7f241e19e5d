"""Multi-label metrics (MM-IMDb's genres): F1 averaged four ways, as papers report them."""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import MultilabelAveragePrecision, MultilabelF1Score


def _probabilities(logits: torch.Tensor) -> torch.Tensor:
    # float64: float32's sigmoid rounds every logit above ~17 to 1, ties that would change the
    # average precision, and rounds tiny positive logits to 0.5, which the threshold rejects.
    return torch.sigmoid(logits.double())


class SamplesF1(Metric):
    """F1 of each sample's predicted label set against its true set, averaged over samples.

    This is scikit-learn's ``average="samples"``; a sample with no true and no predicted
    label scores 0, as scikit-learn does by default.

    Args:
        threshold: Probability above which a label is predicted.
    """

    full_state_update = False

    def __init__(self, threshold: float = 0.5) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state(
            "f1_sum", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
        )
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Add ``[B, C]`` logits and ``[B, C]`` multi-hot targets."""
        predicted = _probabilities(logits) > self.threshold
        truth = targets.bool()
        overlap = (predicted & truth).sum(dim=1).double()
        sizes = (predicted.sum(dim=1) + truth.sum(dim=1)).double()
        self.f1_sum += torch.where(sizes > 0, 2 * overlap / sizes.clamp_min(1), 0.0).sum()
        self.count += len(logits)

    def compute(self) -> torch.Tensor:
        """Mean per-sample F1."""
        return (self.f1_sum / self.count.clamp_min(1)).float()


class ProbabilityF1Score(MultilabelF1Score):
    """torchmetrics' multi-label F1 updated with logits: it scores their sigmoid.

    torchmetrics applies a sigmoid only to an update with some value outside [0, 1]; one whose
    logits all lie within [0, 1] would be thresholded at 0.5 as if they were probabilities.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``[B, C]`` logits and ``[B, C]`` multi-hot targets."""
        super().update(_probabilities(preds), target)


class ProbabilityAveragePrecision(MultilabelAveragePrecision):
    """torchmetrics' multi-label average precision updated with logits; see ProbabilityF1Score.

    The ranking is the logits' either way, but only if every update is on one scale: a batch
    left as logits would otherwise be ranked against another's sigmoid.
    """

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        """Add ``[B, C]`` logits and ``[B, C]`` multi-hot targets."""
        super().update(_probabilities(preds), target)


def multilabel_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Micro, macro, weighted and samples F1 and macro average precision (mAP).

    Args:
        num_classes: Number of labels.
        prefix: Split name, e.g. ``"val"``.

    Returns:
        A collection updated with ``(logits, multi-hot targets)``, named ``<prefix>/<metric>``;
        every metric scores the logits' sigmoid (a label is predicted where its logit is > 0).
    """
    # No value checks on the per-step training metrics (a device sync each; see
    # classification_metrics).
    checks = {"validate_args": prefix != "train"}
    return MetricCollection(
        {
            "f1_micro": ProbabilityF1Score(num_classes, average="micro", **checks),
            "f1_macro": ProbabilityF1Score(num_classes, average="macro", **checks),
            "f1_weighted": ProbabilityF1Score(num_classes, average="weighted", **checks),
            "f1_samples": SamplesF1(),
            "map": ProbabilityAveragePrecision(num_classes, average="macro", **checks),
        },
        prefix=f"{prefix}/",
    )


class MultilabelBCELoss(nn.Module):
    """Binary cross-entropy on logits against integer multi-hot targets.

    The data give ``long`` multi-hot targets (what the metrics take); the loss needs floats.

    Args:
        pos_weight: Optional ``[C]`` weight of positives per label (rare genres).
    """

    def __init__(self, pos_weight: list[float] | None = None) -> None:
        super().__init__()
        weight = torch.tensor(pos_weight, dtype=torch.float32) if pos_weight else None
        self.loss = nn.BCEWithLogitsLoss(pos_weight=weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean BCE over samples and labels."""
        return self.loss(logits, targets.to(logits.dtype))
