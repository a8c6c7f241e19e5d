"""The local run record, ``results.json``: written whatever happens to remote tracking.

The record is created when the run starts (``status: running``) and rewritten atomically
when it ends (``completed`` or ``failed``), so a crash never leaves a half-written file and
a folder of runs can always be read back into a table.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mmexp.tracking.environment import environment

RESULTS_FILE = "results.json"


def write_json_atomic(path: Path, payload: Mapping[str, Any]) -> None:
    """Write JSON to a temporary file in the same folder, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(payload, file, indent=2, sort_keys=False)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def to_number(value: Any) -> float | int | None:
    """A JSON-safe number from a tensor or number (NaN and inf become ``None``)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    value = float(value)
    return value if math.isfinite(value) else None


def hydra_job_info() -> dict[str, Any]:
    """The config-group choices and command-line overrides of the current Hydra job.

    The choices (``fusion: concat``, ``data: shapes``...) are the axes of ablation tables;
    they are empty outside a Hydra app.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {"choices": {}, "overrides": []}
    runtime = HydraConfig.get()
    choices = {
        group: choice
        for group, choice in runtime.runtime.choices.items()
        if not group.startswith("hydra/") and choice is not None
    }
    return {"choices": choices, "overrides": list(runtime.overrides.task)}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecord:
    """Writes ``results.json`` in a run folder at start, success and failure.

    Args:
        output_dir: The run folder.
        task_name: Name of the job (``train``, ``eval``, ...).
        seed: Training seed.
        tags: Free-form tags of the run.
    """

    def __init__(
        self,
        output_dir: str | Path,
        task_name: str,
        seed: int | None,
        tags: list[str] | None = None,
    ) -> None:
        self.path = Path(output_dir) / RESULTS_FILE
        self.payload: dict[str, Any] = {
            "status": "running",
            "task_name": task_name,
            "seed": seed,
            "tags": list(tags or []),
            "started_at": _now(),
            "run_dir": str(Path(output_dir).resolve()),
            **hydra_job_info(),
            **environment(),
        }
        self._start = time.monotonic()

    def start(self) -> None:
        """Write the record with ``status: running``."""
        write_json_atomic(self.path, self.payload)

    def finish(self, metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        """Mark the run completed with its metrics and any extra fields (checkpoints, ...)."""
        return self._end("completed", metrics=metrics, **extra)

    def prune(self, metrics: Mapping[str, Any], epoch: int, **extra: Any) -> dict[str, Any]:
        """Mark the run stopped early by its Optuna pruner after ``epoch``, with its metrics.

        A pruned trial trained fewer epochs than its config says: a table of runs leaves
        it out rather than rank it beside runs that trained to the end.
        """
        return self._end("pruned", metrics=metrics, pruned_at_epoch=epoch, **extra)

    def fail(
        self, error: BaseException, metrics: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Mark the run failed, keeping the metrics reached so far."""
        return self._end("failed", metrics=metrics or {}, error=f"{type(error).__name__}: {error}")

    def interrupt(
        self, reason: str, checkpoint: str | Path, metrics: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """Mark the run stopped before its end with a checkpoint to resume from."""
        return self._end(
            "interrupted", metrics=metrics or {}, error=reason, resume_from=str(checkpoint)
        )

    def _end(self, status: str, metrics: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
        self.payload.update(
            status=status,
            finished_at=_now(),
            duration_s=round(time.monotonic() - self._start, 2),
            metrics={name: to_number(value) for name, value in sorted(metrics.items())},
            **extra,
        )
        write_json_atomic(self.path, self.payload)
        return self.payload
