"""Multirun job policy: a failing job does not stop the sweep, a finished job is not rerun.

Researchers running a fusion x task x seed matrix want the other cells to go on when one
fails, with the failed cell visible in the results (its ``results.json`` says ``failed``;
the sweeper gets NaN), and they want to rerun the same command after fixing or extending
it without paying again for finished cells. With ``fail_fast=true`` a failure stops the
sweep instead: Hydra's launchers start every job whatever the earlier ones returned, so the
failing job leaves a marker in the sweep folder and every later job stops at once on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf

from mmexp.tracking.device_slots import placed_on_slot, slots_apply, without_placement
from mmexp.tracking.run_record import RESULTS_FILE

log = logging.getLogger(__name__)

RESOLVED_CONFIG_FILE = "config.yaml"
FAIL_FAST_MARKER = "FAILED_FAST"


class SweepStopped(RuntimeError):
    """A job of a ``fail_fast`` sweep did not start because an earlier job failed."""


def _fail_fast_marker() -> Path:
    return Path(HydraConfig.get().sweep.dir) / FAIL_FAST_MARKER


def _cuda_devices() -> int:
    # device slots place multirun jobs only; a single run keeps trainer.devices as given
    if not in_multirun():
        return 0
    return torch.cuda.device_count()


def in_multirun() -> bool:
    """Whether the current process runs a job of a Hydra multirun."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def finished_result(
    cfg: DictConfig, resolve: Callable[[DictConfig], DictConfig] | None = None
) -> dict[str, Any] | None:
    """The stored result of this job if it already completed with the same config.

    A job counts as finished when its folder holds a ``results.json`` with status
    ``completed`` and a resolved ``config.yaml`` equal to the current resolved config, so a
    changed job (other epochs, another encoder) is rerun rather than skipped. Where the job
    ran (the GPU of its device slot, :mod:`mmexp.tracking.device_slots`) is no part of it.

    Args:
        cfg: The composed config of the job.
        resolve: Turns it into the config the run saves (``mmexp.resolve``); a config that
            cannot be resolved counts as not finished, and the job itself reports why.
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
    if resolve is not None:
        try:
            cfg = resolve(cfg)
        except Exception:
            return None
    current = without_placement(OmegaConf.to_container(cfg, resolve=True))
    if without_placement(OmegaConf.to_container(OmegaConf.load(saved_config))) != current:
        return None
    return payload


def objective_value(result: dict[str, Any], cfg: DictConfig) -> float | list[float | None] | None:
    """The metric(s) a Hydra sweeper optimizes (``optimized_metric``) from a run result.

    A list of metric names (a multi-objective search) gives a list of values.
    """
    name = cfg.get("optimized_metric")
    metrics = result.get("metrics", {})
    if isinstance(name, (list, ListConfig)):
        return [metrics.get(n) for n in name]
    return metrics.get(name) if name else None


def run_job(
    cfg: DictConfig,
    job: Callable[[DictConfig], dict[str, Any]],
    resolve: Callable[[DictConfig], DictConfig] | None = None,
) -> float | list[float | None] | None:
    """Run ``job(cfg)`` under the multirun policy and return the optimized metric(s).

    Args:
        cfg: The composed config; ``skip_completed`` and ``fail_fast`` steer the policy.
        job: The function running one job and returning its result record.
        resolve: How the job resolves its config (see :func:`finished_result`).

    Returns:
        The optimized metric, or NaN for a job that failed inside a multirun (sweepers
        such as Optuna record NaN as a failed trial).
    """
    fail_fast = in_multirun() and cfg.get("fail_fast", False)
    if fail_fast and _fail_fast_marker().is_file():
        raise SweepStopped(
            f"not started: fail_fast=true and an earlier job failed "
            f"({_fail_fast_marker().read_text().strip()})"
        )
    if cfg.get("skip_completed", True):
        done = finished_result(cfg, resolve)
        if done is not None:
            log.info("skipping %s: already completed with this config", cfg.paths.output_dir)
            return objective_value(done, cfg)
    cuda_devices = _cuda_devices()
    # a config the slots cannot place stops the sweep here, before any job computes
    slots_apply(cfg, cuda_devices)
    try:
        with placed_on_slot(cfg, cuda_devices) as placed:
            return objective_value(job(placed), cfg)
    except Exception as error:
        if fail_fast:
            _fail_fast_marker().write_text(f"{cfg.paths.output_dir}: {error}\n")
        if not in_multirun() or fail_fast:
            raise
        log.exception(
            "job in %s failed; its results.json records the error and the sweep goes on "
            "(fail_fast=true stops the sweep instead)",
            cfg.paths.output_dir,
        )
        return float("nan")
