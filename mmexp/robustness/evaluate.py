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
from mmexp.robustness.keys import ROBUSTNESS_FILE, flat_metrics, metric_key
from mmexp.robustness.perturbations import PerturbedProcessor, check_applies, value_kind
from mmexp.robustness.plot import write_curve_png
from mmexp.robustness.probe import ConditionProbe, check_scorable
from mmexp.robustness.store import ROBUSTNESS_PNG, RobustnessStore, csv_rows
from mmexp.robustness.summary import curves, summarize
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
    raw = data.base if isinstance(data, CachedDataModule) else data
    check_perturbations(raw, [c for c in todo if not c.removes_only])
    if removing:
        results = _score(make_trainer, module, removing, data)
        _record(store, loggers, removing, results)
    for condition in (c for c in todo if not c.removes_only):
        with perturbed(raw, module, condition):
            results = _score(make_trainer, module, [condition], raw)
        _record(store, loggers, [condition], results)
    if store is None:
        return {}
    finish(store, load_baseline(grid.get("baseline")), loggers)
    return store.payload


def load_baseline(path: str | None) -> dict[str, Any] | None:
    """The baseline's ``robustness.json`` for effective robustness (a file or its run folder).

    Raises:
        FileNotFoundError: ``robustness.baseline`` names no such file.
    """
    if not path:
        return None
    file = Path(path)
    if file.is_dir():
        file = file / ROBUSTNESS_FILE
    if not file.is_file():
        raise FileNotFoundError(
            f"robustness.baseline={path}: no {ROBUSTNESS_FILE} there (run the baseline's "
            "robustness evaluation first)"
        )
    return json.loads(file.read_text())


def finish(
    store: RobustnessStore, baseline: Mapping[str, Any] | None, loggers: Sequence[Any]
) -> None:
    """Summarise the curves, plot them, and give the loggers the summaries, table and plot."""
    store.set_summary(summarize(store.payload, baseline))
    flat = flat_metrics(store.payload)
    summaries = {key: value for key, value in flat.items() if key.split("/")[1] in ("RR", "ER")}
    png = None
    if curves(store.payload):
        png = write_curve_png(store.payload, store.folder / ROBUSTNESS_PNG)
    columns, rows = csv_rows(store.payload)
    for logger in loggers:
        if summaries:
            logger.log_metrics(summaries)
            logger.save()
        # W&B's logger also takes the table and the plot; they copy what is on disk, so a
        # logger that cannot take them costs a warning, not the results.
        try:
            if hasattr(logger, "log_table"):
                logger.log_table(key="robustness/table", columns=columns, data=rows)
            if png is not None and hasattr(logger, "log_image"):
                logger.log_image(key="robustness/curves", images=[str(png)])
        except Exception as error:  # noqa: BLE001 - any logger failure
            log.warning("robustness: %s could not log the table or plot: %s", logger, error)


def check_perturbations(datamodule: Any, conditions: Sequence[Condition]) -> None:
    """Refuse, before any pass, a perturbation that cannot take its modality's values.

    The values are those of the first test sample as decoded (data modules that can hand
    out unprocessed samples: ``dataset(stage, processed=False)``).

    Raises:
        ValueError: A perturbation does not apply (named with the modality).
    """
    if not conditions or not hasattr(datamodule, "dataset"):
        return
    datamodule.setup("test")
    sample = datamodule.dataset("test", processed=False)[0]
    for condition in conditions:
        assert condition.modality is not None and condition.perturb is not None
        kind = value_kind(sample[condition.modality])
        try:
            check_applies(condition.perturb(), condition.modality, kind)
        except ValueError as error:
            raise ValueError(
                f"robustness.perturbations.{condition.modality}.{condition.perturbation}: {error}"
            ) from None


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
        metric_key(name, metric): value
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


def check_before_training(cfg: Any, run: AssembledRun) -> None:
    """Refuse a ``robustness`` grid that would fail after training, before training starts.

    Raises:
        ValueError: See :func:`~mmexp.robustness.conditions.build_grid` and
            :func:`check_perturbations`.
        TypeError: The objective cannot be scored with modalities removed.
    """
    grid = cfg.get("robustness")
    if not grid or not cfg.get("test"):
        return
    check_scorable(run.module)
    conditions = build_grid(grid, list(run.module.encoders))
    data = run.datamodule
    raw = data.base if isinstance(data, CachedDataModule) else data
    check_perturbations(raw, [c for c in conditions if not c.removes_only])


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
