"""Performance-imperfection curves as PNG: across strategies, or one run's own curves.

Figures are drawn on matplotlib's Agg canvas (files only, no display), without pyplot's
global state, so they work on clusters and in CI.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmexp.robustness.keys import curve_points
from mmexp.robustness.summary import curves


class RunLike(Protocol):
    """What a plotted run needs: a status, flat metrics and config axes."""

    status: str
    metrics: Mapping[str, Any]

    def axis(self, name: str) -> Any:
        """Value of a config axis."""
        ...


def _figure() -> tuple[Figure, Any]:
    figure = Figure(figsize=(5.0, 3.4))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def curve_statistics(
    runs: Sequence[RunLike], curve: str, metric: str, row_axis: str, seed_axis: str = "seed"
) -> dict[Any, dict[float, list[float]]]:
    """``{row: {level: [value of each seed]}}`` of one curve over completed runs.

    As in the tables, a seed counts once per row: a later run of the same row and seed
    replaces an earlier one.
    """
    by_seed: dict[Any, dict[float, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        row = run.axis(row_axis)
        if row is None or run.status != "completed":
            continue
        for level, value in curve_points(run.metrics, curve, metric).items():
            by_seed[row][level][run.axis(seed_axis)] = value
    return {
        row: {level: list(seeds.values()) for level, seeds in sorted(levels.items())}
        for row, levels in sorted(by_seed.items(), key=lambda item: str(item[0]))
    }


def plot_curves(
    runs: Sequence[RunLike],
    curve: str,
    metric: str,
    row_axis: str,
    seed_axis: str = "seed",
    scale: float = 1.0,
) -> Figure:
    """Performance against level, one line per row value (strategy), mean over seeds.

    The shaded band is the mean ± one sample standard deviation over seeds (as in the
    tables; no band for a single seed). Runs should differ only in the row axis and the
    seed: filter other axes (task, modalities) first.

    Args:
        runs: Collected runs, with flat ``robust/...`` metrics.
        curve: ``missing:text`` or ``noise:image/gaussian_noise``.
        metric: Metric name without ``test/`` (``acc``).
        row_axis: Axis whose values are the lines (``fusion``).
        seed_axis: Axis that identifies repetitions.
        scale: Factor applied to the values (100: percent).

    Raises:
        ValueError: No completed run has the curve.
    """
    statistics = curve_statistics(runs, curve, metric, row_axis, seed_axis)
    if not statistics:
        raise ValueError(f"no completed run has the curve {curve!r} for {metric!r}")
    figure, axes = _figure()
    for row, levels in statistics.items():
        x = np.array(list(levels))
        values = [np.asarray(seeds) * scale for seeds in levels.values()]
        mean = np.array([v.mean() for v in values])
        std = np.array([v.std(ddof=1) if v.size > 1 else 0.0 for v in values])
        (line,) = axes.plot(x, mean, marker="o", markersize=3, label=str(row))
        if any(v.size > 1 for v in values):
            axes.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    unit = " (x100)" if scale == 100.0 else ""
    kind = "missing rate" if curve.startswith("missing:") else "level"
    _label(axes, f"{curve}: {kind}", metric + unit)
    axes.legend(title=row_axis, fontsize="small", frameon=False)
    figure.tight_layout()
    return figure


def _label(axes: Any, xlabel: str, ylabel: str) -> None:
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)


def payload_figure(payload: Mapping[str, Any], metric: str | None = None) -> Figure:
    """One run's curves from its ``robustness.json``, one line per curve.

    Args:
        payload: The parsed ``robustness.json``.
        metric: Metric plotted; the payload's primary ``metric`` when ``None``.

    Raises:
        ValueError: The payload has no curve.
    """
    metric = metric or payload["metric"]
    found = curves(payload, metric)
    if not found:
        raise ValueError("the robustness results have no missing-rate or noise curve")
    figure, axes = _figure()
    for name, curve in found.items():
        axes.plot(curve.levels, curve.values, marker="o", markersize=3, label=name)
    _label(axes, "level (missing rate or perturbation strength)", metric)
    axes.legend(fontsize="small", frameon=False)
    figure.tight_layout()
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as PNG (parents created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150, format="png")
    return path


def write_curve_png(
    payload: Mapping[str, Any], path: str | Path, metric: str | None = None
) -> Path:
    """Write one run's curves (:func:`payload_figure`) as a PNG, e.g. to log to W&B."""
    return save_png(payload_figure(payload, metric), path)
