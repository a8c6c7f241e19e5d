"""Stop an Optuna trial early when its validation curve is worse than the study's pruner allows.

The sweeper (``hydra/sweeper=mmexp_optuna``) gives each trial ``optuna_trial`` (the
study's storage, name and the trial's number) and the sweeper's pruner (not stored with
the study: ``${hydra:sweeper.pruner}``). After every validation this callback
reports the monitored metric to the trial (step = epoch) and asks the study's pruner
whether to go on; when told to stop, it ends training at once and records the trial as
pruned (Optuna keeps the last reported value); the run's ``results.json`` then says
``status: pruned`` with ``pruned_at_epoch``. Without ``optuna_trial`` (a plain run, or
the best trial rerun on its own) it does nothing.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import optuna
import pytorch_lightning as pl
from optuna.trial import TrialState

from mmexp.search.study import load_trial

log = logging.getLogger(__name__)

#: Metric logged by a pruned trial: the epoch after which it stopped.
PRUNED_KEY = "optuna/pruned_at_epoch"


def pruned_epoch(trainer: pl.Trainer) -> int | None:
    """The epoch after which an :class:`OptunaPruning` callback stopped ``trainer``, if any."""
    for callback in trainer.callbacks:
        if isinstance(callback, OptunaPruning) and callback.pruned_at_epoch is not None:
            return callback.pruned_at_epoch
    return None


class OptunaPruning(pl.Callback):
    """Report each validation value to the trial and prune it when its pruner says so.

    Args:
        monitor: The validation metric reported (the study's first objective).
        trial: ``{storage, study_name, number}`` of the trial this run is, or ``None``.
        pruner: The study's pruner (an Optuna pruner); ``None``: Optuna's default, the
            median pruner.

    Attributes:
        pruned_at_epoch: The epoch after which the trial was pruned, or ``None``.
    """

    def __init__(
        self,
        monitor: str,
        trial: Mapping[str, Any] | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> None:
        self.monitor = monitor
        self.pruner = pruner
        self.trial_info = dict(trial) if trial else None
        self.pruned_at_epoch: int | None = None
        self._study: Any = None
        self._trial: Any = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Load the trial from the study's storage (first process only)."""
        if self.trial_info is None or stage != "fit" or not trainer.is_global_zero:
            return
        info = self.trial_info
        self._study, self._trial = load_trial(
            info["storage"], info["study_name"], int(info["number"]), self.pruner
        )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Report the epoch's value; stop training when the pruner says the trial is bad."""
        if self.trial_info is None or trainer.sanity_checking:
            return
        prune = False
        if trainer.is_global_zero:
            prune = self._report(trainer)
        # every process stops together
        if trainer.strategy.broadcast(prune, src=0):
            trainer.should_stop = True
            self.pruned_at_epoch = trainer.current_epoch
            # in the loggers too, so that a table read from W&B knows the run was pruned
            for logger in trainer.loggers:
                logger.log_metrics({PRUNED_KEY: trainer.current_epoch}, step=trainer.global_step)

    def _report(self, trainer: pl.Trainer) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise KeyError(
                f"OptunaPruning: monitor {self.monitor!r} was not logged in validation; "
                f"logged: {sorted(trainer.callback_metrics)}"
            )
        value = float(value)
        if not math.isfinite(value):
            return False  # the non-finite check reports it; a pruner cannot rank NaN
        self._trial.report(value, step=trainer.current_epoch)
        last_epoch = (
            trainer.max_epochs is not None and trainer.current_epoch + 1 >= trainer.max_epochs
        )
        if last_epoch or not self._trial.should_prune():
            return False  # a trial that trained every epoch is complete, not pruned
        self._study.tell(self._trial.number, state=TrialState.PRUNED)
        log.info(
            "trial %d pruned after epoch %d (%s = %.4f)",
            self._trial.number,
            trainer.current_epoch,
            self.monitor,
            value,
        )
        return True
