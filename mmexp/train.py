"""``mmexp-train``: fit and test a model on the composed config.

Examples:
    mmexp-train                                    # embedded default (shapes, image+text)
    mmexp-train data.task=redundant seed=3
    mmexp-train experiment=shapes_synergy trainer.max_epochs=20
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import rank_zero_only

from mmexp import CONFIG_DIR
from mmexp.builders import build_data_and_model, measure_fusion_cost
from mmexp.config_check import check_config
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.data.feature_cache import with_feature_cache
from mmexp.data.screening import skipped_report
from mmexp.finetune import prepare_finetune
from mmexp.lit.checkpoint_io import newest_checkpoint
from mmexp.lit.preemption import Preempted
from mmexp.lit.speed import apply_speed_options, speed_options
from mmexp.tracking.run_record import RunRecord
from mmexp.tracking.sweep_jobs import run_job
from mmexp.utils.instantiate import build_trainer
from mmexp.utils.resolvers import register_resolvers
from mmexp.utils.summary import print_summary

log = logging.getLogger(__name__)


def _checkpoint_callback(trainer: pl.Trainer) -> ModelCheckpoint | None:
    # The one keeping the best checkpoint on the monitored metric.
    return next(
        (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and c.monitor is not None),
        None,
    )


def _log_config(trainer: pl.Trainer, cfg: DictConfig, record: RunRecord) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    meta = {
        key: record.payload.get(key)
        for key in (
            "git",
            "packages",
            "python",
            "hostname",
            "choices",
            "overrides",
            "fusion_cost",
            "pretrained_from",
        )
    }
    for logger in trainer.loggers:
        logger.log_hyperparams({**resolved, "run": meta})


@rank_zero_only
def _save_resolved_config(cfg: DictConfig, output_dir: Path) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)


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
        callback = _checkpoint_callback(trainer)
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, then test the best checkpoint; always leave a run record.

    Args:
        cfg: The composed config (``conf/train.yaml``).

    Returns:
        The run record (``results.json`` contents) with the final metrics.
    """
    output_dir = Path(cfg.paths.output_dir)
    record = RunRecord(output_dir, cfg.task_name, cfg.get("seed"), list(cfg.get("tags") or []))
    if rank_zero_only.rank == 0:
        record.start()
        _save_resolved_config(cfg, output_dir)
    metrics: dict[str, Any] = {}
    trainer: pl.Trainer | None = None
    try:
        check_config(cfg)  # before any data generation or model building
        if cfg.get("seed") is not None:
            pl.seed_everything(cfg.seed, workers=True)
        finetuning = prepare_finetune(cfg)
        if finetuning is not None and finetuning.source is not None and rank_zero_only.rank == 0:
            _save_resolved_config(cfg, output_dir)  # with the encoders of the pretraining run
        datamodule, model = build_data_and_model(cfg)
        if finetuning is not None:
            lineage = finetuning.apply(model)
            record.payload["pretrained_from"] = lineage
            # Evaluating the finetuned checkpoint rebuilds the same towers' structure.
            model.run_config["finetune"]["towers"] = lineage["towers"]
        datamodule = with_feature_cache(cfg, model, datamodule)
        if isinstance(datamodule, CachedDataModule):
            record.payload["feature_cache"] = datamodule.report
        speed = apply_speed_options(model, **speed_options(cfg.model))
        if speed:
            record.payload["speed_options"] = speed
        cost = measure_fusion_cost(model, datamodule)
        if cost is not None:
            log.info(
                "fusion: %d parameters (head: %d), %d FLOPs per sample",
                cost["params"],
                cost["head_params"],
                cost["flops_per_sample"],
            )
            record.payload["fusion_cost"] = cost
        trainer = build_trainer(cfg)
        _log_config(trainer, cfg, record)
        if cfg.get("train"):
            trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path(cfg, trainer))
            metrics.update(trainer.callback_metrics)
        checkpoint = _checkpoint_callback(trainer)
        # Read before testing: restoring the best checkpoint also restores this callback's
        # state as it was then (without the later last.ckpt).
        best_path = checkpoint.best_model_path if checkpoint else ""
        last_path = str(newest_checkpoint(trainer) or "")
        if cfg.get("test"):
            trainer.test(model, datamodule=datamodule, ckpt_path=best_path or None)
            metrics.update(trainer.callback_metrics)
        extra = {
            "tracking_fallbacks": [
                lg.fallback for lg in trainer.loggers if getattr(lg, "fallback", None)
            ],
            "monitor": cfg.monitor,
            "best_checkpoint": best_path or None,
            "last_checkpoint": last_path or None,
            # rows left out at setup under data.on_bad_sample=skip, per split and which
            "data_skipped": skipped_report(getattr(datamodule, "bad_samples", [])),
        }
        if rank_zero_only.rank != 0:
            return {"metrics": metrics}
        result = record.finish(metrics, **extra)
    except Preempted as stop:
        if rank_zero_only.rank == 0:
            record.interrupt(str(stop), stop.checkpoint, metrics)
        log.warning("%s", stop)
        raise
    except BaseException as error:
        if rank_zero_only.rank == 0:
            record.fail(error, metrics)
        raise
    finally:
        _close_loggers(trainer)
    print_summary(
        f"mmexp {cfg.task_name}: final metrics",
        result["metrics"],
        {"run folder": output_dir, "best checkpoint": best_path or "-"},
    )
    return result


def _close_loggers(trainer: pl.Trainer | None) -> None:
    # A W&B run left open keeps its service process alive and, in a multirun, would make
    # the next job log into this run.
    if trainer is None:
        return
    for logger in trainer.loggers:
        experiment = getattr(logger, "_experiment", None)
        if experiment is not None and hasattr(experiment, "finish"):
            experiment.finish()


register_resolvers()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Console entry point; returns the optimized metric for Hydra sweepers."""
    return run_job(cfg, train)


if __name__ == "__main__":
    main()
