"""Evaluate an assembled run under a robustness grid and write its results.

One pass over the test split scores every condition that only removes modalities (from one
encoding per batch, :class:`~mmexp.robustness.probe.ConditionProbe`); each noise condition
then gets a pass of its own, with the perturbed modality's preprocessing wrapped
(:class:`~mmexp.robustness.perturbations.PerturbedProcessor`). After every pass the results
are written, so an interrupted evaluation resumes with the conditions it had not scored.

The conditions replace ``data.missing`` on the test split: they are scored on the complete
test data. Under DDP every process runs the passes on its shard; metrics are summed over
processes and only rank 0 writes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from torchmetrics import MaxMetric

from mmexp.assemble import AssembledRun
from mmexp.builders import encoder_processors
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.robustness.conditions import Condition, build_grid
from mmexp.robustness.probe import ConditionProbe, check_scorable
from mmexp.robustness.store import ROBUSTNESS_FILE, RobustnessStore
from mmexp.utils.instantiate import build_test_trainer

log = logging.getLogger(__name__)


def primary_metric(monitor: str) -> str:
    """The metric a robustness summary reads: the monitored one, without its split."""
    return monitor.split("/", 1)[1] if "/" in monitor else monitor


@contextmanager
def complete_test_split(datamodule: Any) -> Any:
    """The data module with ``data.missing`` lifted for the duration (conditions replace it)."""
    missing = getattr(datamodule, "missing", None)
    if missing is not None:
        datamodule.missing = None
    try:
        yield datamodule
    finally:
        if missing is not None:
            datamodule.missing = missing


@contextmanager
def perturbed(datamodule: Any, module: Any, condition: Condition) -> Any:
    """The data module with ``condition``'s modality perturbed before its preprocessing."""
    from mmexp.robustness.perturbations import PerturbedProcessor

    train, evaluation = encoder_processors(module)
    assert condition.perturb is not None and condition.modality is not None
    changed = dict(evaluation)
    changed[condition.modality] = PerturbedProcessor(
        evaluation[condition.modality], condition.perturb()
    )
    datamodule.set_processors(train, changed)
    try:
        yield datamodule
    finally:
        datamodule.set_processors(train, evaluation)


def evaluate_robustness(
    run: AssembledRun,
    grid: Mapping[str, Any],
    folder: Path,
    checkpoint: str,
    make_trainer: Callable[[], pl.Trainer],
    loggers: Sequence[Any] = (),
) -> dict[str, Any]:
    """Score ``run.module`` under every condition of ``grid``; write ``robustness.json``.

    Args:
        run: The assembled run, its weights loaded (the checkpoint's, or the best of a fit).
        grid: The ``robustness`` config (see :func:`~mmexp.robustness.conditions.build_grid`).
        folder: Where ``robustness.json`` and ``robustness.csv`` go (the run folder).
        checkpoint: The evaluated checkpoint, recorded (a file scored for another one is set
            aside, not resumed).
        make_trainer: A test trainer (no callbacks or loggers needed); one per pass.
        loggers: Loggers that receive each condition's metrics (``robust/...`` keys).

    Returns:
        The ``robustness.json`` payload.

    Raises:
        TypeError: The module cannot be scored with modalities removed (contrastive).
        ValueError: A grid that does not fit the checkpoint (see ``build_grid``).
    """
    module: Any = run.module
    check_scorable(module)
    modalities = list(module.encoders)
    conditions = build_grid(grid, modalities)
    header = {
        "checkpoint": str(checkpoint),
        "seed": int(grid.get("seed", 0)),
        "metric": primary_metric(module.monitor),
        "mode": "max" if isinstance(module.best_monitored, MaxMetric) else "min",
        "modalities": modalities,
    }
    store = RobustnessStore(folder, header) if rank_zero_only.rank == 0 else None
    done = store.done() if store is not None else _done_elsewhere(folder, header)
    if store is not None:
        store.add_grid(str(grid.get("name", "custom")))
    todo = [c for c in conditions if c.name not in done]
    log.info("robustness: %d conditions, %d to score", len(conditions), len(todo))
    removing = [c for c in todo if c.removes_only]
    data = run.datamodule
    if removing:
        results = _score(make_trainer, module, removing, data)
        _record(store, loggers, removing, results)
    raw = data.base if isinstance(data, CachedDataModule) else data
    for condition in (c for c in todo if not c.removes_only):
        with perturbed(raw, module, condition):
            results = _score(make_trainer, module, [condition], raw)
        _record(store, loggers, [condition], results)
    if store is None:
        return {}
    store.write()
    return store.payload


def _score(
    make_trainer: Callable[[], pl.Trainer],
    module: Any,
    conditions: Sequence[Condition],
    datamodule: Any,
) -> dict[str, dict[str, float]]:
    probe = ConditionProbe(module, conditions)
    with complete_test_split(datamodule):
        make_trainer().test(probe, datamodule=datamodule, verbose=False)
    return probe.results


def _record(
    store: RobustnessStore | None,
    loggers: Sequence[Any],
    conditions: Sequence[Condition],
    results: Mapping[str, Mapping[str, float]],
) -> None:
    if store is None:
        return
    store.add(conditions, results)
    flat = {
        f"robust/{name}/{metric}": value
        for name, values in results.items()
        for metric, value in values.items()
    }
    for logger in loggers:
        logger.log_metrics(flat)
        logger.save()  # a logger whose trainer never ran (mmexp-eval) writes only when told


def _done_elsewhere(folder: Path, header: Mapping[str, Any]) -> set[str]:
    """What rank 0 resumes from, read by the other ranks (they must score the same)."""
    path = folder / ROBUSTNESS_FILE
    if not path.is_file():
        return set()
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    if any(existing.get(key) != header.get(key) for key in ("checkpoint", "seed")):
        return set()
    return set(existing.get("conditions", {}))


def robustness_after_test(
    cfg: Any, trainer: pl.Trainer, run: AssembledRun, checkpoint: str | None
) -> dict[str, Any] | None:
    """Score the tested module under ``cfg.robustness`` (``mmexp-train robustness=<grid>``).

    Runs after the test of the best checkpoint, whose weights the module then holds, and
    writes ``robustness.json`` in the run folder. Returns what the run record keeps: the
    file and the number of conditions; ``None`` without a grid.
    """
    grid = cfg.get("robustness")
    if not grid or not cfg.get("test"):
        return None
    folder = Path(cfg.paths.output_dir)
    payload = evaluate_robustness(
        run,
        grid,
        folder,
        checkpoint or "(the trained weights)",
        lambda: build_test_trainer(cfg),
        trainer.loggers,
    )
    return {"file": str(folder / ROBUSTNESS_FILE), "conditions": len(payload.get("conditions", {}))}
