"""The charts of a table: bars or lines, intervals kept inside the metric's range, and seeds."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mmexp.tables.aggregate import Cell, Table

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Metrics that are fractions (accuracy, F1, AUROC, recall@k, VQA accuracy, ...): their bars
#: stay in [0, 1].
BOUNDED = re.compile(
    r"^(acc(uracy)?|bal(anced)?_acc|f1(_\w+)?|auroc(_\w+)?|ap|map|precision(_\w+)?"
    r"|recall(_\w+)?|r@\d+|top\d+(_acc)?|vqa_acc(_\w+)?)$"
)


def metric_range(metric: str) -> tuple[float, float] | None:
    """``(0, 1)`` for a metric that is a fraction (its whole last name part), else ``None``."""
    name = metric.rsplit("/", 1)[-1].lower()
    return (0.0, 1.0) if BOUNDED.match(name) else None


def error_bounds(cell: Cell, value_range: tuple[float, float] | None) -> tuple[float, float] | None:
    """Low and high end of a cell's error bar: its interval, else mean ± std, clipped.

    An interval reaching past what the metric can take (an accuracy above 1) would draw a
    claim no seed made, so it is cut at the range; a mean outside the range (the range was
    wrong for this metric) leaves the bar uncut.
    """
    if cell.n == 0:
        return None
    low, high = cell.interval or (cell.mean - cell.std, cell.mean + cell.std)
    if value_range is not None and value_range[0] <= cell.mean <= value_range[1]:
        low, high = max(low, value_range[0]), min(high, value_range[1])
    return low, high


def _spread_name(table: Table) -> str:
    """What the error bars or bands show: the cells' interval, else ± one std."""
    return {"t": "95 % t interval", "bootstrap": "95 % bootstrap interval"}.get(
        table.interval or "", "± std"
    )


def _label_and_legend(axes: Axes, table: Table, scale: float, shows: str) -> None:
    """The y label (metric, unit, what the marks show) and the row legend beside the axes."""
    unit = " (x100)" if scale == 100.0 else ""
    axes.set_ylabel(f"{table.metric}{unit}\n{shows}; dots: seeds", fontsize="small")
    axes.legend(
        title=table.row_axis,
        fontsize="small",
        frameon=False,
        bbox_to_anchor=(1.0, 1.0),
        loc="upper left",
    )
    axes.figure.tight_layout()


def save_png_and_pdf(figure: Figure, path: Path) -> list[Path]:
    """Write ``figure`` as PNG at ``path`` and PDF beside it, close it, return the files."""
    import matplotlib.pyplot as plt

    written = [path.with_suffix(".png"), path.with_suffix(".pdf")]
    for target in written:
        figure.savefig(target, dpi=150)
    plt.close(figure)
    return written


def write_bar_chart(
    table: Table,
    path: Path,
    scale: float = 100.0,
    value_range: tuple[float, float] | None = None,
) -> list[Path]:
    """Grouped bars (one group per column, one bar per row), error bars and every seed.

    The error bar is the cell's confidence interval when the table has them, else ± one
    standard deviation, clipped to ``value_range``; each seed is a dot on its bar, so a
    split outcome (one seed learned, one did not) shows as two dots far apart.

    Args:
        table: The aggregated table.
        path: Where the PNG goes; the PDF goes beside it.
        scale: Factor applied to the values for display.
        value_range: What the metric can take (unscaled); ``None``: read from its name
            (:func:`metric_range`).

    Returns:
        The files written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on clusters and CI
    import matplotlib.pyplot as plt

    value_range = value_range or metric_range(table.metric)
    width = 0.8 / max(len(table.rows), 1)
    figure, axes = plt.subplots(figsize=(max(4.0, 1.6 * len(table.columns) + 2), 3.2))
    rng = np.random.default_rng(0)  # the same dot positions every time
    for index, row in enumerate(table.rows):
        cells = [table.cell(row, column) for column in table.columns]
        offset = (index - (len(table.rows) - 1) / 2) * width
        positions = [column + offset for column in range(len(table.columns))]
        means = [cell.mean * scale if cell.n else 0.0 for cell in cells]
        bounds = [error_bounds(cell, value_range) for cell in cells]
        pairs = list(zip(cells, bounds, strict=True))
        below = [max(cell.mean - b[0], 0.0) * scale if b else 0.0 for cell, b in pairs]
        above = [max(b[1] - cell.mean, 0.0) * scale if b else 0.0 for cell, b in pairs]
        bars = axes.bar(positions, means, width, yerr=[below, above], capsize=3, label=str(row))
        for position, cell in zip(positions, cells, strict=True):
            seeds = np.asarray(list(cell.values.values())) * scale
            jitter = rng.uniform(-0.25, 0.25, len(seeds)) * width
            axes.scatter(
                position + jitter,
                seeds,
                s=9,
                color="black",
                edgecolor=bars.patches[0].get_facecolor(),
                linewidths=0.5,
                zorder=3,
            )
    if value_range is not None and all(
        value_range[0] <= value <= value_range[1]
        for cell in table.cells.values()
        for value in cell.values.values()
    ):
        axes.set_ylim(value_range[0] * scale, value_range[1] * scale * 1.02)
    axes.set_xticks(range(len(table.columns)), [str(c) for c in table.columns])
    cut = ", cut at the range" if value_range is not None else ""
    _label_and_legend(axes, table, scale, f"bars: mean, {_spread_name(table)}{cut}")
    return save_png_and_pdf(figure, path)


def numeric_columns(table: Table, log_x: bool = False) -> list[float]:
    """The table's column values as numbers, for a plot against them.

    Raises:
        ValueError: A column is not a number, or not positive on a logarithmic axis; the
            message names the column axis.
    """
    positions = []
    for column in table.columns:
        try:
            positions.append(float(column))
        except (TypeError, ValueError):
            raise ValueError(
                f"--line plots against the column axis {table.column_axis or 'metric'!r}, "
                f"whose value {column!r} is not a number; give --cols a numeric axis "
                "(a label budget, missing rate, width, alpha)"
            ) from None
    if log_x and min(positions) <= 0:
        raise ValueError(
            f"--logx: the column axis {table.column_axis!r} has the value {min(positions)}, "
            "which a logarithmic axis cannot show; drop --logx"
        )
    return positions


def line_figure(
    table: Table,
    scale: float = 100.0,
    value_range: tuple[float, float] | None = None,
    log_x: bool = False,
) -> Figure:
    """One line per row against the numeric column axis: means, their band and every seed.

    The band is the cells' confidence interval when the table has them, else ± one
    standard deviation, cut at ``value_range`` as the bars are (:func:`error_bounds`).

    Args:
        table: The aggregated table; its columns must be numbers.
        scale: Factor applied to the values for display.
        value_range: What the metric can take (unscaled); ``None``: from its name.
        log_x: A logarithmic x axis (label budgets spanning orders of magnitude).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    positions = numeric_columns(table, log_x)
    order = sorted(range(len(positions)), key=positions.__getitem__)
    value_range = value_range or metric_range(table.metric)
    figure, axes = plt.subplots(figsize=(5.0, 3.2))
    for row in table.rows:
        points = [(positions[i], table.cell(row, table.columns[i])) for i in order]
        points = [(x, cell) for x, cell in points if cell.n]
        if not points:
            continue
        xs = [x for x, _ in points]
        means = [cell.mean * scale for _, cell in points]
        (line,) = axes.plot(xs, means, marker="o", ms=3, label=str(row))
        bounds = [error_bounds(cell, value_range) for _, cell in points]
        axes.fill_between(
            xs,
            [b[0] * scale for b in bounds],
            [b[1] * scale for b in bounds],
            color=line.get_color(),
            alpha=0.2,
            linewidth=0,
        )
        for x, cell in points:
            seeds = np.asarray(list(cell.values.values())) * scale
            axes.scatter([x] * len(seeds), seeds, s=7, color=line.get_color(), zorder=3)
    if log_x:
        axes.set_xscale("log")
    axes.set_xlabel(table.column_axis or "metric")
    _label_and_legend(axes, table, scale, f"line: mean, band: {_spread_name(table)}")
    return figure


def write_line_plot(
    table: Table,
    path: Path,
    scale: float = 100.0,
    value_range: tuple[float, float] | None = None,
    log_x: bool = False,
) -> list[Path]:
    """Write :func:`line_figure` as PNG at ``path`` and PDF beside it; return the files."""
    return save_png_and_pdf(line_figure(table, scale, value_range, log_x), path)
