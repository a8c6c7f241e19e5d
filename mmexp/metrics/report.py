"""Test-time report: per-class metrics and a confusion-matrix figure from a confusion matrix."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import torch


def per_class_metrics(confusion: torch.Tensor, label_names: Sequence[str]) -> list[dict]:
    """Precision, recall, F1 and support of every class.

    Args:
        confusion: ``[C, C]`` counts, rows = true class, columns = predicted class.
        label_names: Class names in index order.

    Returns:
        One dict per class (0 where a ratio is undefined, as torchmetrics does).
    """
    confusion = confusion.double()
    true_positive = confusion.diagonal()
    predicted, actual = confusion.sum(dim=0), confusion.sum(dim=1)
    precision = torch.where(predicted > 0, true_positive / predicted.clamp_min(1), 0.0)
    recall = torch.where(actual > 0, true_positive / actual.clamp_min(1), 0.0)
    denominator = precision + recall
    f1 = torch.where(denominator > 0, 2 * precision * recall / denominator.clamp_min(1e-12), 0.0)
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(actual[i]),
        }
        for i, name in enumerate(label_names)
    ]


def write_per_class_csv(rows: Sequence[dict], path: Path) -> None:
    """Write :func:`per_class_metrics` rows as CSV."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


ANNOTATE_UP_TO = 30


def plot_confusion_matrix(confusion: torch.Tensor, label_names: Sequence[str], path: Path) -> None:
    """Save a row-normalised confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    counts = confusion.long()
    rates = counts.double() / counts.sum(dim=1, keepdim=True).clamp_min(1)
    # Past a few dozen classes the cell counts are unreadable and drawing thousands of
    # labels dominates the report's time (101 classes: over a minute); colour alone then.
    annotate = len(label_names) <= ANNOTATE_UP_TO
    size = max(3.5, 0.6 * min(len(label_names), ANNOTATE_UP_TO) + 2)
    figure, axes = plt.subplots(figsize=(size + 1, size))
    image = axes.imshow(rates.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)
    ticks = range(len(label_names))
    axes.set_xticks(ticks, label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    for row in ticks if annotate else ():
        for column in ticks:
            colour = "white" if rates[row, column] > 0.5 else "black"
            axes.text(
                column,
                row,
                int(counts[row, column]),
                ha="center",
                va="center",
                color=colour,
                fontsize="small",
            )
    figure.colorbar(image, ax=axes, fraction=0.046, label="fraction of true class")
    figure.tight_layout()
    figure.savefig(path, dpi=150)
    plt.close(figure)
