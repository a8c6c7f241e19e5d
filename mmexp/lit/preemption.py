"""Save a resumable checkpoint when the job is told to stop, then stop.

Clusters announce the end of a job with a signal: SIGTERM (``scancel``, Kubernetes, most
schedulers), SIGUSR1 (a common ``--signal`` choice) or SIGUSR2 (submitit's, which
``launcher=slurm`` uses). :class:`SaveOnSignal` notes the signal, lets the current training
step finish (with gradient accumulation, the current window, whose summed gradients no
checkpoint holds), writes ``last.ckpt`` (atomically, with the loader position and generator
states, so a run resumed from it continues where it stopped), hands the signal on to the
handler installed before it (submitit requeues the job there) and ends the run with
:class:`Preempted`. Under DDP the ranks agree on stopping at the same step.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import ModelCheckpoint

from mmexp.lit.lightning_compat import flush_step_metrics, is_lightning_signal_handler

log = logging.getLogger(__name__)

# Exit status of a process ended by a signal (shells report 128 + the signal number).
SIGNAL_EXIT_BASE = 128


class Preempted(SystemExit):
    """The run stopped on a signal after saving ``checkpoint``.

    Args:
        signum: The signal received.
        checkpoint: The checkpoint written.
        step: The global step it holds.
        exit_code: The process's exit status; by default 128 + ``signum``, as a shell
            reports a process ended by that signal.
    """

    def __init__(
        self, signum: int, checkpoint: Path, step: int, exit_code: int | str | None = None
    ) -> None:
        name = signal.Signals(signum).name
        self.checkpoint, self.signal_name, self.step = checkpoint, name, step
        super().__init__(SIGNAL_EXIT_BASE + signum if exit_code is None else exit_code)

    def __str__(self) -> str:
        return (
            f"stopped by {self.signal_name} after step {self.step}; saved {self.checkpoint}"
            f" (resume: ckpt_path={self.checkpoint})"
        )


def ends_optimizer_step(trainer: pl.Trainer, batch_idx: int) -> bool:
    """Whether training batch ``batch_idx`` of the epoch ends with an optimizer step.

    Lightning steps after every ``accumulate_grad_batches`` batches and after the epoch's
    last batch, whatever the count.
    """
    every = trainer.accumulate_grad_batches
    return (batch_idx + 1) % every == 0 or batch_idx + 1 >= trainer.num_training_batches


class SaveOnSignal(pl.Callback):
    """On one of ``signals``, checkpoint at the end of the current step and stop.

    Args:
        signals: Names of the signals to handle (``SIGTERM``, ``SIGUSR1``, ``SIGUSR2``...).
        filename: Checkpoint file name, in the ``ModelCheckpoint`` folder (or the trainer's
            root folder without one); ``last.ckpt`` is the file ``ckpt_path=last`` resumes.
    """

    def __init__(
        self,
        signals: Sequence[str] = ("SIGTERM", "SIGUSR1", "SIGUSR2"),
        filename: str = "last.ckpt",
    ) -> None:
        self.signals = [
            signal.Signals[name] if isinstance(name, str) else signal.Signals(name)
            for name in signals
        ]
        self.filename = filename
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: FrameType | None) -> None:
        # Only note it: saving inside a signal handler could interrupt a half-done step.
        if self.received is None:
            log.warning(
                "received %s: saving a checkpoint after this step, then stopping",
                signal.Signals(signum).name,
            )
        self.received = signum

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Install the handlers."""
        # Installed after Lightning's and the launcher's handlers, which are kept to be
        # called once the checkpoint is written.
        self.received = None
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._note)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Put the previous handlers back."""
        self._restore_handlers()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        """Put the previous handlers back."""
        self._restore_handlers()

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def _agreed_signal(self, trainer: pl.Trainer) -> int | None:
        """The signal any rank received (the same value on every rank)."""
        if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
            return self.received
        flag = torch.tensor([self.received or 0], device=trainer.strategy.root_device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item()) or None

    def checkpoint_path(self, trainer: pl.Trainer) -> Path:
        """Where the signal checkpoint goes."""
        callback = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        folder = callback.dirpath if callback is not None and callback.dirpath else None
        return Path(folder or Path(trainer.default_root_dir) / "checkpoints") / self.filename

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """After a step in which a signal came: save, hand the signal on, stop."""
        if not ends_optimizer_step(trainer, batch_idx):
            # Inside a gradient accumulation window the summed gradients are in no
            # checkpoint: a save here would resume without them. Wait for the window's end.
            return
        signum = self._agreed_signal(trainer)
        if signum is None:
            return
        path = self.checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        log.warning(
            "saved %s at epoch %d, step %d", path, trainer.current_epoch, trainer.global_step
        )
        previous = self._previous.get(signum)
        self._restore_handlers()
        # Log this step's metrics, as Lightning would right after this hook, so the run's
        # logs hold every step the checkpoint holds.
        flush_step_metrics(trainer)
        for logger in trainer.loggers:
            logger.save()
        # Hand the signal on to the handler found at start (submitit requeues the job
        # there), but not to Lightning's: it would stop at its own pace, and its SIGTERM
        # handler broadcasts from rank 0 at a moment the other ranks do not expect.
        launcher_exit = None
        if callable(previous) and not is_lightning_signal_handler(previous):
            # The launcher may end the process itself (submitit, once requeued): Preempted
            # does so below, after train() has recorded the run as interrupted, with the
            # launcher's exit status, since that may be its requeue request (submitit's
            # local executor restarts a task that exits with 144).
            try:
                previous(signum, None)
            except SystemExit as stop:
                launcher_exit = stop.code
        raise Preempted(signum, path, trainer.global_step, exit_code=launcher_exit)
