"""Aggregate runs into table cells: mean, std, count, interval and tests over seeds."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from mmexp.tables import statistics as cell_stats
from mmexp.tables.collect import RunResult

#: Seeds whose values are this far apart (metric units) may be flagged as split.
SPLIT_GAP = 0.25


@dataclass
class Cell:
    """One table cell: the metric of the completed runs of a (row, column) pair.

    Attributes:
        values: Metric of each completed run, keyed by seed.
        failed: Number of runs of this cell that failed (or lack the metric).
        p_value: Paired t-test p-value against the baseline row, when computed.
        p_adjusted: ``p_value`` Holm-corrected over the rows tested in this column.
        best: Whether this cell has the best mean of its column.
        interval: Confidence interval of the mean, when one was asked for.
        split: The seeds fall into two distant groups
            (:func:`~mmexp.tables.statistics.seeds_split`).
    """

    values: dict[Any, float] = field(default_factory=dict)
    failed: int = 0
    p_value: float | None = None
    p_adjusted: float | None = None
    best: bool = False
    interval: tuple[float, float] | None = None
    split: bool = False

    @property
    def n(self) -> int:
        """Number of completed runs."""
        return len(self.values)

    @property
    def mean(self) -> float:
        """Mean over seeds (NaN when empty)."""
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for one run, NaN when empty)."""
        if not self.values:
            return math.nan
        return float(np.std(list(self.values.values()), ddof=1)) if self.n > 1 else 0.0


@dataclass
class Table:
    """Cells indexed by row and column values, in display order."""

    rows: list[Any]
    columns: list[Any]
    cells: dict[tuple[Any, Any], Cell]
    metric: str
    row_axis: str
    column_axis: str
    baseline: Any = None
    #: Trainable parameters of fusion + head of each row's runs (distinct values, sorted).
    row_params: dict[Any, list[int]] = field(default_factory=dict)
    #: Metric key of each column when the columns are different metrics.
    column_metrics: dict[Any, str] = field(default_factory=dict)
    #: How the cells' intervals were computed (``t``, ``bootstrap``), ``None``: not at all.
    interval: str | None = None

    def cell(self, row: Any, column: Any) -> Cell:
        """The cell at ``(row, column)``; an empty cell when no run had that pair."""
        return self.cells.get((row, column), Cell())


def build_table(
    runs: Sequence[RunResult],
    metric: str,
    row_axis: str,
    column_axis: str | None = None,
    seed_axis: str = "seed",
    mode: str = "max",
    baseline: Any = None,
    interval: str | None = None,
    split_gap: float = SPLIT_GAP,
) -> Table:
    """Group runs by (row, column) and summarise ``metric`` over seeds.

    Args:
        runs: Collected runs.
        metric: Metric to tabulate, e.g. ``test/acc``.
        row_axis: Axis whose values are the rows (``fusion``).
        column_axis: Axis whose values are the columns (``data.task``); ``None`` for one
            column named after the metric.
        seed_axis: Axis that identifies repetitions; runs are paired on it for tests.
        mode: ``max`` or ``min``: which direction is best.
        baseline: Row value to test every other row against (paired t-test over seeds,
            Holm-corrected over the rows of each column).
        interval: ``t`` or ``bootstrap``: a 95 % confidence interval of each cell's mean.
        split_gap: Smallest gap between groups of seeds that flags a cell as split.

    Raises:
        ValueError: No run has the row axis, the baseline is not a row, or the interval
            method is unknown.
    """
    _check_mode(mode)
    cells: dict[tuple[Any, Any], Cell] = defaultdict(Cell)
    params: dict[Any, set[int]] = defaultdict(set)
    for run in runs:
        column = run.axis(column_axis) if column_axis else metric
        _add_run(cells, params, run, row_axis, column, metric, seed_axis)
    columns = sorted({key[1] for key in cells}, key=str)
    table = _finish(cells, params, columns, metric, row_axis, column_axis or "", mode, baseline)
    return _annotate(table, interval, split_gap)


def build_columns_table(
    runs: Sequence[RunResult],
    columns: Sequence[tuple[str, str]],
    row_axis: str,
    seed_axis: str = "seed",
    mode: str = "max",
    baseline: Any = None,
    metric: str = "",
    absent_is_failure: bool = True,
    interval: str | None = None,
    split_gap: float = SPLIT_GAP,
) -> Table:
    """One column per metric key, side by side: each cell is a metric over seeds.

    Used for robustness tables, where every column is a condition
    (``robust/missing:text@0.5/acc``) or a summary (``robust/RR/missing:text``), and
    analysis tables (``analysis/emap/gap``, ``analysis/pid/model/unique_text``).

    Args:
        runs: Collected runs.
        columns: ``(label, metric key)`` of each column, in display order.
        row_axis: Axis whose values are the rows (``fusion``).
        seed_axis: Axis that identifies repetitions; runs are paired on it for tests.
        mode: ``max`` or ``min``: which direction is best in every column.
        baseline: Row value to test every other row against (paired t-test over seeds).
        metric: What the columns measure, for the legend.
        absent_is_failure: Count a completed run that lacks a column's key as failed in
            that cell; ``False`` leaves it out (a PID atom of a modality the run does not
            have, an analysis the run did not run).
        interval: See :func:`build_table`.
        split_gap: See :func:`build_table`.

    Raises:
        ValueError: No run has the row axis, the baseline is not a row, or the interval
            method is unknown.
    """
    _check_mode(mode)
    cells: dict[tuple[Any, Any], Cell] = defaultdict(Cell)
    params: dict[Any, set[int]] = defaultdict(set)
    for run in runs:
        for label, key in columns:
            if not absent_is_failure and run.status == "completed" and key not in run.metrics:
                continue
            _add_run(cells, params, run, row_axis, label, key, seed_axis)
    table = _finish(
        cells, params, [label for label, _ in columns], metric, row_axis, "", mode, baseline
    )
    table.column_metrics = dict(columns)
    return _annotate(table, interval, split_gap)


def _annotate(table: Table, method: str | None, split_gap: float) -> Table:
    """Add each cell's interval (when asked for) and split-seeds flag."""
    table.interval = method
    for cell in table.cells.values():
        values = list(cell.values.values())
        if method is not None:
            cell.interval = cell_stats.interval(values, method)
        cell.split = cell_stats.seeds_split(values, split_gap)
    return table


def _check_mode(mode: str) -> None:
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")


def _add_run(
    cells: dict[tuple[Any, Any], Cell],
    params: dict[Any, set[int]],
    run: RunResult,
    row_axis: str,
    column: Any,
    metric: str,
    seed_axis: str,
) -> None:
    row = run.axis(row_axis)
    if row is None:
        return
    if run.fusion_cost.get("trainable_params") is not None:
        params[row].add(int(run.fusion_cost["trainable_params"]))
    cell = cells[(row, column)]
    value = run.metrics.get(metric)
    if run.status != "completed" or value is None or not math.isfinite(value):
        cell.failed += 1
        return
    seed = run.axis(seed_axis)
    if seed in cell.values:
        # two runs in one cell with one seed: an axis that varies is missing from the
        # table, and keeping either value would hide the other
        raise ValueError(
            f"two completed runs share {row_axis}={row!r}, column {column!r} and "
            f"{seed_axis}={seed!r} (one is {run.source or 'a run'}): give the axis that "
            "tells them apart to --rows or --cols (several joined by commas), or read "
            "one study at a time"
        )
    cell.values[seed] = float(value)


def _finish(
    cells: dict[tuple[Any, Any], Cell],
    params: dict[Any, set[int]],
    columns: list[Any],
    metric: str,
    row_axis: str,
    column_axis: str,
    mode: str,
    baseline: Any,
) -> Table:
    if not cells:
        raise ValueError(f"no run has a value for the row axis {row_axis!r}")
    rows = sorted({key[0] for key in cells}, key=str)
    if baseline is not None and str(baseline) not in {str(r) for r in rows}:
        raise ValueError(f"baseline {baseline!r} is not a value of {row_axis!r}: {rows}")
    table = Table(
        rows,
        columns,
        dict(cells),
        metric,
        row_axis,
        column_axis,
        baseline,
        row_params={row: sorted(values) for row, values in params.items()},
    )
    _mark_best(table, mode)
    if baseline is not None:
        _paired_tests(table, next(r for r in rows if str(r) == str(baseline)))
    return table


def _mark_best(table: Table, mode: str) -> None:
    for column in table.columns:
        scored = [(table.cell(r, column).mean, r) for r in table.rows if table.cell(r, column).n]
        if not scored:
            continue
        best = max(m for m, _ in scored) if mode == "max" else min(m for m, _ in scored)
        for mean, row in scored:
            table.cells[(row, column)].best = mean == best


def _paired_tests(table: Table, baseline_row: Any) -> None:
    for column in table.columns:
        reference = table.cell(baseline_row, column).values
        # One family per column: every row compared with the same baseline.
        tested: list[tuple[Cell, float]] = []
        for row in table.rows:
            cell = table.cells.get((row, column))
            if row == baseline_row or cell is None:
                continue
            seeds = sorted(set(reference) & set(cell.values), key=str)
            if len(seeds) < 2:
                continue
            ours = [cell.values[s] for s in seeds]
            theirs = [reference[s] for s in seeds]
            differences = np.subtract(ours, theirs)
            # ttest_rel is undefined when all paired differences are equal (zero variance);
            # with accuracies on a finite test set that happens for 2-3 seeds by chance,
            # so no p-value (and no mark) rather than a p of 0.
            if np.allclose(differences, differences[0]):
                continue
            cell.p_value = float(stats.ttest_rel(ours, theirs).pvalue)
            tested.append((cell, cell.p_value))
        adjusted = cell_stats.holm([p_value for _, p_value in tested])
        for (cell, _), p_adjusted in zip(tested, adjusted, strict=True):
            cell.p_adjusted = p_adjusted
