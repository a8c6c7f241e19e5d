"""Every use of Lightning's internals, in one place.

mmexp needs a few things Lightning has no public API for: building the training loader
again once a checkpoint is restored, logging a step's metrics before the step is over,
looking at a logger's experiment without starting one, telling Lightning's signal handlers
from a launcher's, and reading the training loop's progress. Each function here says what it
relies on; ``tests/lit/test_lightning_compat.py`` checks each one on a short real run with the
installed Lightning, so a Lightning release that changes them fails there first.

Checked against pytorch-lightning 2.4.0 to 2.6.6 (the sources of 2.4.0, 2.5.0 to 2.5.6 and
2.6.0 to 2.6.5; the tests run on 2.6.6), and torchmetrics 1.4 to 1.9 for
:func:`restore_update_count`. ``pyproject.toml`` bounds both to these versions.
"""

from __future__ import annotations

from collections.abc import Callable
from types import FrameType
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger
from pytorch_lightning.trainer.connectors.signal_connector import _HandlersCompose
from torchmetrics import Metric

if TYPE_CHECKING:
    from pytorch_lightning.loggers import WandbLogger

#: What ``signal.signal`` and ``signal.getsignal`` take and return.
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


def rebuild_train_loader(trainer: pl.Trainer) -> None:
    """Build the fit loop's training loader again, at the position restored from a checkpoint.

    Lightning builds the training loader while configuring the optimizers (a schedule asks
    for the number of steps), before it restores the loop's progress, and keeps it: the
    loader state saved in the checkpoint would never be loaded, and the resumed epoch would
    start over from its first batch. Called in ``on_train_start`` of a resumed run, this
    builds it again, from the restored epoch and with the saved loader state.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``_FitLoop._combined_loader``, the built
    loader, which ``_FitLoop.setup_data()`` reuses when it is set; ``setup_data()`` then
    requests the loader from the data module and, while the loop is restarting, loads the
    saved loader states (``_load_combined_loader_states``).
    """
    loop = trainer.fit_loop
    loop._combined_loader = None  # noqa: SLF001 - setup_data() would keep the first loader
    loop.setup_data()


def flush_step_metrics(trainer: pl.Trainer) -> None:
    """Send this training step's logged values to the loggers now.

    Lightning does so right after ``on_train_batch_end``; a callback that ends the run in
    that hook (by raising) calls this first, so the logs hold every step the run trained.
    Follows ``log_every_n_steps`` as Lightning does.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``trainer._logger_connector`` and its
    ``update_train_step_metrics()``, the call ``_TrainingEpochLoop.advance`` makes after the
    batch-end hooks.
    """
    trainer._logger_connector.update_train_step_metrics()  # noqa: SLF001 - no public equivalent


def logs_this_step(trainer: pl.Trainer) -> bool:
    """Whether the values logged in this training step reach the loggers.

    True every ``log_every_n_steps`` steps and when the run is stopping, as Lightning
    decides right after ``on_train_batch_end``; a step value logged in other steps is only
    kept until the next one replaces it.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``trainer._logger_connector`` and its
    ``should_update_logs`` property, which the logging after ``on_train_batch_end`` reads.
    """
    return bool(trainer._logger_connector.should_update_logs)  # noqa: SLF001 - not public


def peek_experiment(logger: Logger) -> Any | None:
    """The logger's experiment (a W&B run, a CSV writer...) if it has started, else ``None``.

    ``logger.experiment`` starts one when there is none (a W&B run, with its service
    process and a network connection); this never does.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): Lightning's loggers (CSV, TensorBoard,
    W&B) keep the started experiment in ``_experiment``, ``None`` until ``experiment`` is
    first read. A logger without that attribute counts as not started.
    """
    return getattr(logger, "_experiment", None)


def set_experiment(logger: Logger, experiment: Any) -> None:
    """Make ``experiment`` the logger's experiment, as if ``logger.experiment`` had started it.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): the ``_experiment`` attribute (see
    :func:`peek_experiment`), which the logger's other methods (``version``, ``finalize``)
    read as well.
    """
    logger._experiment = experiment  # noqa: SLF001 - no public setter


def close_experiments(trainer: pl.Trainer | None) -> None:
    """Finish the experiments the trainer's loggers started (W&B runs); start none.

    A W&B run left open keeps its service process alive and, in a multirun, would make the
    next job log into this run. Experiments without ``finish`` (CSV, TensorBoard writers)
    are left to their loggers.

    Args:
        trainer: The trainer of the run; ``None`` (it could not be built) does nothing.

    Relies on: :func:`peek_experiment`.
    """
    if trainer is None:
        return
    for logger in trainer.loggers:
        experiment = peek_experiment(logger)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()


def wandb_init_arguments(logger: WandbLogger) -> dict[str, Any]:
    """The arguments the W&B logger will call ``wandb.init`` with; changes to them count.

    The logger takes them at construction and gives no public way to change them, but the
    run id of a run folder is only known (and written there) once the run starts.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``WandbLogger._wandb_init``, the
    dictionary ``WandbLogger.experiment`` passes to ``wandb.init(**...)``.
    """
    return logger._wandb_init  # noqa: SLF001 - no public equivalent


def is_lightning_signal_handler(handler: SignalHandler) -> bool:
    """Whether ``handler`` is the composition of handlers Lightning installs during a run.

    The trainer installs one on SIGTERM (and on the SLURM requeue signal with auto-requeue),
    calling its own handlers and then the handler it found there.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``_SignalConnector`` installs instances of
    ``_HandlersCompose`` (``pytorch_lightning.trainer.connectors.signal_connector``).
    """
    return isinstance(handler, _HandlersCompose)


def loop_epoch(trainer: pl.Trainer) -> int:
    """The epoch the fit loop trains (or is about to): the one Lightning gives the samplers.

    ``trainer.current_epoch`` counts completed epochs: it is one behind from the end of an
    epoch's last step until that epoch's end hooks are done, and so in a checkpoint written
    there until the resumed run starts training.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6): ``trainer.fit_loop.epoch_progress``
    (``_Progress``), ``current.processed``.
    """
    return trainer.fit_loop.epoch_progress.current.processed


def loop_trained_batches(trainer: pl.Trainer) -> int:
    """Training batches this process has run in the current epoch.

    ``processed``, not ``completed``: checkpoints written in ``on_train_batch_end`` come
    after the step and before Lightning counts it completed.

    Relies on (pytorch-lightning 2.4.0 to 2.6.6):
    ``trainer.fit_loop.epoch_loop.batch_progress`` (``_BatchProgress``),
    ``current.processed``.
    """
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def attached_trainer(module: pl.LightningModule) -> pl.Trainer | None:
    """The trainer the module is attached to, or ``None`` (``module.trainer`` would raise).

    Public API only: ``LightningModule.trainer`` raises ``RuntimeError`` when no trainer is
    attached (pytorch-lightning 2.4.0 to 2.6.6); under Fabric it is a stand-in, not a
    trainer, and counts as none.
    """
    try:
        trainer = module.trainer
    except RuntimeError:
        return None
    return trainer if isinstance(trainer, pl.Trainer) else None


def restore_update_count(metric: Metric, count: int) -> None:
    """Set how many updates the metric's restored states hold.

    torchmetrics reads the count (``update_called``, which
    :class:`~mmexp.lit.common.EpochMeans` checks before logging, and the warning for a
    ``compute()`` before any ``update()``) but has no public way to set it: states restored
    with :meth:`~torchmetrics.Metric.reset` and attribute assignment leave it at 0.

    Relies on (torchmetrics 1.4 to 1.9): ``Metric._update_count``, the attribute behind
    ``Metric.update_count``.
    """
    metric._update_count = count  # noqa: SLF001 - no public setter
