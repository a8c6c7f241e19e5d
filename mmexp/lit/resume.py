"""What a checkpoint needs beyond weights and optimizer for a resumed run to match.

Lightning's checkpoint holds the weights, optimizer and scheduler states, loop progress and
the training loader's position (:class:`~mmexp.data.loaders.ResumableLoader`). A run
resumed from the middle of an epoch would still differ from the uninterrupted one in three
ways, which :class:`ResumeState` closes:

* The training loader: Lightning builds it before restoring the loop, so it would start
  the resumed epoch over in the first epoch's order; it is built again once restored.
* Random number generators (dropout, random masking): their states at the checkpoint are
  restored before training resumes.
* Metrics accumulated so far (training accuracy and mean loss over the epoch, the best
  validation value over epochs): their states are saved and restored, so the epoch's
  figures cover all of its batches and ``*_best`` all epochs.

Random data augmentation in the main process is not replayed exactly: the loader fetches
one batch ahead of the step, and that batch is drawn again on resume.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics import Metric

from mmexp.lit.common import MultimodalModule
from mmexp.lit.lightning_compat import rebuild_train_loader, restore_update_count
from mmexp.utils.rng import rng_states, set_rng_states


def _metrics(module: pl.LightningModule) -> dict[str, Metric]:
    # Metrics that accumulate over training steps (epoch means, training accuracy) or over
    # epochs (best validation value so far), as the module declares them. Validation and
    # test metrics start empty at every evaluation, and are not carried.
    return module.carried_metrics() if isinstance(module, MultimodalModule) else {}


class ResumeState(pl.Callback):
    """Save generator and metric states in checkpoints; restore them on resume."""

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Add generator and metric states to the checkpoint."""
        if isinstance(pl_module, MultimodalModule):
            # Steps whose values are still held for a batched update belong in the states.
            pl_module.settle_training_metrics()
        metrics = {
            name: {"state": metric.metric_state, "updates": metric.update_count}
            for name, metric in _metrics(pl_module).items()
        }
        checkpoint["mmexp_resume"] = {"rng": rng_states(), "metrics": metrics}

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Keep the saved states for the first resumed step."""
        self._pending = checkpoint.get("mmexp_resume")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Resuming: rebuild the training loader; restore generators and metrics.

        Lightning builds the training loader while configuring the optimizers (the
        schedule asks for the number of steps), before it restores the loop's progress
        from the checkpoint, and then keeps that loader: its order would be the first
        epoch's from the start, and the saved loader position would never be loaded.
        Building it again here starts it at the restored epoch and position.
        """
        if trainer.ckpt_path is None:
            return
        rebuild_train_loader(trainer)
        if self._pending is None:
            return  # a checkpoint written without these states: the loader is all it gets
        # Nothing draws from the generators between here and the next training step (the
        # loader's workers take their seeds from its own generator).
        pending, self._pending = self._pending, None
        set_rng_states(pending["rng"])
        metrics = _metrics(pl_module)
        for name, saved in pending["metrics"].items():
            metric = metrics.get(name)
            if metric is None:
                continue
            # reset() drops a cached compute() result too; the states are attributes of
            # the metric, as add_state() declares them.
            metric.reset()
            for key, value in saved["state"].items():
                if isinstance(value, torch.Tensor):
                    value = value.to(metric.device)
                elif isinstance(value, list):
                    value = [v.to(metric.device) for v in value]
                setattr(metric, key, value)
            restore_update_count(metric, saved["updates"])
