"""Score a trained module under several conditions in one pass over the test split.

:class:`ConditionProbe` encodes each test batch once with the trained module and, for each
condition, marks the modalities it removes absent (``present=False``) on those encoder
outputs before the fusion and head run (:meth:`~mmexp.lit.classifier.MultimodalClassifier.
predict_from_features`). The modalities a condition keeps are therefore never encoded again,
and a removed modality's features are never read (the fusion strategies mask on
``present``). Metrics are the module's own test metrics, one copy per condition; they sum
over processes under DDP, where each test sample is scored once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from torch import nn
from torchmetrics import MeanMetric

from mmexp.lit.common import MultimodalModule
from mmexp.lit.presence import mark_absent
from mmexp.robustness.conditions import Condition

TEST_PREFIX = "test/"


def check_scorable(module: MultimodalModule) -> None:
    """Raise unless ``module`` can be scored with modalities removed.

    Raises:
        TypeError: The module needs every modality (contrastive pairs) or has no
            ``predict_from_features``.
    """
    if not module.handles_missing or not hasattr(module, "predict_from_features"):
        raise TypeError(
            f"robustness evaluation scores modules that fuse modalities (classify, multilabel, "
            f"regression); {type(module).__name__} needs every modality of every sample"
        )


class ConditionProbe(pl.LightningModule):
    """A test-only module scoring ``module`` under each of ``conditions``.

    Args:
        module: The trained module (a classifier or regressor).
        conditions: The conditions scored in this pass; all but at most one must only
            remove modalities (a noise pass scores its one condition on perturbed data).

    Raises:
        TypeError: See :func:`check_scorable`.
    """

    def __init__(self, module: MultimodalModule, conditions: Sequence[Condition]) -> None:
        super().__init__()
        check_scorable(module)
        self.module = module
        self.conditions = list(conditions)
        template: Any = module.test_metrics
        self.metrics = nn.ModuleList([template.clone() for _ in self.conditions])
        self.losses = nn.ModuleList([MeanMetric() for _ in self.conditions])
        self.modalities = list(module.encoders)
        self.results: dict[str, dict[str, float]] = {}

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        """Encode the batch once, then score every condition on those encoder outputs."""
        module: Any = self.module
        features = module.encode(batch)
        labels = batch["label"]
        for condition, metrics, loss in zip(
            self.conditions, self.metrics, self.losses, strict=True
        ):
            keep = condition.presence(batch["index"].cpu(), self.modalities)
            marked = {m: mark_absent(features[m], keep[m]) for m in self.modalities}
            outputs = module.predict_from_features(marked)
            metrics.update(outputs, labels)
            loss.update(module.loss_fn(outputs, labels), weight=len(labels))

    def on_test_epoch_end(self) -> None:
        """Compute every condition's metrics (summed over processes)."""
        for condition, metrics, loss in zip(
            self.conditions, self.metrics, self.losses, strict=True
        ):
            values = {
                key.removeprefix(TEST_PREFIX): float(value)
                for key, value in metrics.compute().items()
            }
            values["loss"] = float(loss.compute())
            self.results[condition.name] = values
            metrics.reset()
            loss.reset()
