"""Flat metric names of analysis results, shared by tables, W&B logging and plots.

An ``analysis.json`` flattens into ``{key: number}``: every finite number below
``components`` under ``analysis/<component>/<path>`` (:func:`flat_metrics`), e.g.
``analysis/contribution/shapley/text``, ``analysis/contribution/subsets/image/acc``,
``analysis/emap/gap``, ``analysis/pid/model/synergy``, ``analysis/pid/data/unique_image``.
The same keys go to the loggers when the analyses run, so ``mmexp-table --wandb`` reads them
like local run folders. This module imports nothing heavy, for ``mmexp-table``.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ANALYSIS_FILE = "analysis.json"
PREFIX = "analysis"
#: The atoms of a decomposition under ``analysis/pid/<data|model>/``, in stacking order
#: (``unique_<modality>`` between redundancy and synergy).
PID_TARGETS = ("data", "model")
UNIQUE = "unique_"


def flat_numbers(node: Any, prefix: str) -> dict[str, float]:
    """Every finite number below ``node`` under ``prefix/<key>/...`` (for tables and W&B)."""
    if isinstance(node, bool):
        return {}
    if isinstance(node, int | float):
        return {prefix: float(node)} if math.isfinite(node) else {}
    if isinstance(node, Mapping):
        flat: dict[str, float] = {}
        for key, value in node.items():
            flat.update(flat_numbers(value, f"{prefix}/{key}"))
        return flat
    return {}


def flat_metrics(payload: Mapping[str, Any]) -> dict[str, float]:
    """The ``analysis/...`` numbers of an ``analysis.json`` payload."""
    return flat_numbers(payload.get("components") or {}, PREFIX)


def read_analysis(path: Path) -> dict[str, Any] | None:
    """The parsed ``analysis.json``, or ``None`` when absent or unreadable."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        log.warning("analysis: unreadable %s (%s)", path, error)
        return None


def pid_key(target: str, atom: str) -> str:
    """``analysis/pid/<target>/<atom>``: ``pid_key("model", "synergy")``."""
    return f"{PREFIX}/pid/{target}/{atom}"


def atom_order(atoms: list[str]) -> list[str]:
    """Redundancy, the unique atoms (sorted), synergy: the order of a stacked bar."""
    unique = sorted(a for a in atoms if a.startswith(UNIQUE))
    return [a for a in ("redundancy", *unique, "synergy") if a in atoms]
