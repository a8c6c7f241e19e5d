"""Classification metrics, built on torchmetrics so that they sync correctly under DDP."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassAUROC, MulticlassF1Score


def classification_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """Accuracy, macro-F1 and macro one-vs-rest AUROC, named ``<prefix>/<metric>``.

    Args:
        num_classes: Number of classes.
        prefix: Split name, e.g. ``"val"``.

    Returns:
        A collection updated with ``(logits, targets)``.
    """
    if num_classes < 2:
        raise ValueError(f"classification needs at least 2 classes, got {num_classes}")
    # Argument validation reads tensor values (a device sync per update); training labels
    # were screened at setup, so the per-step training metrics skip it.
    checks = {"validate_args": prefix != "train"}
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro", **checks),
            "f1_macro": MulticlassF1Score(num_classes, average="macro", **checks),
            "auroc": MulticlassAUROC(num_classes, average="macro", **checks),
        },
        prefix=f"{prefix}/",
    )
