"""Faults injected into real runs: signals, kills and failing writes at a chosen step."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl
import torch


class SignalAtStep(pl.Callback):
    """Send ``signal`` to this process after training step ``step`` (0-based global)."""

    def __init__(self, step: int, signal: str = "SIGTERM") -> None:
        self.step, self.signal = step, signal

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step + 1:
            os.kill(os.getpid(), getattr(signal, self.signal))


class KillAtStep(pl.Callback):
    """SIGKILL this process (no handler, no save) after training step ``step``."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step + 1:
            os.kill(os.getpid(), signal.SIGKILL)


class NanLossAtStep(pl.Callback):
    """Make the training loss NaN at global step ``step`` by poisoning the batch's images.

    With ``every=True``, at every step from ``step`` on.
    """

    def __init__(self, step: int, key: str = "image", every: bool = False) -> None:
        self.step, self.key, self.every = step, key, every

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.step or (self.every and trainer.global_step > self.step):
            batch[self.key].mul_(torch.nan)


class RaiseAtStep(pl.Callback):
    """Raise ``RuntimeError(message)`` after training step ``step`` (0-based global)."""

    def __init__(self, step: int, message: str = "injected crash") -> None:
        self.step, self.message = step, message

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if trainer.global_step == self.step + 1:
            raise RuntimeError(f"{self.message} after step {self.step}")


class SignalOnFirstAttempt(SignalAtStep):
    """:class:`SignalAtStep`, but only in a job's first attempt.

    A later attempt is one SLURM restarted (``SLURM_RESTART_COUNT``) or one that resumed
    from a checkpoint (submitit's local requeue sets no variable).
    """

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        restarted = int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0
        if not restarted and trainer.ckpt_path is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
