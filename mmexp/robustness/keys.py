"""Flat metric names of robustness results, shared by tables, W&B logging and plots.

A ``robustness.json`` flattens into ``{key: number}`` with two kinds of keys:

- ``robust/<condition>/<metric>``: a metric under one condition, e.g.
  ``robust/clean/acc``, ``robust/subset:image/acc``, ``robust/missing:text@0.5/acc``,
  ``robust/noise:image/gaussian_noise@0.2/f1_macro`` (:func:`metric_key`);
- ``robust/RR/<curve>`` and ``robust/ER/<curve>``: relative and effective robustness of the
  primary metric over one curve, e.g. ``robust/RR/missing:text``,
  ``robust/ER/noise:image/gaussian_noise`` (:func:`summary_key`).

The condition is the name used in ``robustness.json`` verbatim, and the metric is the test
metric without its ``test/`` prefix. Logging these keys to a W&B run summary makes
``mmexp-table --wandb`` read them like local run folders.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from mmexp.robustness.summary import CLEAN, summarize

ROBUSTNESS_FILE = "robustness.json"
PREFIX = "robust"
#: Summary kinds: relative robustness and effective robustness.
RELATIVE = "RR"
EFFECTIVE = "ER"
SUMMARY_KINDS = {RELATIVE: "relative_robustness", EFFECTIVE: "effective_robustness"}


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def metric_key(condition_name: str, metric: str) -> str:
    """``robust/<condition>/<metric>``: ``metric_key("missing:text@0.5", "acc")``."""
    return f"{PREFIX}/{condition_name}/{metric}"


def summary_key(kind: str, curve: str) -> str:
    """``robust/<kind>/<curve>`` for ``kind`` ``RR`` or ``ER``.

    Raises:
        ValueError: ``kind`` is neither ``RR`` nor ``ER``.
    """
    if kind not in SUMMARY_KINDS:
        raise ValueError(f"summary kind must be one of {sorted(SUMMARY_KINDS)}, got {kind!r}")
    return f"{PREFIX}/{kind}/{curve}"


def flat_metrics(payload: Mapping[str, Any]) -> dict[str, float]:
    """Every finite number of a ``robustness.json`` under its flat key.

    The summaries come from the payload's ``summary`` block when it has one, which is
    where an effective robustness against a baseline is kept; otherwise the relative
    robustness is computed from the conditions.
    """
    flat: dict[str, float] = {}
    for name, condition in payload.get("conditions", {}).items():
        for metric, value in condition.get("metrics", {}).items():
            if _finite(value):
                flat[metric_key(name, metric)] = float(value)
    stored = payload.get("summary") or {}
    summary = stored if SUMMARY_KINDS[RELATIVE] in stored else summarize(payload)
    for kind, field in SUMMARY_KINDS.items():
        for curve, value in (summary.get(field) or {}).items():
            if _finite(value):
                flat[summary_key(kind, curve)] = float(value)
    return flat


def curve_points(metrics: Mapping[str, Any], curve: str, metric: str) -> dict[float, float]:
    """A curve's ``{level: value}`` read back from flat keys (local or W&B runs).

    Level 0 is ``robust/clean/<metric>`` when the curve has no ``@0`` condition.

    Args:
        metrics: Flat metrics of one run.
        curve: Curve name, ``missing:text`` or ``noise:image/gaussian_noise``.
        metric: Metric name without ``test/``.
    """
    head, tail = f"{PREFIX}/{curve}@", f"/{metric}"
    points: dict[float, float] = {}
    for key, value in metrics.items():
        if not (key.startswith(head) and key.endswith(tail)) or not _finite(value):
            continue
        try:
            level = float(key[len(head) : len(key) - len(tail)])
        except ValueError:
            continue
        points[level] = float(value)
    clean = metrics.get(metric_key(CLEAN, metric))
    if points and 0.0 not in points and _finite(clean):
        points[0.0] = float(clean)
    return dict(sorted(points.items()))
