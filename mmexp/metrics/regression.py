"""Sentiment-regression metrics of CMU-MOSI / CMU-MOSEI, as the papers report them.

Scores are real numbers in [-3, 3] (Zadeh et al., 2016; 2018). ``mae``, ``corr``, ``acc7`` and
``acc5`` are those of MulT's evaluation (Tsai et al., ACL 2019, ``src/eval_metrics.py``), which
MultiBench (Liang et al., NeurIPS 2021) copies:

* ``mae``: mean absolute error; ``corr``: Pearson correlation of predictions and targets.
* ``acc7`` / ``acc5``: predictions and targets clipped to [-3, 3] / [-2, 2], rounded to the
  nearest integer (half to even, as ``numpy.round``), then compared.

Binary sentiment comes in the two conventions papers report side by side; F1 is
scikit-learn's ``average="weighted"`` over the two classes, called as ``(y_true, y_pred)``:

* ``acc2_has0`` / ``f1_has0``: non-negative (``>= 0``) against negative, over all samples:
  the convention of MMSA / Self-MM (Yu et al., AAAI 2021). MulT's ``exclude_zero=False`` (and
  MultiBench's) splits positive (``> 0``) against non-positive instead.
* ``acc2_non0`` / ``f1_non0``: positive against negative, leaving out samples whose target
  is exactly 0: MulT's ``exclude_zero=True``, which MultiBench's ``eval_affect`` follows, and
  MMSA's ``Non0``. MulT (and MultiBench's copy) call ``f1_score(preds > 0, truth > 0)``, the
  arguments swapped, which weights each class by its predicted rather than its true count
  and so changes the weighted F1 slightly; MMSA, like mmexp, passes them in order.

Every metric keeps sums only (no stored predictions), so values are exact under DDP.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanAbsoluteError, Metric, MetricCollection

BINARY_OUTPUTS = ("acc", "f1")


class PearsonCorrelation(Metric):
    """Pearson correlation from running sums, in float64.

    Defined as 0 when predictions or targets are constant (``numpy.corrcoef`` gives NaN):
    an untrained model often predicts a constant, and a NaN would poison the tables and
    sweeps that average this value over runs.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        for name in ("n", "sx", "sy", "sxx", "syy", "sxy"):
            self.add_state(
                name, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum"
            )

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add ``[B]`` predictions and ``[B]`` targets."""
        x, y = predictions.detach().double().flatten(), targets.double().flatten()
        self.n += x.numel()
        self.sx += x.sum()
        self.sy += y.sum()
        self.sxx += (x * x).sum()
        self.syy += (y * y).sum()
        self.sxy += (x * y).sum()

    def compute(self) -> torch.Tensor:
        """The correlation coefficient."""
        n = self.n.clamp_min(1)
        covariance = self.sxy / n - (self.sx / n) * (self.sy / n)
        var_x = (self.sxx / n - (self.sx / n) ** 2).clamp_min(0)
        var_y = (self.syy / n - (self.sy / n) ** 2).clamp_min(0)
        scale = (var_x * var_y).sqrt()
        # Relative tolerance: a constant input leaves rounding noise of the order of eps.
        tiny = torch.finfo(torch.float64).eps * 16 * (1 + (self.sxx / n) * (self.syy / n))
        return torch.where(scale > tiny, covariance / scale, 0.0).float()


class BinarySentiment(Metric):
    """Accuracy or weighted F1 of the sign of the sentiment.

    Args:
        exclude_zero: ``False``: classes are ``>= 0`` and ``< 0`` over all samples (has0);
            ``True``: ``> 0`` and ``< 0``, samples with target 0 left out (non0).
        output: ``"acc"`` or ``"f1"`` (support-weighted mean of both classes' F1).
    """

    full_state_update = False

    def __init__(self, exclude_zero: bool, output: str = "acc") -> None:
        super().__init__()
        if output not in BINARY_OUTPUTS:
            raise ValueError(f"output must be one of {BINARY_OUTPUTS}, got {output!r}")
        self.exclude_zero = exclude_zero
        self.output = output
        for name in ("tp", "fp", "fn", "tn"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add ``[B]`` predictions and ``[B]`` targets."""
        predictions, targets = predictions.detach().flatten(), targets.flatten()
        if self.exclude_zero:
            kept = targets != 0
            truth, predicted = targets[kept] > 0, predictions[kept] > 0
        else:
            truth, predicted = targets >= 0, predictions >= 0
        self.tp += (truth & predicted).sum()
        self.fp += (~truth & predicted).sum()
        self.fn += (truth & ~predicted).sum()
        self.tn += (~truth & ~predicted).sum()

    def compute(self) -> torch.Tensor:
        """Accuracy, or F1 weighted by each class's support (0 for an empty set)."""
        tp, fp, fn, tn = (value.double() for value in (self.tp, self.fp, self.fn, self.tn))
        total = tp + fp + fn + tn
        if total == 0:
            return torch.tensor(0.0)
        if self.output == "acc":
            return ((tp + tn) / total).float()
        # An F1 with nothing predicted and nothing true is 0, as scikit-learn's default.
        f1_positive = torch.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_negative = torch.where(2 * tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
        return ((f1_positive * (tp + fn) + f1_negative * (tn + fp)) / total).float()


class RoundedClassAccuracy(Metric):
    """Accuracy over integer classes: both sides clipped to ``[-bound, bound]`` and rounded.

    Args:
        bound: 3 for the 7-class accuracy, 2 for the 5-class one.
    """

    full_state_update = False

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.bound = bound
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        """Add ``[B]`` predictions and ``[B]`` targets."""

        def classes(values: torch.Tensor) -> torch.Tensor:
            return values.detach().flatten().clamp(-self.bound, self.bound).round()

        self.correct += (classes(predictions) == classes(targets)).sum()
        self.count += targets.numel()

    def compute(self) -> torch.Tensor:
        """The fraction of samples in the right class."""
        return (self.correct.double() / self.count.clamp_min(1)).float()


def regression_metrics(num_outputs: int, prefix: str) -> MetricCollection:
    """MAE, Pearson correlation, 7- and 5-class accuracy, binary accuracy and F1 (both ways).

    Args:
        num_outputs: Values predicted per sample; must be 1 (one sentiment score). Same
            signature as :func:`~mmexp.metrics.classification.classification_metrics` so
            that the module takes either factory.
        prefix: Split name, e.g. ``"val"``.

    Returns:
        A collection updated with ``([B] predictions, [B] targets)``, named
        ``<prefix>/<metric>``.
    """
    if num_outputs != 1:
        raise ValueError(
            f"sentiment regression predicts one value per sample, got {num_outputs} outputs"
        )
    return MetricCollection(
        {
            "mae": MeanAbsoluteError(),
            "corr": PearsonCorrelation(),
            "acc7": RoundedClassAccuracy(3.0),
            "acc5": RoundedClassAccuracy(2.0),
            "acc2_has0": BinarySentiment(exclude_zero=False, output="acc"),
            "f1_has0": BinarySentiment(exclude_zero=False, output="f1"),
            "acc2_non0": BinarySentiment(exclude_zero=True, output="acc"),
            "f1_non0": BinarySentiment(exclude_zero=True, output="f1"),
        },
        prefix=f"{prefix}/",
        # Accuracy and F1 of one convention share their counts: one update for both.
        compute_groups=[["acc2_has0", "f1_has0"], ["acc2_non0", "f1_non0"]],
    )
