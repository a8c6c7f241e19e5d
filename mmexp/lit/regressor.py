"""LightningModule for multimodal regression: encoders -> fusion -> head -> one score.

The sentiment tasks of CMU-MOSI and CMU-MOSEI (Zadeh et al., 2016; 2018) predict a real
score in [-3, 3]; MulT (Tsai et al., ACL 2019) and MultiBench (Liang et al., NeurIPS 2021)
train them with an L1 loss and select on validation MAE (the L1 loss itself). Everything but
the output shape and the metrics is the classifier's, so this module only narrows it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection

from mmexp.encoders.base import ModalityEncoder
from mmexp.fusion.base import FusionStrategy
from mmexp.lit.classifier import MultimodalClassifier
from mmexp.lit.presence import ModalityDropout
from mmexp.metrics.regression import regression_metrics


class MultimodalRegressor(MultimodalClassifier):
    """Predict one real value per sample from several modalities.

    Args:
        encoders: One encoder per modality, keyed by the modality name used in batches.
        fusion: Fusion strategy over the encoder outputs (decision-level strategies are
            built with one output).
        head: Maps the fused representation to one value (``out_dim`` 1).
        loss: Loss on ``([B] predictions, [B] targets)``; ``torch.nn.L1Loss`` as in MulT.
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"min"`` for errors (``val/mae``), ``"max"`` for accuracies.
        metrics: ``(1, split) -> MetricCollection`` updated with ``(predictions, targets)``.
        run_config: See :class:`~mmexp.lit.common.MultimodalModule`.
        save_frozen_weights: See :class:`~mmexp.lit.common.MultimodalModule`.
        modality_dropout: See :class:`~mmexp.lit.common.MultimodalModule`.
        train_metrics_every_n_steps: See
            :class:`~mmexp.lit.classifier.MultimodalClassifier`.

    Raises:
        ValueError: The head does not produce exactly one value.
    """

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        fusion: FusionStrategy,
        head: nn.Module,
        loss: nn.Module,
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/mae",
        monitor_mode: str = "min",
        metrics: Callable[[int, str], MetricCollection] = regression_metrics,
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
        modality_dropout: ModalityDropout | None = None,
        train_metrics_every_n_steps: int | None = 50,
    ) -> None:
        outputs = getattr(head, "out_dim", None)
        if outputs is None and getattr(fusion, "produces_logits", False):
            outputs = getattr(fusion, "num_classes", None)
        if outputs not in (None, 1):
            raise ValueError(
                f"a regression predicts one value per sample but the head has "
                f"{outputs} outputs; set objective.num_outputs=1"
            )
        # num_classes is the head's width for the parts shared with classification
        # (finetuning protocols rebuild the head with it); there is no confusion matrix.
        super().__init__(
            encoders,
            fusion,
            head,
            loss,
            num_classes=1,
            optimizer=optimizer,
            scheduler=scheduler,
            monitor=monitor,
            monitor_mode=monitor_mode,
            metrics=metrics,
            confusion_matrix=False,
            run_config=run_config,
            save_frozen_weights=save_frozen_weights,
            modality_dropout=modality_dropout,
            train_metrics_every_n_steps=train_metrics_every_n_steps,
        )

    def setup(self, stage: str) -> None:
        """Refuse data whose labels are class indices: a regression needs real targets.

        Raises:
            ValueError: The data module does not declare real-valued targets.
        """
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is not None and not getattr(datamodule, "regression", False):
            raise ValueError(
                f"objective=regression needs real-valued targets (data=mosi, "
                f"mosei), but {type(datamodule).__name__} gives class indices; "
                "use objective=classify"
            )

    def predictions(self, outputs: torch.Tensor) -> torch.Tensor:
        """One score per sample: ``[B, 1]`` outputs become ``[B]``."""
        return outputs.squeeze(-1)
