"""Fit and test an assembled run with a Lightning trainer, and keep its run record.

The steps ``mmexp-train`` runs after :func:`mmexp.assemble.assemble`: resuming from
``ckpt_path``, fitting, testing the best checkpoint, and what the run record keeps of them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from mmexp.analysis.run import check_configured, run_configured
from mmexp.assemble import AssembledRun
from mmexp.data.screening import skipped_report
from mmexp.finetune.closed_form import ClosedFormHead, fit_closed_form
from mmexp.lit.checkpoint_io import newest_checkpoint
from mmexp.lit.preemption import Preempted
from mmexp.robustness.evaluate import check_before_training, robustness_after_test
from mmexp.tracking.run_record import RunRecord
from mmexp.tracking.wandb_logger import ResilientWandbLogger

log = logging.getLogger(__name__)

#: What the loggers receive beside the resolved config, from the run record.
LOGGED_RECORD_KEYS = (
    "git",
    "packages",
    "python",
    "hostname",
    "choices",
    "overrides",
    "fusion_cost",
    "pretrained_from",
)


def checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The callback keeping the best checkpoint on the monitored metric, if any."""
    return next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None),
        None,
    )


@rank_zero_only
def save_resolved_config(cfg: DictConfig, output_dir: Path, name: str = "config.yaml") -> None:
    """Write the resolved config the run is built from (``config.yaml``)."""
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / name, resolve=True)


def log_run_config(trainer: pl.Trainer, cfg: DictConfig, record: RunRecord) -> None:
    """Give every logger the resolved config and the run's provenance (git, packages...)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta = {key: record.payload.get(key) for key in LOGGED_RECORD_KEYS}
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "run": meta})


def resume_path(cfg: DictConfig, trainer: pl.Trainer) -> str | None:
    """The checkpoint ``ckpt_path`` names: a file, a run folder (its ``last.ckpt``) or ``last``.

    ``last`` is this run folder's ``last.ckpt`` when there is one (a requeued or restarted
    job) and a fresh start otherwise.

    Raises:
        FileNotFoundError: A run folder without ``checkpoints/last.ckpt``, or no such path.
    """
    value = cfg.get("ckpt_path")
    if value is None:
        return None
    if str(value) == "last":
        callback = checkpoint_callback(trainer)
        folder = Path(callback.dirpath) if callback and callback.dirpath else None
        last = folder / "last.ckpt" if folder else None
        if last is None or not last.is_file():
            log.info("ckpt_path=last: no last.ckpt in %s yet, starting from scratch", folder)
            return None
        log.info("resuming from %s", last)
        return str(last)
    path = Path(value)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path: no checkpoint at {path} (give a .ckpt file, a run "
            f"folder holding checkpoints/last.ckpt, or last)"
        )
    return str(path)


def fit_and_test(trainer: pl.Trainer, run: AssembledRun, metrics: dict[str, Any]) -> dict[str, Any]:
    """Fit (``train=true``), then test the best checkpoint (``test=true``).

    Args:
        trainer: The run's trainer.
        run: The assembled run.
        metrics: Filled with the trainer's metrics as they come (kept if a step fails).

    Returns:
        What the run record keeps beside the metrics: checkpoints, monitor, fallbacks,
        skipped samples.
    """
    cfg = run.cfg
    check_before_training(cfg, run)
    if cfg.get("test"):
        check_configured(cfg, run.module)
    protocol = run.finetuning.protocol if run.finetuning else None
    fitted = ""  # the checkpoint of a head fitted in closed form: best and last
    if cfg.get("train"):
        if isinstance(protocol, ClosedFormHead):
            fitted = fit_closed_form(trainer, run, protocol)
        else:
            ckpt_path = resume_path(cfg, trainer)
            trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
        metrics.update(trainer.callback_metrics)
    checkpoint = checkpoint_callback(trainer)
    # Read before testing: restoring the best checkpoint also restores this callback's
    # state as it was then (without the later last.ckpt).
    best_path = fitted or (checkpoint.best_model_path if checkpoint else "")
    last_path = fitted or str(newest_checkpoint(trainer) or "")
    if cfg.get("test"):
        # verbose=False: the test figures are in mmexp's final summary, printed once
        trainer.test(
            run.module, datamodule=run.datamodule, ckpt_path=best_path or None, verbose=False
        )
        metrics.update(trainer.callback_metrics)
    # With robustness=<grid>: the tested weights under modalities missing or perturbed.
    robustness = robustness_after_test(cfg, trainer, run, best_path or last_path or None)
    analysis = None
    if cfg.get("test") and rank_zero_only.rank == 0:
        analysis = run_configured(
            cfg,
            run.module,
            run.datamodule,
            Path(cfg.paths.output_dir),
            best_path or last_path or "(the trained weights)",
            trainer.loggers,
        )
    return {
        "tracking_fallbacks": [
            lg.fallback
            for lg in trainer.loggers
            if isinstance(lg, ResilientWandbLogger) and lg.fallback
        ],
        "monitor": cfg.monitor,
        "best_checkpoint": best_path or None,
        "last_checkpoint": last_path or None,
        # rows left out at setup under data.on_bad_sample=skip, per split and which
        "data_skipped": skipped_report(run.datamodule.bad_samples),
        # label values in one row only or in no training row (manifest data sets check)
        "data_labels": run.datamodule.label_report,
        # feature values a data set cleaned at setup (CMU-MOSI / MOSEI: NaN, inf set to 0)
        "data_cleaned": getattr(run.datamodule, "cleaned_report", {}),
        **({"robustness": robustness} if robustness else {}),
        **({"analysis": analysis} if analysis else {}),
    }


@contextmanager
def recorded(record: RunRecord, metrics: dict[str, Any]) -> Iterator[RunRecord]:
    """Mark the record running; on an exception, interrupted (preemption) or failed.

    Only rank 0 writes; ``metrics`` are those reached when the exception came.
    """
    writes = rank_zero_only.rank == 0
    if writes:
        record.start()
    try:
        yield record
    except Preempted as stop:
        if writes:
            record.interrupt(str(stop), stop.checkpoint, metrics)
        log.warning("%s", stop)
        raise
    except BaseException as error:
        if writes:
            record.fail(error, metrics)
        raise
