"""The search loop of ``hydra/sweeper=mmexp_optuna``: ask, launch, tell, until the budget is spent.

Optuna's ask-and-tell interface keeps the study in this process and the training in the
launcher's jobs: each round asks for as many trials as the launcher runs at once
(``n_jobs``; by default the launcher's own ``n_jobs``, else 1), launches them together as
ordinary mmexp-train jobs (so ``launcher=local_parallel`` or ``launcher=slurm`` run them in
parallel), and tells the study each job's optimised metric(s). A trial's job folder is
``<sweep dir>/trial_<number>``; a job that fails counts as a failed trial (the run record
says why) and the search goes on until more than ``max_failure_rate`` of the trials failed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import Trial, TrialState

from mmexp.search.report import write_report
from mmexp.search.space import as_override, parse_search_space, quoted
from mmexp.search.study import (
    ask_within_budget,
    frozen,
    open_storage,
    retry_abandoned_trials,
    storage_location,
)

log = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    """The sweeper's settings (``conf/hydra/sweeper/mmexp_optuna.yaml``)."""

    sampler: Any
    pruner: Any
    storage: str | None
    study_name: str
    direction: str | Sequence[str]
    n_trials: int
    n_jobs: int | None
    max_failure_rate: float
    params: dict[str, str] | None


def _directions(settings: SearchSettings, config: DictConfig) -> list[str]:
    directions = (
        [settings.direction]
        if isinstance(settings.direction, str)
        else [str(d) for d in settings.direction]
    )
    for direction in directions:
        if direction not in ("minimize", "maximize"):
            raise ValueError(
                f"hydra.sweeper.direction: {direction!r} is neither minimize nor maximize"
            )
    metric = config.get("optimized_metric")
    names = list(metric) if isinstance(metric, (list, ListConfig)) else [metric]
    if metric is None or len(names) != len(directions):
        raise ValueError(
            f"optimized_metric ({metric}) must name one metric per hydra.sweeper.direction "
            f"({directions})"
        )
    return directions


def _batch_size(settings: SearchSettings, config: DictConfig) -> int:
    if settings.n_jobs is not None:
        return max(1, settings.n_jobs)
    launcher_jobs = config.hydra.launcher.get("n_jobs", 1)
    return max(1, int(launcher_jobs)) if launcher_jobs and launcher_jobs > 0 else 1


def _values(job: JobReturn) -> list[float] | None:
    if job.status != JobStatus.COMPLETED:
        return None
    value = job.return_value
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if any(v is None or not math.isfinite(float(v)) for v in values):
        return None
    return [float(v) for v in values]


def _job_overrides(trial: Trial, fixed: list[str], location: str, study_name: str) -> list[str]:
    identity = (
        f"optuna_trial={{storage:{quoted(location)},study_name:{quoted(study_name)},"
        f"number:{trial.number}}}"
    )
    params = [as_override(key, value) for key, value in trial.params.items()]
    return [*fixed, *params, f"hydra.sweep.subdir=trial_{trial.number}", identity]


def run_search(
    settings: SearchSettings, launcher: Launcher, config: DictConfig, arguments: Sequence[str]
) -> optuna.Study:
    """Fill the study with ``settings.n_trials`` finished trials and write its report.

    Args:
        settings: The sweeper's settings.
        launcher: Runs each round's jobs.
        config: The composed config (with its ``hydra`` node).
        arguments: The multirun's command-line overrides; their sweeps join ``params``.

    Returns:
        The study.

    Raises:
        ValueError: A setting is wrong (direction, optimized_metric, search space, grid
            sampler over continuous values); raised before any trial runs.
        RuntimeError: More than ``max_failure_rate`` of the trials failed.
    """
    directions = _directions(settings, config)
    space = parse_search_space(settings.params, arguments)
    sampler, n_trials = settings.sampler, settings.n_trials
    if callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler):
        grid = space.grid()  # a sampler that needs the space: the grid
        sampler = sampler(search_space=grid)
        n_trials = min(n_trials, math.prod(len(values) for values in grid.values()))
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    location = storage_location(settings.storage, sweep_dir)
    study = optuna.create_study(
        storage=open_storage(location),
        sampler=sampler,
        pruner=settings.pruner,
        study_name=settings.study_name,
        directions=directions,
        load_if_exists=True,
    )
    retry_abandoned_trials(study)
    log.info("Optuna study %r in %s, %d trials", settings.study_name, location, n_trials)
    batch_size = _batch_size(settings, config)
    launched = failed = 0
    while True:
        batch: list[Trial] = []
        while len(batch) < batch_size:
            trial = ask_within_budget(study, space.distributions, n_trials)
            if trial is None:
                break
            batch.append(trial)
        if not batch:
            break
        jobs = launcher.launch(
            [_job_overrides(t, space.fixed, location, settings.study_name) for t in batch],
            initial_job_idx=launched,
        )
        launched += len(batch)
        for trial, job in zip(batch, jobs, strict=True):
            if frozen(study, trial.number).state != TrialState.RUNNING:
                continue  # pruned by its job
            values = _values(job)
            if values is None:
                failed += 1
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, values)
        if failed > settings.max_failure_rate * launched:
            write_report(study, sweep_dir)
            raise RuntimeError(
                f"{failed} of {launched} trials failed, more than max_failure_rate "
                f"({settings.max_failure_rate}); see their results.json under {sweep_dir}"
            )
    write_report(study, sweep_dir)
    return study
