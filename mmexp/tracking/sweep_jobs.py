"""Multirun job policy: a failing job does not stop the sweep, a finished job is not rerun.

Hydra's basic launcher runs the jobs of a multirun in one process, so an exception in one
job ends the whole sweep. Researchers running a fusion x task x seed matrix want the other
cells to go on and the failed cell to be visible in the results, and they want to rerun
the same command after fixing or extending it without paying again for finished cells.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from mmexp.tracking.run_record import RESULTS_FILE

log = logging.getLogger(__name__)

RESOLVED_CONFIG_FILE = "config.yaml"


def in_multirun() -> bool:
    """Whether the current process runs a job of a Hydra multirun."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finished_result(cfg: DictConfig) -> dict[str, Any] | None:
    """The stored result of this job if it already completed with the same config.

    A job counts as finished when its folder holds a ``results.json`` with status
    ``completed`` and a resolved ``config.yaml`` equal to the current resolved config, so a
    changed job (other epochs, another encoder) is rerun rather than skipped.
    """
    folder = Path(cfg.paths.output_dir)
    results, saved_config = folder / RESULTS_FILE, folder / RESOLVED_CONFIG_FILE
    if not (results.is_file() and saved_config.is_file()):
        return None
    try:
        payload = json.loads(results.read_text())
    except ValueError:
        return None
    if payload.get("status") != "completed":
        return None
    current = OmegaConf.to_container(cfg, resolve=True)
    if OmegaConf.to_container(OmegaConf.load(saved_config)) != current:
        return None
    return payload


def objective_value(result: dict[str, Any], cfg: DictConfig) -> float | None:
    """The metric a Hydra sweeper optimizes (``optimized_metric``) from a run result."""
    name = cfg.get("optimized_metric")
    return result.get("metrics", {}).get(name) if name else None


def run_job(cfg: DictConfig, job: Any) -> float | None:
    """Run ``job(cfg)`` under the multirun policy and return the optimized metric.

    Args:
        cfg: The composed config; ``skip_completed`` and ``fail_fast`` steer the policy.
        job: The function running one job and returning its result record.

    Returns:
        The optimized metric, or NaN for a job that failed inside a multirun (sweepers
        such as Optuna record NaN as a failed trial).
    """
    if cfg.get("skip_completed", True):
        done = finished_result(cfg)
        if done is not None:
            log.info("skipping %s: already completed with this config", cfg.paths.output_dir)
            return objective_value(done, cfg)
    try:
        return objective_value(job(cfg), cfg)
    except Exception:
        if not in_multirun() or cfg.get("fail_fast", False):
            raise
        log.exception(
            "job in %s failed; its results.json records the error and the sweep goes on "
            "(fail_fast=true stops the sweep instead)", cfg.paths.output_dir
        )
        return float("nan")
