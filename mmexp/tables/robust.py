"""Robustness columns for ``mmexp-table``, and effective robustness against a baseline row.

The keys are those of :mod:`mmexp.robustness.keys` (``robust/<condition>/<metric>``,
``robust/RR/<curve>``, ``robust/ER/<curve>``), read from each run's ``robustness.json``
or from a W&B run summary.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any

from mmexp.robustness.keys import (
    EFFECTIVE,
    PREFIX,
    SUMMARY_KINDS,
    metric_key,
    summary_key,
)
from mmexp.robustness.summary import summarize
from mmexp.tables.collect import RunResult

log = logging.getLogger(__name__)

TEST_PREFIX = "test/"


def condition_metric(metric: str) -> str:
    """The metric name inside ``robustness.json``: the test metric without ``test/``."""
    return metric.removeprefix(TEST_PREFIX)


def robustness_columns(
    runs: Sequence[RunResult], requests: Sequence[str], metric: str
) -> list[tuple[str, str]]:
    """``(label, key)`` of the table columns that ``requests`` name, in their order.

    A request is one of:

    - a condition, ``clean``, ``subset:image``, ``missing:text@0.5``: one column of
      ``robust/<condition>/<metric>``;
    - a curve, ``missing:text`` or ``noise:image/gaussian_noise``: one column per level
      the runs have, in increasing level;
    - a summary, ``RR/<curve>`` or ``ER/<curve>``: one column of relative or effective
      robustness of the primary metric.

    Args:
        runs: Collected runs (their flat metrics are searched).
        requests: What to put in the columns.
        metric: Metric name without ``test/`` (``acc``).

    Raises:
        ValueError: No run has a requested condition, curve or summary.
    """
    known = {key for run in runs for key in run.metrics}
    columns: list[tuple[str, str]] = []
    for request in requests:
        kind = request.split("/", 1)[0]
        if kind in SUMMARY_KINDS and "/" in request:
            key = summary_key(kind, request.split("/", 1)[1])
            found = [(request, key)] if key in known else []
        elif metric_key(request, metric) in known:
            found = [(request, metric_key(request, metric))]
        else:
            found = _curve_columns(known, request, metric)
        if not found:
            raise ValueError(
                f"no run has robustness results for {request!r} ({metric}); "
                f"known conditions: {_conditions(known, metric)}"
            )
        columns.extend(found)
    return columns


def _curve_columns(known: set[str], curve: str, metric: str) -> list[tuple[str, str]]:
    head, tail = f"{PREFIX}/{curve}@", f"/{metric}"
    keys = [key for key in known if key.startswith(head) and key.endswith(tail)]
    levels = {key: key[len(head) : len(key) - len(tail)] for key in keys}
    ordered = sorted(keys, key=lambda key: _as_float(levels[key]))
    return [(f"{curve}@{levels[key]}", key) for key in ordered]


def _as_float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("inf")


def _conditions(known: set[str], metric: str) -> list[str]:
    tail = f"/{metric}"
    names = {
        key[len(PREFIX) + 1 : len(key) - len(tail)]
        for key in known
        if key.startswith(f"{PREFIX}/") and key.endswith(tail)
    }
    return sorted(names)


def with_effective_robustness(
    runs: Sequence[RunResult],
    row_axis: str,
    baseline_row: Any,
    pair_axes: Sequence[str] = ("seed",),
) -> list[RunResult]:
    """Runs with ``robust/ER/<curve>`` against the baseline row's run of the same pair.

    Each run with a ``robustness.json`` is summarised against the run whose ``row_axis``
    value is ``baseline_row`` and whose ``pair_axes`` values (seed, column axis) equal its
    own, on the primary metric of its ``robustness.json`` (see
    :func:`mmexp.robustness.summary.effective_robustness`; the baseline's own effective
    robustness is 0). The values replace any stored in ``robustness.json``; runs without
    a completed baseline run to pair with keep their metrics.

    Raises:
        ValueError: No completed run of the baseline row has a ``robustness.json``, or a
            run's metric direction (``mode``) differs from its baseline's.
    """
    baselines = {
        _pair(run, pair_axes): run
        for run in runs
        if str(run.axis(row_axis)) == str(baseline_row)
        and run.robustness
        and run.status == "completed"
    }
    if not baselines:
        raise ValueError(f"no completed run of {row_axis}={baseline_row!r} has a robustness.json")
    result, unpaired = [], 0
    for run in runs:
        reference = baselines.get(_pair(run, pair_axes))
        if not run.robustness or reference is None:
            unpaired += bool(run.robustness)
            result.append(run)
            continue
        effective = summarize(run.robustness, reference.robustness)["effective_robustness"]
        metrics = dict(run.metrics)
        metrics.update({summary_key(EFFECTIVE, c): value for c, value in effective.items()})
        result.append(dataclasses.replace(run, metrics=metrics))
    if unpaired:
        log.warning("%d runs have no %s=%s run to pair with", unpaired, row_axis, baseline_row)
    return result


def _pair(run: RunResult, axes: Sequence[str]) -> tuple[str, ...]:
    return tuple(str(run.axis(axis)) for axis in axes)
