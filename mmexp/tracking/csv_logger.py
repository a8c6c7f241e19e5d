"""Lightning's CSV logger, appending to a run's metrics file instead of deleting it.

Lightning's writer deletes an existing ``metrics.csv`` when it starts. A run resumed into
its own folder (``ckpt_path=last``, a requeued SLURM job) would then lose every row logged
before the interruption. This writer keeps them and appends, rewriting the header only when
new metric names appear.
"""

from __future__ import annotations

import csv

from lightning_fabric.loggers.logger import rank_zero_experiment
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from mmexp.lit.lightning_compat import peek_experiment, set_experiment


class AppendingExperimentWriter(ExperimentWriter):
    """Writes ``metrics.csv`` after the rows already in it."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            header = next(csv.reader(handle), [])
        # Known columns: later rows with the same metrics append under the same header.
        self.metrics_keys = sorted(header)


class AppendingCSVLogger(CSVLogger):
    """:class:`~pytorch_lightning.loggers.CSVLogger` that keeps earlier rows on resume."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer (created on first use)."""
        writer = peek_experiment(self)
        if writer is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            writer = AppendingExperimentWriter(log_dir=self.log_dir)
            set_experiment(self, writer)
        return writer
