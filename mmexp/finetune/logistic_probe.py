"""The CLIP linear probe: L-BFGS logistic regression on frozen fused features.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
(ICML 2021), appendix A.3: features of the frozen model, a scikit-learn
``LogisticRegression`` fitted with L-BFGS (at most 1,000 iterations), and the L2
regularisation chosen on a validation split over ``[1e-6, 1e6]`` by a parametric binary
search: start at ``10^-6, 10^-4, ..., 10^6`` and halve the interval around the peak until
the resolution is 8 steps per decade (of the 96 log-spaced values, 15 are fitted).

What is implemented, and how it differs:

* The search runs over scikit-learn's ``C``, the inverse of the paper's lambda (the objective is
  ``C * sum of losses + ||w||^2 / 2``); the range is symmetric, so it holds the same values.
  Each halving fits the two neighbours of the best point so far; the best is the highest
  value of the run's monitored metric (``monitor``, ``val/acc`` by default, computed by the
  module's own validation metrics from the fitted logits; the lowest for a ``min``
  monitor), ties going to the smaller ``C`` (the stronger regularisation).
* Features are the fused features (``fusion=concat`` of the towers' pooled vectors, ...),
  computed once per split in eval mode through the model's own encoders and fusion, so
  the feature cache is used when it is on. They are not standardised, as in CLIP's probe.
* The model's linear head is set to the coefficients and intercept of the chosen fit: its
  logits are scikit-learn's ``decision_function`` (with two classes, class 1's logit is the
  decision value and class 0's is zero; classes absent from the training split get a zero
  weight and a bias of :data:`ABSENT_CLASS_LOGIT`), so its softmax is ``predict_proba``.
* Single-label classification only (``objective=classify``): multi-label and regression
  objectives are refused, as is ``model.modality_dropout`` (the features are not dropped).
* Every tower is frozen, the ones trained from scratch too (random features; a closed-form
  fit cannot train them), and no gradient step is taken: the trainer's epochs and the
  optimizer are not used (:func:`mmexp.finetune.closed_form.fit_closed_form`).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from torch import nn
from torchmetrics import MinMetric

from mmexp.encoders.freezing import count_parameters
from mmexp.finetune.closed_form import ClosedFormHead, fused_features
from mmexp.finetune.protocols import LinearProbe
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.lit.classifier import MultimodalClassifier

log = logging.getLogger(__name__)

#: Logit of the classes absent from the training split (never predicted).
ABSENT_CLASS_LOGIT = -1e4


def parametric_search(
    score: Callable[[float], float],
    low: float = -6.0,
    high: float = 6.0,
    initial_step: float = 2.0,
    steps_per_decade: int = 8,
    maximize: bool = True,
) -> tuple[float, dict[float, float]]:
    """CLIP's search for the regularisation: a coarse grid, then halvings around the peak.

    Args:
        score: The validation score of ``log10(C)``.
        low: Smallest ``log10(C)``.
        high: Largest ``log10(C)``.
        initial_step: Spacing of the first grid, in decades.
        steps_per_decade: Resolution at which the halving stops.
        maximize: Whether a higher score is better.

    Returns:
        The best ``log10(C)`` (ties: the smallest) and every score computed, by ``log10(C)``.
    """
    scores: dict[float, float] = {}

    def visit(exponent: float) -> None:
        exponent = round(exponent, 9)  # 0.1 + 0.2 steps: one key per grid point
        if low - 1e-9 <= exponent <= high + 1e-9 and exponent not in scores:
            scores[exponent] = score(exponent)

    def best() -> float:
        def rank(exponent: float) -> tuple[float, float]:
            value = scores[exponent]
            value = -math.inf if math.isnan(value) else (value if maximize else -value)
            return value, -exponent

        return max(scores, key=rank)

    for point in range(int(math.floor((high - low) / initial_step + 1e-9)) + 1):
        visit(low + point * initial_step)
    step = initial_step
    while step / 2 >= 1 / steps_per_decade - 1e-9:
        step /= 2
        peak = best()
        visit(peak - step)
        visit(peak + step)
    return best(), scores


def head_parameters(model: LogisticRegression, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``[num_classes, D]`` and bias ``[num_classes]`` of a fitted regression.

    Binary fits have one coefficient row, for ``classes_[1]``; its class's logit is the
    decision value and the other's is zero. Classes the fit has not seen get
    :data:`ABSENT_CLASS_LOGIT`.
    """
    classes = model.classes_.astype(int)
    weight = np.zeros((num_classes, model.coef_.shape[1]))
    bias = np.full(num_classes, ABSENT_CLASS_LOGIT)
    if len(classes) == 2:
        bias[classes] = 0.0
        weight[classes[1]], bias[classes[1]] = model.coef_[0], model.intercept_[0]
    else:
        weight[classes], bias[classes] = model.coef_, model.intercept_
    return weight, bias


class LogisticProbe(ClosedFormHead, LinearProbe):
    """Towers and fusion frozen; the linear head fitted by L-BFGS logistic regression.

    See the module docstring for the method and what differs from CLIP's probe.

    Args:
        log10_c_range: ``[low, high]`` of ``log10(C)`` searched.
        initial_step: Spacing of the first grid of ``log10(C)``, in decades.
        steps_per_decade: Resolution at which the search stops refining.
        max_iter: L-BFGS iterations per fit.
        **options: See :class:`~mmexp.finetune.protocols.FinetuneProtocol`.
    """

    name = "logistic_probe"

    def __init__(
        self,
        log10_c_range: Sequence[float] = (-6.0, 6.0),
        initial_step: float = 2.0,
        steps_per_decade: int = 8,
        max_iter: int = 1000,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        low, high = (float(v) for v in log10_c_range)
        if not low < high:
            raise ValueError(f"finetune.log10_c_range must be [low, high], got {log10_c_range}")
        if not 0 < initial_step <= high - low:
            raise ValueError(
                f"finetune.initial_step must be in (0, {high - low}], got {initial_step}"
            )
        if steps_per_decade < 1 or max_iter < 1:
            raise ValueError(
                "finetune.steps_per_decade and finetune.max_iter must be >= 1, got "
                f"{steps_per_decade} and {max_iter}"
            )
        self.range = (low, high)
        self.initial_step = float(initial_step)
        self.steps_per_decade = int(steps_per_decade)
        self.max_iter = int(max_iter)

    def apply(
        self,
        module: pl.LightningModule,
        source: PretrainedCheckpoint | None,
        load_weights: bool = True,
    ) -> dict[str, Any]:
        """Refuse other objectives, apply the linear probe, freeze the towers from scratch too.

        Raises:
            ValueError: Not single-label classification, modality dropout, or a fusion
                with parameters of its own.
        """
        check_objective(module, self.name)
        lineage = super().apply(module, source, load_weights)
        scratch = [m for m in module.encoders if m not in lineage["towers"]]
        for modality in scratch:
            log.warning(
                "finetune=%s: model.encoders.%s is not pretrained; frozen at its random "
                "initialisation (a closed-form fit trains no tower)",
                self.name,
                modality,
            )
            self.restrict_encoder(module.encoders[modality], f"model.encoders.{modality}")
        trains = count_parameters(module)[0] - count_parameters(module.head)[0]
        if trains:
            raise ValueError(
                f"finetune={self.name}: {trains} parameters outside the head would train; "
                "the fit sets the head only"
            )
        return {**lineage, "frozen_from_scratch": scratch}

    def fit_head(  # noqa: D102 - see ClosedFormHead
        self, module: MultimodalClassifier, train: Any, val: Any, device: torch.device
    ) -> dict[str, Any]:
        features, labels = (t.double().numpy() for t in fused_features(module, train, device))
        val_features, val_labels = fused_features(module, val, device)
        if len(np.unique(labels)) < 2:
            raise ValueError(
                f"finetune={self.name}: the training split has a single class "
                f"({int(labels[0])}); a logistic regression needs two"
            )
        fits: dict[float, LogisticRegression] = {}
        values: dict[float, dict[str, float]] = {}

        def score(exponent: float) -> float:
            fits[exponent] = self.fit(features, labels, 10.0**exponent)
            weight, bias = head_parameters(fits[exponent], module.num_classes)
            logits = val_features.double() @ torch.from_numpy(weight).T + torch.from_numpy(bias)
            values[exponent] = validation_values(module, logits.float(), val_labels)
            return values[exponent][module.monitor]

        maximize = not isinstance(module.best_monitored, MinMetric)
        chosen, _ = parametric_search(
            score, *self.range, self.initial_step, self.steps_per_decade, maximize
        )
        weight, bias = head_parameters(fits[chosen], module.num_classes)
        with torch.no_grad():
            module.head.weight.copy_(torch.from_numpy(weight))
            module.head.bias.copy_(torch.from_numpy(bias))
        sweep = [
            {
                "C": 10.0**exponent,
                "log10_C": exponent,
                **values[exponent],
                "converged": bool(np.max(fits[exponent].n_iter_) < self.max_iter),
            }
            for exponent in sorted(values)
        ]
        unconverged = [point["C"] for point in sweep if not point["converged"]]
        if unconverged:
            log.warning("L-BFGS reached max_iter=%d at C=%s", self.max_iter, unconverged)
        log.info(
            "finetune=%s: C=%.3g chosen on %s; sweep %s",
            self.name,
            10.0**chosen,
            module.monitor,
            {f"{p['C']:.3g}": round(p[module.monitor], 4) for p in sweep},
        )
        return {
            "C": 10.0**chosen,
            "log10_C": chosen,
            "monitor": module.monitor,
            "solver": "lbfgs",
            "max_iter": self.max_iter,
            "standardised": False,
            "train_samples": len(labels),
            "val_samples": len(val_labels),
            "features": int(features.shape[1]),
            "sweep": sweep,
        }

    def fit(self, features: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
        """One L-BFGS fit at regularisation ``c`` (convergence is recorded, not warned)."""
        model = LogisticRegression(C=c, solver="lbfgs", max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            return model.fit(features, labels)


def check_objective(module: pl.LightningModule, name: str) -> None:
    """Refuse what a softmax logistic regression fitted in closed form cannot stand for.

    Raises:
        ValueError: Naming the config key.
    """
    loss = getattr(module, "loss_fn", None)
    if not isinstance(module, MultimodalClassifier) or not isinstance(loss, nn.CrossEntropyLoss):
        raise ValueError(
            f"finetune={name} fits a softmax logistic regression: it needs objective=classify "
            f"(single-label cross-entropy), not {type(module).__name__} with loss "
            f"{type(loss).__name__} (multi-label and regression objectives are not "
            "supported; use finetune=linear_probe)"
        )
    if module.modality_dropout is not None:
        raise ValueError(
            f"model.modality_dropout: finetune={name} fits on features without dropout; "
            "unset it or use finetune=linear_probe"
        )


def validation_values(
    module: MultimodalClassifier, logits: torch.Tensor, labels: torch.Tensor
) -> dict[str, float]:
    """The module's validation metrics and loss of ``logits``, as validation logs them.

    Raises:
        KeyError: The monitored metric is not among them (the message lists them).
    """
    metrics = copy.deepcopy(module.val_metrics).cpu()
    metrics.reset()
    metrics.update(logits, labels)
    values: Mapping[str, Any] = {
        **metrics.compute(),
        "val/loss": module.loss_fn(logits, labels),
    }
    if module.monitor not in values:
        raise KeyError(
            f"monitor={module.monitor!r} is not a validation metric of "
            f"{type(module).__name__}; choose one of {sorted(values)}"
        )
    return {name: float(value) for name, value in values.items()}
