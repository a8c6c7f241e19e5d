"""``mmexp-eval ckpt_path=<folder>``: evaluate every training run below a folder.

A multirun folder (or one run folder) holds runs with a ``results.json`` and a
``config.yaml``; each completed one is evaluated from its best checkpoint (else its last),
in order, with the same eval config: robustness grids and analyses then land in each run's
own folder, where ``mmexp-table`` reads them. Each evaluation keeps its own record in a
subfolder of the eval folder named like the run's folder; a run that fails to evaluate is
recorded as failed there and the others go on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

from mmexp.tracking.run_record import RESULTS_FILE

log = logging.getLogger(__name__)


def run_checkpoints(folder: Path) -> list[tuple[Path, Path]]:
    """``(run folder, checkpoint)`` of every completed training run below ``folder``.

    The checkpoint is the run's best (``results.json`` ``best_checkpoint``), else its last.
    Eval folders (no ``config.yaml``) and runs that did not complete are left out.

    Raises:
        FileNotFoundError: No completed training run with a checkpoint below ``folder``.
    """
    found = []
    for results in sorted(folder.rglob(RESULTS_FILE)):
        run = results.parent
        if not (run / "config.yaml").is_file():
            continue  # an evaluation's own record
        payload = json.loads(results.read_text())
        if payload.get("status") != "completed":
            log.info("mmexp-eval: %s is %s, left out", run, payload.get("status"))
            continue
        candidates = [payload.get("best_checkpoint"), payload.get("last_checkpoint")]
        candidates.append(str(run / "checkpoints" / "last.ckpt"))
        checkpoint = next((Path(c) for c in candidates if c and Path(c).is_file()), None)
        if checkpoint is None:
            log.warning("mmexp-eval: %s has no checkpoint, left out", run)
            continue
        found.append((run, checkpoint))
    if not found:
        raise FileNotFoundError(
            f"ckpt_path={folder}: no completed training run with a checkpoint below it"
        )
    return found


def evaluate_each(
    cfg: DictConfig, evaluate: Callable[[DictConfig], dict[str, Any]]
) -> list[dict[str, Any]]:
    """Evaluate every run below the folder ``cfg.ckpt_path`` (see the module docstring).

    Returns:
        The eval record of each run, in order (a failed one has ``status: failed``).
    """
    folder = Path(cfg.ckpt_path)
    runs = run_checkpoints(folder)
    output_dir = Path(cfg.paths.output_dir)
    records = []
    for position, (run, checkpoint) in enumerate(runs, start=1):
        log.info("mmexp-eval %d/%d: %s", position, len(runs), checkpoint)
        one = cfg.copy()
        with open_dict(one):
            one.ckpt_path = str(checkpoint)
            name = run.relative_to(folder).as_posix().replace("/", "_") or run.name
            one.paths.output_dir = str(output_dir / name)
        try:
            records.append(evaluate(one))
        except Exception as error:  # recorded by evaluate; the other runs go on
            log.error("mmexp-eval: %s failed: %s", checkpoint, error)
            records.append({"status": "failed", "checkpoint": str(checkpoint)})
    failed = sum(1 for record in records if record.get("status") == "failed")
    log.info("mmexp-eval: %d runs evaluated, %d failed", len(records), failed)
    return records
