"""Run the zero-shot mode of ``mmexp-eval zeroshot=<mode>`` and keep it in ``zeroshot.json``.

The file holds one entry per mode (``classify``, ``retrieval``) of one checkpoint, so both
modes of a checkpoint land side by side; a file of another checkpoint is kept as
``zeroshot.previous-<n>.json``. Classification also writes its per-class accuracies to
``zeroshot_per_class.csv``. The flat ``zeroshot/<set>/<metric>`` numbers go to the loggers
and the eval record.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from pytorch_lightning.utilities import rank_zero_only

from mmexp.builders import CONSUMED
from mmexp.tracking.run_record import write_json_atomic

log = logging.getLogger(__name__)

ZEROSHOT_FILE = "zeroshot.json"
PER_CLASS_FILE = "zeroshot_per_class.csv"
PREFIX = "zeroshot"
FORMAT = 1


def configured_mode(cfg: Any, group: str = PREFIX) -> Any | None:
    """The mode ``cfg.<group>`` selects, built (its settings checked); ``None`` without one.

    ``group`` is ``zeroshot`` (``classify``, ``retrieval``) or ``wiseft`` (``grid``).
    """
    node = cfg.get(group)
    if not node:
        return None
    if "_target_" not in node:
        choices = "classify|retrieval" if group == PREFIX else "grid"
        raise ValueError(
            f"{group}.{sorted(node)[0]} is set but no {group} mode is chosen; add {group}={choices}"
        )
    settings = {key: value for key, value in node.items() if key not in CONSUMED[group]}
    # Built by calling the partial, so its own errors surface as they are (not wrapped by Hydra).
    return instantiate(settings, _convert_="all", _partial_=True)()


def _set_aside(path: Path) -> Path:
    number = 1
    while (target := path.with_name(f"zeroshot.previous-{number}.json")).exists():
        number += 1
    path.rename(target)
    return target


def open_results(folder: Path, checkpoint: str | None) -> dict[str, Any]:
    """The payload to add a mode to: the file's when it is of the same checkpoint, else new."""
    path = folder / ZEROSHOT_FILE
    fresh: dict[str, Any] = {"format": FORMAT, "checkpoint": checkpoint, "modes": {}}
    if not path.is_file():
        return fresh
    try:
        existing = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        existing = {}
    if checkpoint is not None and existing.get("checkpoint") == checkpoint:
        return {**fresh, "modes": dict(existing.get("modes") or {})}
    log.warning("zeroshot: %s is of another model; kept as %s", path, _set_aside(path))
    return fresh


def write_per_class(path: Path, result: Mapping[str, Any]) -> None:
    """One row per template set and class: index, class, prompt name, samples, accuracy."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["set", "index", "class", "name", "samples", "acc"])
        for set_name, entry in result["sets"].items():
            classes = zip(result["labels"], result["class_names"], strict=True)
            for index, (label, name) in enumerate(classes):
                scored = entry["per_class"][label]
                acc = "" if scored["acc"] is None else scored["acc"]
                writer.writerow([set_name, index, label, name, scored["samples"], acc])


def run_zeroshot(
    mode: Any,
    run: Any,
    folder: Path,
    checkpoint: str | None,
    test: Callable[[], Mapping[str, Any]],
    loggers: Sequence[Any] = (),
    device: str = "cpu",
) -> tuple[dict[str, Any], dict[str, float]]:
    """Run ``mode`` on the assembled run and write its entry into ``folder/zeroshot.json``.

    Args:
        mode: A zero-shot mode (``check``, ``run``, ``name``), already checked on the run.
        run: The assembled run.
        folder: Where ``zeroshot.json`` goes.
        checkpoint: The evaluated checkpoint; ``None`` for a model built from config.
        test: Runs the eval's test of the module and returns its metrics.
        loggers: Loggers receiving the flat numbers.
        device: Where the towers run.

    Returns:
        What the eval record keeps (file, mode) and the flat ``zeroshot/...`` metrics.
    """
    result = mode.run(run, test, device)
    flat = {
        f"{PREFIX}/{key}": float(value)
        for key, value in result["metrics"].items()
        if value is not None
    }
    record: dict[str, Any] = {"file": str(folder / ZEROSHOT_FILE), "mode": mode.name}
    if rank_zero_only.rank != 0:
        return record, flat
    payload = open_results(folder, checkpoint)
    payload["modes"][mode.name] = result
    write_json_atomic(folder / ZEROSHOT_FILE, payload)
    if "sets" in result:
        write_per_class(folder / PER_CLASS_FILE, result)
        record["per_class"] = str(folder / PER_CLASS_FILE)
    for logger in loggers:
        logger.log_metrics(flat)
        logger.save()
    return record, flat
