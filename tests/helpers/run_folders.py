"""Run folders written by hand: what ``mmexp-table`` and ``mmexp-eval`` read from a run."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml


def write_run_folder(
    folder: Path,
    fusion: str,
    seed: int,
    metrics: Mapping[str, float],
    config: Mapping[str, Any],
    status: str = "completed",
) -> Path:
    """``results.json`` (status, seed, the fusion choice, metrics) and ``config.yaml``.

    Args:
        folder: The run folder, created with its parents.
        fusion: The ``fusion`` group choice recorded for the run.
        seed: The run's seed (also written into the config).
        metrics: The final metrics.
        config: The rest of the resolved config (``data`` and so on).
        status: ``completed``, ``failed``, ``pruned`` ...
    """
    folder.mkdir(parents=True)
    results = {
        "status": status,
        "task_name": "train",
        "seed": seed,
        "choices": {"fusion": fusion, "data": "shapes"},
        "metrics": dict(metrics),
    }
    (folder / "results.json").write_text(json.dumps(results))
    (folder / "config.yaml").write_text(yaml.safe_dump({"seed": seed, **config}))
    return folder
