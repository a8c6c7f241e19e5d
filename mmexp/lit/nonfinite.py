"""Stop, or skip the batch, when the training loss is NaN or infinite.

A non-finite loss poisons the weights at the next optimizer step, and every checkpoint
after it. :class:`NonFiniteLoss` watches the loss of every step:

* ``action="stop"`` ends the run with :class:`NonFiniteLossError`, naming the epoch, step
  and batch, and the last checkpoint written before (weights still finite). The check reads
  the previous step's flag, so training does not wait on the device every step; the step
  that produced the NaN has updated the weights by then, so no checkpoint is written after
  it (the error stops the run before the next save).
* ``action="skip"`` drops the gradients of a batch with a non-finite loss, so the
  optimizer leaves the weights as they were, puts back the normalization layers' running
  statistics its forward pass updated (BatchNorm), and goes on; after ``max_skips`` such
  batches in a row it stops as above. Deciding before the optimizer step waits on the
  device once per step.

Under DDP the ranks agree (one all-reduce of a flag per step), so every rank stops or
skips at the same step.
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist

from mmexp.lit.checkpoint_io import newest_checkpoint

log = logging.getLogger(__name__)

ACTIONS = ("stop", "skip")
# Buffers a training forward pass updates (BatchNorm and the other normalization layers).
RUNNING_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _running_stats(module: torch.nn.Module) -> list[torch.Tensor]:
    return [
        buffer
        for name, buffer in module.named_buffers()
        if name.rpartition(".")[2] in RUNNING_STATS
    ]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class NonFiniteLoss(pl.Callback):
    """Watch the training loss; stop or skip the batch when it is not finite.

    Args:
        action: ``stop`` or ``skip`` (see the module docstring).
        max_skips: With ``skip``, consecutive skipped batches after which the run stops.
    """

    def __init__(self, action: str = "stop", max_skips: int = 10) -> None:
        if action not in ACTIONS:
            raise ValueError(f"callbacks.non_finite_loss.action={action!r}: use one of {ACTIONS}")
        self.action, self.max_skips = action, max_skips
        self._bad: torch.Tensor | None = None  # this step's flag, still on the device
        self._where: tuple[int, int, int] = (0, 0, 0)
        self._skipped_in_a_row = 0
        self._stats: list[torch.Tensor] = []  # running statistics before this step (skip)
        self.skipped = 0

    def _agree(self, trainer: pl.Trainer, bad: torch.Tensor) -> torch.Tensor:
        if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
            flag = bad.to(torch.int32).reshape(1)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            return flag.bool().reshape(())
        return bad

    def _check_previous(self, trainer: pl.Trainer) -> None:
        # ``stop``: the flag of the last step, computed by now; a finite one is done with.
        if self.action != "stop" or self._bad is None:
            return
        if bool(self._bad.item()):
            self._fail(trainer)
        self._bad = None

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Check the previous step; note where this one is."""
        self._check_previous(trainer)
        self._where = (trainer.current_epoch, trainer.global_step, batch_idx)
        if self.action == "skip":
            self._stats = [stat.clone() for stat in _running_stats(pl_module)]

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the last step before validating (and checkpointing) its weights."""
        self._check_previous(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        """Never write weights a non-finite loss has updated."""
        self._check_previous(trainer)

    def on_before_backward(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor
    ) -> None:
        """Flag this step's loss (without waiting for it)."""
        # One small kernel per step: the flag stays a 0-d bool on the device.
        bad = self._agree(trainer, torch.isfinite(loss.detach()).logical_not_())
        # Under gradient accumulation a NaN in any micro-batch poisons the step: keep the
        # flag until the optimizer step (skip) or the check of the next batch (stop).
        self._bad = bad if self._bad is None else torch.logical_or(self._bad, bad)

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        """``skip``: drop the gradients of a non-finite batch."""
        if self.action != "skip" or self._bad is None:
            return
        if not bool(self._bad.item()):
            self._skipped_in_a_row = 0
            self._bad = None
            return
        self._skipped_in_a_row += 1
        self.skipped += 1
        # The forward pass of the non-finite batch has updated the running statistics.
        for stat, before in zip(_running_stats(pl_module), self._stats, strict=False):
            stat.copy_(before)
        epoch, step, batch_idx = self._where
        log.warning(
            "non-finite training loss at epoch %d, step %d (batch %d): batch skipped",
            epoch,
            step,
            batch_idx,
        )
        pl_module.log("train/skipped_batches", float(self.skipped), reduce_fx="max")
        if self._skipped_in_a_row > self.max_skips:
            self._fail(trainer, f"{self._skipped_in_a_row} batches in a row")
        optimizer.zero_grad(set_to_none=True)  # parameters without gradients are not updated
        self._bad = None

    def _fail(self, trainer: pl.Trainer, count: str = "") -> None:
        epoch, step, batch_idx = self._where
        last_good = newest_checkpoint(trainer)
        resume = (
            f"the last checkpoint before it is {last_good}"
            if last_good
            else "no checkpoint was written before it"
        )
        what = f" ({count})" if count else ""
        raise NonFiniteLossError(
            f"training loss is NaN or infinite at epoch {epoch}, step {step} (batch "
            f"{batch_idx} of the epoch){what}; {resume}. Lower the learning rate, clip "
            f"gradients, or set callbacks.non_finite_loss.action=skip"
        )
