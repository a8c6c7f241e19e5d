"""Lightning callbacks of mmexp."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch import nn

from mmexp.encoders.freezing import count_parameters

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
        self._print(counts)
        values: dict[str, int] = {}
        for name, (trainable, total) in counts.items():
            values[f"params/{name}/trainable"] = trainable
            values[f"params/{name}/total"] = total
        for logger in trainer.loggers:
            logger.log_hyperparams(values)  # rank-zero only in every Lightning logger

    @staticmethod
    @rank_zero_only
    def _print(counts: dict[str, tuple[int, int]]) -> None:
        width = max(len(name) for name in counts)
        lines = [
            f"  {name:<{width}}  {trainable:>12,} trainable / {total:>12,} total"
            for name, (trainable, total) in counts.items()
        ]
        log.info("parameters:\n%s", "\n".join(lines))
