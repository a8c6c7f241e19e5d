"""Robustness grid speed: the one-pass probe against one test pass per condition.

A checkpoint (``bench.robustness.ckpt_path``, or one trained here for
``bench.robustness.epochs`` epochs on the composed config) is scored under a grid of
conditions that remove modalities (``bench.robustness.grid``, default ``missing``: every
subset, each modality at each missing rate) twice in one process:

* **one pass**: :func:`~mmexp.robustness.evaluate.evaluate_robustness`, what ``mmexp-eval
  robustness=<grid>`` runs: every condition scored in one test pass from one encoding of
  each batch, ``robustness.json`` with its summaries and curve plot written (to a
  temporary folder);
* **per condition**, the baseline: one ``trainer.test`` pass per condition, a
  :class:`~mmexp.robustness.probe.ConditionProbe` given that condition alone, so that every
  modality of every batch is encoded again for each condition.

Both score the same module on the same batches, after one untimed pass that reads the test
split; the metrics of every condition are compared (``max_abs_difference``), which is what
makes the ratio a measure of the saved encoding alone.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from mmexp import CONFIG_DIR
from mmexp.assemble import assemble
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.resolve import resolve_run_config
from mmexp.robustness.conditions import build_grid
from mmexp.robustness.evaluate import complete_test_split, evaluate_robustness
from mmexp.robustness.probe import ConditionProbe
from mmexp.utils.instantiate import build_test_trainer


def grid_node(name: str) -> DictConfig:
    """The ``robustness`` config of ``conf/robustness/<name>.yaml``, its defaults merged.

    Raises:
        ValueError: No such grid (listing the known ones).
    """
    path = Path(CONFIG_DIR) / "robustness" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise ValueError(f"bench.robustness.grid: unknown grid {name!r}; choose from {known}")
    node: Any = OmegaConf.load(path)
    defaults = [d for d in node.pop("defaults", []) if d != "_self_"]
    return OmegaConf.merge(*(grid_node(str(d)) for d in defaults), node)  # type: ignore[return-value]


def train_checkpoint(cfg: DictConfig, epochs: int | None, folder: Path) -> tuple[str, float]:
    """Train the composed config (no test, no robustness) into ``folder``; its checkpoint."""
    from mmexp.train import train  # the entry point's own training function

    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.paths.output_dir = str(folder)
        job.logger = OmegaConf.load(Path(CONFIG_DIR) / "logger" / "csv.yaml")
        job.test = False
        job.robustness = None
        if epochs is not None:
            job.trainer.max_epochs = int(epochs)
            job.trainer.min_epochs = min(int(job.trainer.get("min_epochs") or 1), int(epochs))
    start = time.perf_counter()
    result = train(job)
    checkpoint = result.get("best_checkpoint") or result.get("last_checkpoint")
    if not checkpoint:
        raise RuntimeError(f"bench.robustness: training in {folder} left no checkpoint")
    return str(checkpoint), time.perf_counter() - start


def robustness_speed(cfg: DictConfig, options: DictConfig) -> dict[str, Any]:
    """Score a checkpoint's grid in one pass and with one pass per condition; times, ratio.

    Args:
        cfg: The composed config: what a checkpoint is trained from (data, model,
            trainer), and the trainer the test passes run on.
        options: ``bench.robustness``: ``ckpt_path`` (null: train one), ``epochs`` (of
            that training; null: ``trainer.max_epochs``), ``grid`` (a name in
            ``conf/robustness/``; a composed ``robustness=<grid>`` wins).

    Raises:
        ValueError: An unknown grid, or one with noise conditions (each takes a pass of its
            own either way: nothing to compare).
    """
    grid = cfg.get("robustness") or grid_node(str(options.get("grid") or "missing"))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        trained = None
        checkpoint = options.get("ckpt_path")
        if not checkpoint:
            checkpoint, seconds = train_checkpoint(cfg, options.get("epochs"), root / "train")
            trained = {"epochs": int(options.get("epochs") or cfg.trainer.max_epochs)}
            trained["seconds"] = seconds
        evaluated = copy.deepcopy(cfg)
        with open_dict(evaluated):
            evaluated.ckpt_path = str(checkpoint)
        run = assemble(resolve_run_config(evaluated, "eval"), "eval")
        module: Any = run.module
        modalities = list(module.encoders)
        conditions = build_grid(grid, modalities)
        noisy = [c.name for c in conditions if not c.removes_only]
        if noisy:
            raise ValueError(
                f"bench.robustness: grid {grid.get('name')!r} has noise conditions "
                f"({noisy[0]}, ...), which take a pass each either way; time a grid that "
                "removes modalities (missing, missing_cases)"
            )
        data = run.datamodule
        raw = data.base if isinstance(data, CachedDataModule) else data

        def make_trainer() -> Any:
            return build_test_trainer(cfg)

        def score_alone(condition: Any) -> dict[str, dict[str, float]]:
            probe = ConditionProbe(module, [condition])
            with complete_test_split(data):
                make_trainer().test(probe, datamodule=data, verbose=False)
            return probe.results

        # Untimed: the test split read and a first pass run before either clock starts.
        score_alone(conditions[0])

        start = time.perf_counter()
        payload = evaluate_robustness(run, grid, root / "one_pass", str(checkpoint), make_trainer)
        one_pass = time.perf_counter() - start

        separate: dict[str, dict[str, float]] = {}
        start = time.perf_counter()
        for condition in conditions:
            separate.update(score_alone(condition))
        per_condition = time.perf_counter() - start

    together = {name: entry["metrics"] for name, entry in payload["conditions"].items()}
    metrics = {
        name: {"one_pass": together[name], "per_condition": separate[name]}
        for name in (c.name for c in conditions)
    }
    difference = max(
        abs(value - pair["per_condition"][key])
        for pair in metrics.values()
        for key, value in pair["one_pass"].items()
    )
    return {
        "grid": str(grid.get("name", "custom")),
        "checkpoint": None if trained else str(checkpoint),
        "trained": trained,
        "modalities": modalities,
        "test_samples": len(raw.dataset("test")) if hasattr(raw, "dataset") else None,
        "conditions": len(conditions),
        "metric": payload["metric"],
        "one_pass": {"seconds": one_pass, "passes": 1},
        "per_condition": {"seconds": per_condition, "passes": len(conditions)},
        "speedup": per_condition / one_pass,
        "max_abs_difference": difference,
        "metrics": metrics,
    }
