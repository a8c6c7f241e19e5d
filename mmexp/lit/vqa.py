"""Visual question answering as answer classification, scored per answer type."""

from __future__ import annotations

from mmexp.data.batches import ClassificationBatch
from mmexp.lit.classifier import MultimodalClassifier


class VQAClassifier(MultimodalClassifier):
    """A :class:`MultimodalClassifier` over an answer vocabulary that scores answer types.

    Encoders, fusion, head, loss and metrics are injected as for any classifier
    (``conf/objective/vqa.yaml``: per-answer BCE on the soft scores and
    :func:`mmexp.metrics.vqa.vqa_metrics`). The only difference is what validation and
    test metrics are given: the batch's ``answer_type`` indices besides logits and targets,
    so that accuracy is also reported per answer type (``yes/no``, ``number``, ``other``).
    A batch without answer types is scored overall only.
    """

    def validation_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        """Accumulate validation loss and the VQA accuracies."""
        logits, loss = self._shared_step(batch)
        self.val_loss.update(loss, weight=len(batch["label"]))
        self.val_metrics.update(logits, batch["label"], answer_type=batch.get("answer_type"))

    def test_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        """Accumulate test loss and the VQA accuracies."""
        logits, loss = self._shared_step(batch)
        self.test_metrics.update(logits, batch["label"], answer_type=batch.get("answer_type"))
        if self.test_confusion is not None:
            self.test_confusion.update(logits, batch["label"])
        self.test_loss.update(loss, weight=len(batch["label"]))
