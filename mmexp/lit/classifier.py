"""LightningModule for multimodal classification: encoders -> fusion -> head -> loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassConfusionMatrix

from mmexp.data.batches import ClassificationBatch
from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.fusion.base import FusionStrategy
from mmexp.lit.common import (
    EpochMeans,
    MultimodalModule,
    log_training_step,
    log_validation,
)
from mmexp.lit.lightning_compat import attached_trainer
from mmexp.lit.presence import ModalityDropout
from mmexp.lit.step_buffer import StepBuffer
from mmexp.metrics.classification import classification_metrics
from mmexp.training.unimodal_losses import UnimodalLosses


class MultimodalClassifier(MultimodalModule):
    """Classify samples from several modalities with an injected fusion strategy.

    Everything that varies in an ablation (encoders, fusion, head, loss, optimizer,
    schedule) is passed in, so that swapping one piece is a config override.

    Args:
        encoders: One encoder per modality, keyed by the modality name used in batches.
        fusion: Fusion strategy over the encoder outputs.
        head: Maps the fused representation to logits (identity for decision-level fusion).
        loss: Loss on ``(logits, labels)``.
        num_classes: Number of classes.
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``,
            stepped every optimizer step.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"max"`` or ``"min"``.
        metrics: ``(num_classes, split) -> MetricCollection`` updated with
            ``(logits, labels)``; multi-class accuracy, F1 and AUROC by default.
        confusion_matrix: Compute the test confusion matrix (single-label tasks).
        run_config: See :class:`~mmexp.lit.common.MultimodalModule`.
        save_frozen_weights: See :class:`~mmexp.lit.common.MultimodalModule`.
        modality_dropout: See :class:`~mmexp.lit.common.MultimodalModule`.
        train_metrics_every_n_steps: Training steps whose logits, labels and losses are
            held on the device before the training metrics take them in one update; the
            epoch's figures cover every step either way (``null``: once per epoch).
            :mod:`mmexp.lit.step_buffer` says why.
        unimodal_losses: Per-modality classifiers trained beside the fused head, with their
            loss weights (``training=unimodal_aux|gradient_blending``); their losses are
            logged as ``train/<modality>_loss_epoch`` beside ``train/task_loss_epoch``.

    Raises:
        ValueError: ``unimodal_losses`` with a strategy that has losses of its own.
    """

    # The fusion strategies mask absent modalities (EncoderOutput.present).
    handles_missing = True

    carried = (*MultimodalModule.carried, "train_metrics", "train_means")

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        fusion: FusionStrategy,
        head: nn.Module,
        loss: nn.Module,
        num_classes: int,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        metrics: Callable[[int, str], MetricCollection] = classification_metrics,
        confusion_matrix: bool = True,
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
        modality_dropout: ModalityDropout | None = None,
        train_metrics_every_n_steps: int | None = 50,
        unimodal_losses: UnimodalLosses | None = None,
    ) -> None:
        super().__init__(
            encoders,
            optimizer,
            scheduler,
            monitor,
            monitor_mode,
            run_config,
            save_frozen_weights,
            modality_dropout,
        )
        self.fusion = fusion
        self.head = head
        self.loss_fn = loss
        self.num_classes = num_classes
        self.train_metrics = metrics(num_classes, "train")
        self.val_metrics = metrics(num_classes, "val")
        self.test_metrics = metrics(num_classes, "test")
        self.val_loss = MeanMetric()
        # the total, and with a strategy's own losses its parts: train/<term>_epoch
        # (prompt classifiers have no fusion)
        own = tuple(fusion.own_losses) if fusion is not None else ()
        self.unimodal_losses = unimodal_losses
        if unimodal_losses is not None:
            if own:
                raise ValueError(
                    f"{type(fusion).__name__} trains with losses of its own {list(own)}; "
                    "unimodal losses (training=unimodal_aux|gradient_blending) would be "
                    "weighed against them in no published way"
                )
            unimodal_losses.build({m: e.out_dim for m, e in encoders.items()}, num_classes)
            own = tuple(f"{m}_loss" for m in encoders)
        self.loss_terms = ("loss", *(("task_loss", *own) if own else ()))
        self.train_means = EpochMeans(self.loss_terms)
        self.train_pending = StepBuffer(train_metrics_every_n_steps, self._update_training)
        self.test_loss = MeanMetric()
        self.test_confusion = MulticlassConfusionMatrix(num_classes) if confusion_matrix else None
        # The last test run's confusion matrix (rows true, columns predicted), for reports.
        self.test_confusion_result: torch.Tensor | None = None

    @property
    def reads_tokens(self) -> bool:
        """Whether the fusion strategy reads token sequences."""
        return self.fusion.uses_tokens

    def forward(self, batch: ClassificationBatch) -> torch.Tensor:
        """Return class logits ``[B, num_classes]``."""
        return self.predict_from_features(self.encode(batch))

    def predict_from_features(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Fusion, head and output shaping on encoder outputs already computed.

        Evaluation modes that change the encoder outputs (a modality marked absent with
        ``present=False``) score them with this, without encoding the batch again.
        """
        return self.predictions(self.head(self.fusion(features)))

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """Shape head (or per-modality classifier) outputs as the loss and metrics take them."""
        return outputs

    def _shared_step(self, batch: ClassificationBatch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(batch)
        return logits, self.loss_fn(logits, batch["label"])

    def _training_losses(
        self, batch: ClassificationBatch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Logits, training loss and its logged parts beside the total.

        The loss is the fused prediction's, plus any per-modality auxiliary losses (late
        fusion's unimodal classifiers, ``fusion.aux_weight``) or the strategy's own
        weighted losses (MISA's, ``FusionStrategy.own_losses``): they count only in
        training, validation and test score the fused prediction alone. Without them the
        step goes through ``self(batch)``, which ``model.compile`` compiles.
        """
        if self.fusion.own_losses:
            return self._losses_with_the_strategys_own(batch)
        if self.unimodal_losses is not None:
            return self._losses_with_unimodal_heads(batch, "train")
        if self.fusion.aux_weight == 0:
            return (*self._shared_step(batch), {})
        fused, auxiliary = self.fusion.fuse_with_auxiliary(self.encode(batch))
        logits = self.predictions(self.head(fused))
        labels = batch["label"]
        loss = self.loss_fn(logits, labels)
        terms = [
            self.loss_fn(self.predictions(own)[present], labels[present])
            for own, present in auxiliary.values()
            if present.any()
        ]
        if terms:
            loss = loss + self.fusion.aux_weight * torch.stack(terms).mean()
        return logits, loss, {}

    def _losses_with_the_strategys_own(
        self, batch: ClassificationBatch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        fused, own = self.fusion.fuse_with_losses(self.encode(batch))
        missing = [name for name in self.fusion.own_losses if name not in own]
        if missing:
            raise KeyError(
                f"{type(self.fusion).__name__}.fuse_with_losses returned {sorted(own)}, "
                f"not its declared own_losses {missing}"
            )
        logits = self.predictions(self.head(fused))
        task = self.loss_fn(logits, batch["label"])
        loss = task
        for name, weight in self.fusion.own_losses.items():
            loss = loss + weight * own[name]
        return logits, loss, {"task_loss": task, **{n: own[n] for n in self.fusion.own_losses}}

    def _losses_with_unimodal_heads(
        self, batch: ClassificationBatch, split: str
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        assert self.unimodal_losses is not None
        features = self.encode(batch)
        logits = self.predict_from_features(features)
        labels = batch["label"]
        task = self.loss_fn(logits, labels)
        unimodal = self.unimodal_losses.losses(features, labels, self.loss_fn)
        self.unimodal_losses.observe(split, {"fused": task, **unimodal}, len(labels))
        loss = self.unimodal_losses.total(task, unimodal)
        return logits, loss, {"task_loss": task, **{f"{m}_loss": v for m, v in unimodal.items()}}

    def training_step(self, batch: ClassificationBatch, batch_idx: int) -> torch.Tensor:
        """Optimise the loss and accumulate training metrics."""
        logits, loss, parts = self._training_losses(batch)
        labels = batch["label"]
        log_training_step(self, loss, len(labels))
        terms = torch.stack([loss, *parts.values()]) if parts else loss.reshape(1)
        self.train_pending.add(logits, labels, terms.reshape(1, -1), weight=len(labels))
        return loss

    def _update_training(
        self, logits: torch.Tensor, labels: torch.Tensor, losses: torch.Tensor, sizes: torch.Tensor
    ) -> None:
        self.train_metrics.update(logits, labels)
        # losses: [steps, terms], in the order of self.loss_terms
        self.train_means.update(dict(zip(self.loss_terms, losses.unbind(1), strict=True)), sizes)

    def settle_training_metrics(self) -> None:
        """Give the training steps held so far to the training metrics and loss mean."""
        self.train_pending.flush()

    def on_train_epoch_end(self) -> None:
        """Log the epoch's training metrics."""
        self.settle_training_metrics()
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()
        self.train_means.log_and_reset(self, "train/", "_epoch")

    def validation_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        """Accumulate validation loss and metrics (and the heads' losses G-Blend weighs)."""
        losses = self.unimodal_losses
        if losses is not None and losses.needs_validation_losses and not self._sanity():
            logits, _, parts = self._losses_with_unimodal_heads(batch, "val")
            loss = parts["task_loss"]
        else:
            logits, loss = self._shared_step(batch)
        self.val_loss.update(loss, weight=len(batch["label"]))
        self.val_metrics.update(logits, batch["label"])

    def on_validation_epoch_end(self) -> None:
        """Log validation metrics, loss and the best value of the monitored metric."""
        values = {**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}
        self.val_metrics.reset()
        self.val_loss.reset()
        log_validation(self, values, self.best_monitored, self.monitor)
        if self.unimodal_losses is not None and not self._sanity():
            self._close_unimodal_epoch(self.unimodal_losses)

    def on_fit_start(self) -> None:
        """Let the unimodal losses refuse trainer settings they cannot work under."""
        super().on_fit_start()
        if self.unimodal_losses is not None:
            self.unimodal_losses.check_trainer(self.trainer)

    def _sanity(self) -> bool:
        trainer = attached_trainer(self)
        return trainer is not None and trainer.sanity_checking

    def _close_unimodal_epoch(self, losses: UnimodalLosses) -> None:
        def summed(values: torch.Tensor) -> torch.Tensor:
            return self.trainer.strategy.reduce(values.to(self.device), reduce_op="sum").cpu()

        losses.end_epoch(self.current_epoch, summed)
        weights = {f"{losses.prefix}/{k}/weight": v for k, v in losses.weights().items()}
        self.log_dict(weights)

    def test_step(self, batch: ClassificationBatch, batch_idx: int) -> None:
        """Accumulate test metrics."""
        logits, loss = self._shared_step(batch)
        self.test_metrics.update(logits, batch["label"])
        if self.test_confusion is not None:
            self.test_confusion.update(logits, batch["label"])
        self.test_loss.update(loss, weight=len(batch["label"]))

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self.log_dict({**self.test_metrics.compute(), "test/loss": self.test_loss.compute()})
        self.test_metrics.reset()
        self.test_loss.reset()
        if self.test_confusion is not None:
            self.test_confusion_result = self.test_confusion.compute().cpu()
            self.test_confusion.reset()
