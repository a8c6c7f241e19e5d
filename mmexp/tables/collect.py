"""Collect run records: local run folders, or the runs of a W&B project.

Every run becomes a flat record: its status, its metrics and the value of every config axis
(``fusion``, ``data.task``, ``seed``...), so that tables can be grouped on any of them. A
``robustness.json`` beside a run's ``results.json`` adds its results to the metrics under
the flat ``robust/...`` keys of :mod:`mmexp.robustness.keys`, an ``analysis.json`` under the
``analysis/...`` keys of :mod:`mmexp.analysis.keys`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from mmexp.analysis.keys import ANALYSIS_FILE
from mmexp.analysis.keys import flat_metrics as flat_analysis
from mmexp.robustness.keys import ROBUSTNESS_FILE, flat_metrics
from mmexp.search.pruning import PRUNED_KEY
from mmexp.tracking.run_record import RESULTS_FILE

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """One run as the tables see it.

    Attributes:
        status: ``completed``, ``failed``, ``running``, ``interrupted`` or ``pruned`` (an
            Optuna trial its pruner stopped early).
        metrics: Final metrics, ``{"test/acc": 0.93, ...}``.
        config: The resolved config (nested mapping).
        choices: Config-group choices (``{"fusion": "concat", ...}``).
        source: Where the run was read from (folder or W&B path).
        fusion_cost: Parameters of fusion and head and the fusion's FLOPs per sample
            (``results.json`` ``fusion_cost``), empty when the run has no fusion.
        robustness: The run's ``robustness.json``, empty when it has none (W&B runs too).
        analysis: The run's ``analysis.json``, empty when it has none (W&B runs too).
    """

    status: str
    metrics: dict[str, float | None]
    config: dict[str, Any]
    choices: dict[str, str] = field(default_factory=dict)
    source: str = ""
    fusion_cost: dict[str, int] = field(default_factory=dict)
    robustness: dict[str, Any] = field(default_factory=dict)
    analysis: dict[str, Any] = field(default_factory=dict)

    def axis(self, name: str) -> Any:
        """Value of an axis: a config-group choice (``fusion``) or a dotted config key.

        Several axes joined by commas (``data.task,fusion``) make one axis whose values
        are theirs joined by `` / `` (``synergy / concat``); ``None`` if one is missing.
        """
        if "," in name:
            parts = [self.axis(part.strip()) for part in name.split(",")]
            return None if any(p is None for p in parts) else " / ".join(map(str, parts))
        if name in self.choices:
            return self.choices[name]
        node: Any = self.config
        for part in name.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return None
            node = node[part]
        if isinstance(node, list):
            return "+".join(str(item) for item in node)
        return node


def read_run_folder(folder: Path) -> RunResult:
    """Read ``results.json``, ``config.yaml`` and any ``robustness.json``, ``analysis.json``.

    The robustness results join the metrics under their flat keys
    (``robust/missing:text@0.5/acc``, ``robust/RR/missing:text``...), the analyses under
    theirs (``analysis/emap/gap``, ``analysis/pid/model/synergy``...); an unreadable file is
    skipped with a warning and leaves the run's own metrics.
    """
    payload = json.loads((folder / RESULTS_FILE).read_text())
    config_path = folder / "config.yaml"
    config = OmegaConf.to_container(OmegaConf.load(config_path)) if config_path.is_file() else {}
    robustness, robust_metrics = read_robustness(folder)
    analysis, analysis_metrics = read_analysis_file(folder)
    return RunResult(
        status=payload.get("status", "unknown"),
        metrics={**payload.get("metrics", {}), **robust_metrics, **analysis_metrics},
        config=config,  # type: ignore[arg-type]
        choices=payload.get("choices", {}),
        source=str(folder),
        fusion_cost=payload.get("fusion_cost") or {},
        robustness=robustness,
        analysis=analysis,
    )


def read_analysis_file(folder: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The ``analysis.json`` of a run folder and its flat metrics; empty when absent.

    An unreadable or malformed file is skipped with a warning.
    """
    path = folder / ANALYSIS_FILE
    if not path.is_file():
        return {}, {}
    try:
        payload = json.loads(path.read_text())
        return payload, flat_analysis(payload)
    except (OSError, ValueError, TypeError, AttributeError) as error:
        log.warning("skipping unreadable %s: %s", path, error)
        return {}, {}


def read_robustness(folder: Path) -> tuple[dict[str, Any], dict[str, float]]:
    """The ``robustness.json`` of a run folder and its flat metrics; empty when absent.

    An unreadable or malformed file is skipped with a warning.
    """
    path = folder / ROBUSTNESS_FILE
    if not path.is_file():
        return {}, {}
    try:
        payload = json.loads(path.read_text())
        return payload, flat_metrics(payload)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        log.warning("skipping unreadable %s: %s", path, error)
        return {}, {}


def without_pruned(runs: Sequence[RunResult]) -> tuple[list[RunResult], int]:
    """The runs that are not pruned Optuna trials, and how many were.

    A pruned trial trained fewer epochs than its config says; in a table beside the runs
    that trained to the end it would count as neither a result nor a failure.
    """
    kept = [run for run in runs if run.status != "pruned"]
    return kept, len(runs) - len(kept)


def collect_local(roots: Iterable[str | Path]) -> list[RunResult]:
    """All runs below ``roots`` (any folder holding a ``results.json``).

    Raises:
        FileNotFoundError: A root does not exist or holds no run.
    """
    runs = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"runs folder not found: {root}")
        found = sorted(path.parent for path in root.rglob(RESULTS_FILE))
        if not found:
            raise FileNotFoundError(f"no {RESULTS_FILE} below {root}: is it a folder of runs?")
        for folder in found:
            try:
                runs.append(read_run_folder(folder))
            except (OSError, ValueError) as error:
                log.warning("skipping unreadable run %s: %s", folder, error)
    return runs


def collect_wandb(path: str, group: str | None = None, api: Any = None) -> list[RunResult]:
    """The runs of a W&B project ``entity/project`` (optionally one group), via the API.

    Every number of a run's summary becomes a metric, so robustness results logged under
    the flat keys of :mod:`mmexp.robustness.keys` (``robust/missing:text@0.5/acc``,
    ``robust/RR/missing:text``) and analyses under those of :mod:`mmexp.analysis.keys`
    (``analysis/emap/gap``) read like those of local run folders.

    Args:
        path: ``entity/project``.
        group: Only runs of this group (study).
        api: A ``wandb.Api`` instance; created when ``None`` (needs a key and network).
    """
    if api is None:
        import wandb

        api = wandb.Api()
    filters = {"group": group} if group else {}
    states = {"finished": "completed", "crashed": "failed", "failed": "failed"}
    runs = []
    for run in api.runs(path, filters=filters):
        config = {k: v for k, v in dict(run.config).items() if not k.startswith("_")}
        summary = {k: v for k, v in dict(run.summary).items() if isinstance(v, int | float)}
        status = states.get(run.state, run.state)
        if status == "completed" and PRUNED_KEY in summary:  # the trial's pruner stopped it
            status = "pruned"
        runs.append(
            RunResult(
                status=status,
                metrics=summary,
                config=config,
                choices=dict(config.get("run", {}).get("choices", {})),
                source=f"wandb:{path}/{run.id}",
                fusion_cost=dict(config.get("run", {}).get("fusion_cost") or {}),
            )
        )
    return runs
