"""Multi-label metrics on logits, against scikit-learn on the same logits."""

import pytest
import torch
from sklearn.metrics import average_precision_score, f1_score

from mmexp.metrics.multilabel import multilabel_metrics

AVERAGES = ("micro", "macro", "weighted", "samples")


def _scores(logits: list[torch.Tensor], targets: list[torch.Tensor]) -> dict[str, float]:
    metrics = multilabel_metrics(num_classes=logits[0].shape[1], prefix="val")
    for batch_logits, batch_targets in zip(logits, targets, strict=True):
        metrics.update(batch_logits, batch_targets)
    return {name: value.item() for name, value in metrics.compute().items()}


def _sklearn_f1(logits: torch.Tensor, targets: torch.Tensor, average: str) -> float:
    # A label is predicted where its logit is positive (probability above 0.5).
    return f1_score(targets.numpy(), (logits > 0).numpy(), average=average, zero_division=0)


def test_logits_within_zero_one_are_still_logits():
    # sigmoid(0.3) > 0.5: every label is predicted, though 0.3 is below a 0.5 threshold.
    logits = torch.tensor([[0.3, 0.7, 0.3], [0.7, 0.3, 0.3], [0.3, 0.3, 0.7], [0.7, 0.7, 0.3]])
    targets = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 1], [0, 1, 0]])
    scores = _scores([logits], [targets])
    for average in AVERAGES:
        assert scores[f"val/f1_{average}"] == pytest.approx(
            _sklearn_f1(logits, targets, average), abs=1e-6
        ), average


def test_batches_on_both_sides_of_zero_one_are_scored_on_one_scale():
    # The first batch lies within [0, 1], the second does not: its logit 0.1 ranks below the
    # first batch's 0.3 (but sigmoid(0.1) > 0.3, were the first batch read as probabilities).
    first = torch.tensor([[0.3, 0.9, 0.2], [0.6, 0.4, 0.8], [0.0, 0.5, 1.0]])
    second = torch.tensor([[0.1, -2.0, 3.0], [-3.0, 0.45, -0.5], [2.0, -1.0, 0.5]])
    first_targets = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 1, 1]])
    second_targets = torch.tensor([[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    scores = _scores([first, second], [first_targets, second_targets])
    logits, targets = torch.cat([first, second]), torch.cat([first_targets, second_targets])
    expected_map = average_precision_score(targets.numpy(), logits.numpy(), average="macro")
    assert scores["val/map"] == pytest.approx(expected_map, abs=1e-6)
    for average in AVERAGES:
        assert scores[f"val/f1_{average}"] == pytest.approx(
            _sklearn_f1(logits, targets, average), abs=1e-6
        ), average
