"""LightningModule for contrastive pretraining of two modality towers, with optional ITM.

Batches come in two shapes. Paired batches (every data set) hold ``B`` rows of both
modalities, row ``i`` of each a pair, and ``index`` ``[B]``: the id of each row's
first-modality item. Rows with the same id are the same item (an image drawn with two of its
captions, or a distributed sampler's repeat) and are never each other's negatives; so are
rows with equal ``content`` ids, when the data has them (``data.content_column``: two
samples showing the same scene). Grouped
batches (caption data sets at evaluation) hold ``B`` first-modality items once each and ``M``
second-modality items, with ``group`` ``[M]`` (the ``index`` of the item each belongs to) and
``member`` ``[M]`` (their own ids), so that every image is encoded once and all its captions
are ranked, as the retrieval protocol requires.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MeanMetric

from mmexp.data.batches import RetrievalBatch
from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.fusion.base import FusionStrategy
from mmexp.lit.common import (
    EpochMeans,
    MultimodalModule,
    log_training_step,
    log_validation,
)
from mmexp.losses.itm import MatchingLoss, select
from mmexp.metrics.retrieval import RetrievalRecall


class ContrastivePretrainer(MultimodalModule):
    """Align two modality towers (CLIP-style) and, optionally, train a matching head.

    The towers are ordinary mmexp encoders: their L2-normalised pooled vectors are the
    embeddings, so a pretrained checkpoint's encoders drop straight into a classifier for
    finetuning. Validation and test report retrieval recall@K in both directions over the
    whole split.

    Args:
        encoders: Exactly two encoders, keyed by modality; their order fixes the direction
            names (``image, text`` gives ``i2t`` and ``t2i``).
        loss: Contrastive loss on ``(embeddings_a, embeddings_b)``
            (:class:`~mmexp.losses.ClipLoss` or :class:`~mmexp.losses.SigLipLoss`).
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``.
        fusion: Fusion strategy over both modalities for image-text matching (ITM); only
            used with ``matching_weight > 0``.
        matching_head: Maps the fused pair to its two match scores (the builder gives the
            ``model.head`` MLP); ``None``: a linear layer.
        matching_weight: Weight of the ITM loss; 0 disables it.
        matching_negatives: ``"random"`` (UNITER, ViLT) or ``"hard"`` (ALBEF: mined from the
            contrastive similarities); see :mod:`mmexp.losses.itm`.
        recall_ks: Cut-offs of the retrieval recall.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"max"`` or ``"min"``.
        run_config: See :class:`~mmexp.lit.common.MultimodalModule`.
        save_frozen_weights: See :class:`~mmexp.lit.common.MultimodalModule`.
    """

    carried = (*MultimodalModule.carried, "train_means")

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        loss: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        fusion: FusionStrategy | None = None,
        matching_head: nn.Module | None = None,
        matching_weight: float = 0.0,
        matching_negatives: str = "random",
        recall_ks: tuple[int, ...] = (1, 5, 10),
        monitor: str = "val/rsum",
        monitor_mode: str = "max",
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
    ) -> None:
        super().__init__(
            encoders, optimizer, scheduler, monitor, monitor_mode, run_config, save_frozen_weights
        )
        if len(encoders) != 2:
            raise ValueError(
                "contrastive pretraining aligns exactly two modalities; data.modalities has "
                f"{list(encoders)}"
            )
        if matching_weight < 0:
            raise ValueError(
                f"objective.module.matching_weight must be >= 0, got {matching_weight}"
            )
        if matching_weight > 0 and fusion is None:
            raise ValueError(
                "objective.module.matching_weight > 0 needs a fusion strategy "
                "(objective=itm builds one from fusion=...)"
            )
        self.modalities = tuple(encoders)
        self.loss_fn = loss
        self.matching = (
            MatchingLoss(fusion, matching_head, matching_negatives)
            if matching_weight > 0 and fusion
            else None
        )
        self.matching_weight = matching_weight
        self.val_retrieval = RetrievalRecall(self.modalities, recall_ks)
        self.test_retrieval = RetrievalRecall(self.modalities, recall_ks)
        self.val_loss = MeanMetric()
        self.train_means = EpochMeans(
            ["loss_epoch", "contrastive_loss", "itm_loss", "itm_acc", "temperature"]
        )
        self.val_matching_accuracy = MeanMetric()

    @property
    def reads_tokens(self) -> bool:
        """Whether image-text matching's fusion reads token sequences."""
        return self.matching is not None and self.matching.fusion.uses_tokens

    @staticmethod
    def embed(features: EncoderOutput) -> torch.Tensor:
        """The unit-norm embedding of a tower's output."""
        return F.normalize(features.pooled, dim=-1)

    @staticmethod
    def partner_rows(batch: RetrievalBatch) -> torch.Tensor | None:
        """For a grouped batch, the first-modality row each second-modality row belongs to."""
        if "group" not in batch:
            return None
        matches = batch["group"][:, None] == batch["index"][None, :]
        if not matches.any(dim=1).all():
            raise ValueError("a grouped batch has items whose group is not in the batch")
        return matches.int().argmax(dim=1)

    def _losses(self, batch: RetrievalBatch) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        features = self.encode(batch)
        embeddings = [self.embed(features[m]) for m in self.modalities]
        # The losses score pairs: a grouped batch becomes one pair per second-modality item.
        # Rows showing the same content (``content`` ids, when the data has them) are no
        # negatives of each other either.
        pairs, paired_features, ids = embeddings, features, batch.get("content", batch["index"])
        rows = self.partner_rows(batch)
        if rows is not None:
            first = self.modalities[0]
            pairs = [embeddings[0][rows], embeddings[1]]
            paired_features = {**features, first: select(features[first], rows)}
            ids = batch["group"]
        contrastive = self.loss_fn(*pairs, ids=ids)
        losses = {"contrastive_loss": contrastive, "loss": contrastive}
        if self.matching is not None:
            logits = self.loss_fn.logit_scale * pairs[0] @ pairs[1].T
            # Another pair of the same item is no negative for matching either.
            same = ids[:, None] == ids[None, :]
            same.fill_diagonal_(False)
            matching, accuracy = self.matching(
                paired_features, logits.masked_fill(same, float("-inf"))
            )
            losses.update(
                itm_loss=matching,
                itm_acc=accuracy,
                loss=contrastive + self.matching_weight * matching,
            )
        return losses, embeddings

    def on_train_epoch_end(self) -> None:
        """Log the epoch means of the training losses, over every process."""
        self.train_means.log_and_reset(self, "train/")

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """Step, then clamp the loss's temperature into its bounds, as open_clip does."""
        super().optimizer_step(*args, **kwargs)
        # Here rather than in on_train_batch_end: Lightning calls this once per real step (not
        # on the batches that only accumulate gradients), and before any batch-end hook, where
        # callbacks may save a checkpoint that must not hold the unclamped value.
        clamp = getattr(self.loss_fn, "clamp_parameters_", None)
        if clamp is not None:
            clamp()

    def training_step(self, batch: RetrievalBatch, batch_idx: int) -> torch.Tensor:
        """Optimise the contrastive (and matching) loss."""
        losses, _ = self._losses(batch)
        size = len(batch["index"])
        total = losses.pop("loss")
        log_training_step(self, total, size)
        self.train_means.update(
            {"loss_epoch": total, **losses, "temperature": 1.0 / self.loss_fn.logit_scale}, size
        )
        return total

    def validation_step(self, batch: RetrievalBatch, batch_idx: int) -> None:
        """Accumulate the loss and the embeddings of the retrieval gallery."""
        losses, embeddings = self._losses(batch)
        self.val_loss.update(losses["loss"], weight=len(batch["index"]))
        if "itm_acc" in losses:
            self.val_matching_accuracy.update(losses["itm_acc"], weight=len(batch["index"]))
        self.val_retrieval.update(
            *embeddings, batch["index"], batch.get("group"), batch.get("member")
        )

    def on_validation_epoch_end(self) -> None:
        """Log retrieval recalls, loss and the best value of the monitored metric."""
        values = {f"val/{k}": v for k, v in self.val_retrieval.compute().items()}
        values["val/loss"] = self.val_loss.compute()
        if self.matching is not None:
            values["val/itm_acc"] = self.val_matching_accuracy.compute()
        for metric in (self.val_retrieval, self.val_loss, self.val_matching_accuracy):
            metric.reset()
        log_validation(self, values, self.best_monitored, self.monitor)

    def test_step(self, batch: RetrievalBatch, batch_idx: int) -> None:
        """Accumulate the test gallery."""
        features = self.encode(batch)
        self.test_retrieval.update(
            *(self.embed(features[m]) for m in self.modalities),
            batch["index"],
            batch.get("group"),
            batch.get("member"),
        )

    def on_test_epoch_end(self) -> None:
        """Log test retrieval recalls."""
        self.log_dict({f"test/{k}": v for k, v in self.test_retrieval.compute().items()})
        self.test_retrieval.reset()
