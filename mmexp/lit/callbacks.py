"""Lightning callbacks of mmexp."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from mmexp.data.contract import MultimodalDataModule
from mmexp.encoders.freezing import count_parameters
from mmexp.metrics.report import per_class_metrics, plot_confusion_matrix, write_per_class_csv

log = logging.getLogger(__name__)


def parameter_counts(module: nn.Module) -> dict[str, tuple[int, int]]:
    """``(trainable, total)`` per encoder, for the fusion, the head and the whole module.

    Keys are ``encoders.<modality>``, ``fusion``, ``head`` (those the module has) and
    ``total``.
    """
    counts: dict[str, tuple[int, int]] = {}
    encoders = getattr(module, "encoders", None)
    if isinstance(encoders, nn.ModuleDict):
        for name, encoder in encoders.items():
            counts[f"encoders.{name}"] = count_parameters(encoder)
    for name in ("fusion", "head"):
        part = getattr(module, name, None)
        if isinstance(part, nn.Module):
            counts[name] = count_parameters(part)
    counts["total"] = count_parameters(module)
    return counts


class ParameterCountLogger(Callback):
    """Log trainable and total parameters of each part when fitting starts.

    Freezing and LoRA change what trains without changing the architecture, so the counts
    are recorded with the run (as ``params/<part>/trainable`` and ``params/<part>/total``
    hyperparameters of every logger) to tell such runs apart in a results table.
    """

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Count the parameters and send them to the log and to the trainer's loggers."""
        counts = parameter_counts(pl_module)
        self._print(counts, module_facts(pl_module))
        values: dict[str, int] = {}
        for name, (trainable, total) in counts.items():
            values[f"params/{name}/trainable"] = trainable
            values[f"params/{name}/total"] = total
        for logger in trainer.loggers:
            logger.log_hyperparams(values)  # rank-zero only in every Lightning logger

    @staticmethod
    @rank_zero_only
    def _print(counts: dict[str, tuple[int, int]], facts: str) -> None:
        width = max(len(name) for name in counts)
        lines = [
            f"  {name:<{width}}  {trainable:>12,} trainable / {total:>12,} total"
            for name, (trainable, total) in counts.items()
        ]
        log.info("parameters:\n%s\n  %s", "\n".join(lines), facts)


def module_facts(module: nn.Module) -> str:
    """Parameter size and modules per mode: what Lightning's model summary adds to the counts.

    The training config leaves Lightning's summary out (``trainer.enable_model_summary``);
    frozen parts show here as the modules in eval mode.
    """
    size = sum(p.numel() * p.element_size() for p in module.parameters()) / 1e6
    modes = [part.training for part in module.modules()]
    return (
        f"{size:.3f} MB of parameters; modules: {sum(modes)} in train mode, "
        f"{len(modes) - sum(modes)} in eval mode"
    )


class TestReport(Callback):
    """After testing, save a confusion matrix and per-class metrics, and log them.

    Writes ``confusion_matrix.png`` and ``per_class_metrics.csv`` into ``dirpath`` and sends
    both to loggers that take images and tables (W&B). Class names come from the data
    module's ``label_names``.

    Args:
        dirpath: Folder for the report files (the run folder's ``test_report``).
    """

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Write and log the report of the test run that just ended."""
        confusion = getattr(pl_module, "test_confusion_result", None)
        if confusion is None:
            return
        # A test run on bare loaders has no data module to name the classes.
        datamodule: MultimodalDataModule | None = trainer.datamodule
        names = (
            list(datamodule.label_names)
            if datamodule is not None
            else [str(i) for i in range(confusion.shape[0])]
        )
        self.dirpath.mkdir(parents=True, exist_ok=True)
        rows = per_class_metrics(confusion, names)
        write_per_class_csv(rows, self.dirpath / "per_class_metrics.csv")
        figure = self.dirpath / "confusion_matrix.png"
        plot_confusion_matrix(confusion, names, figure)
        for logger in trainer.loggers:
            if hasattr(logger, "log_image") and hasattr(logger, "log_table"):
                logger.log_image(key="test/confusion_matrix", images=[str(figure)])
                logger.log_table(
                    key="test/per_class",
                    columns=list(rows[0]),
                    data=[list(row.values()) for row in rows],
                )
        log.info("test report written to %s", self.dirpath)


class SkippedSampleCounter(Callback):
    """Log how many unreadable samples each split left out (``data.on_bad_sample=skip``).

    The collator reports ``num_skipped`` per batch; the sums are logged per epoch as
    ``<split>/skipped_samples``, summed over processes, so a data problem shows up in the
    metrics rather than only in the warnings. The sum is reduced here, in a hook every rank
    runs: a ``sync_dist`` value would be reduced lazily, possibly from a rank-zero-only
    callback (the progress bar), and deadlock.
    """

    def __init__(self) -> None:
        self.counts = {"train": 0, "val": 0, "test": 0}

    def _add(self, batch: Any, split: str) -> None:
        if isinstance(batch, dict):
            self.counts[split] += int(batch.get("num_skipped", 0))

    def _log(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        total = trainer.strategy.reduce(
            torch.tensor(float(self.counts[split]), device=pl_module.device), reduce_op="sum"
        )
        pl_module.log(f"{split}/skipped_samples", total)
        self.counts[split] = 0

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count the training batch's skipped samples."""
        self._add(batch, "train")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the epoch's training total."""
        self._log(trainer, pl_module, "train")

    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count the validation batch's skipped samples."""
        self._add(batch, "val")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the validation total (not for the sanity check)."""
        if trainer.sanity_checking:
            self.counts["val"] = 0
            return
        self._log(trainer, pl_module, "val")

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        """Count the test batch's skipped samples."""
        self._add(batch, "test")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the test total."""
        self._log(trainer, pl_module, "test")
