"""Analysis figures across strategies as PNG: Shapley values, PID atoms and EMAP gaps.

One group of bars per row of the table (a strategy, or a task and strategy), each bar the
mean over seeds of the completed runs (a seed counts once per row, as in the tables), from
the flat ``analysis/...`` metrics of :mod:`mmexp.analysis.keys`. Figures are drawn on
matplotlib's Agg canvas without pyplot's global state, like the robustness curves.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mmexp.analysis.keys import PREFIX, UNIQUE, atom_order, pid_key
from mmexp.robustness.plot import RunLike, save_png

SHAPLEY = f"{PREFIX}/contribution/shapley/"
EMAP_GAP = f"{PREFIX}/emap/gap"
#: The figures ``--analysis-plots`` writes, by file suffix.
PLOTS = ("shapley", "pid_model", "pid_data", "emap")


def row_values(
    runs: Sequence[RunLike], keys: Sequence[str], row_axis: str, seed_axis: str = "seed"
) -> dict[Any, dict[str, list[float]]]:
    """``{row: {key: [value of each seed]}}`` of the completed runs, rows sorted by name."""
    by_seed: dict[Any, dict[str, dict[Any, float]]] = defaultdict(lambda: defaultdict(dict))
    for run in runs:
        row = run.axis(row_axis)
        if row is None or run.status != "completed":
            continue
        for key in keys:
            value = run.metrics.get(key)
            if value is not None and np.isfinite(value):
                by_seed[row][key][run.axis(seed_axis)] = float(value)
    return {
        row: {key: list(seeds.values()) for key, seeds in values.items()}
        for row, values in sorted(by_seed.items(), key=lambda item: str(item[0]))
    }


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value, NaN mean for none)."""
    if not values:
        return float("nan"), 0.0
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def _keys_below(runs: Sequence[RunLike], head: str) -> list[str]:
    return sorted({k for run in runs for k in run.metrics if k.startswith(head)})


def _figure(rows: int) -> tuple[Figure, Any]:
    figure = Figure(figsize=(max(4.0, 0.9 * rows + 2.0), 3.4))
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _finish(figure: Figure, axes: Any, rows: Sequence[Any], ylabel: str, legend: str) -> Figure:
    axes.set_xticks(range(len(rows)), [str(r) for r in rows], rotation=20, ha="right")
    axes.set_ylabel(ylabel)
    axes.axhline(0.0, color="black", linewidth=0.6)
    axes.grid(axis="y", alpha=0.3)
    if legend:
        axes.legend(
            title=legend,
            fontsize="small",
            frameon=False,
            loc="upper left",
            bbox_to_anchor=(1.0, 1.0),
        )
    figure.tight_layout()
    return figure


def plot_shapley(
    runs: Sequence[RunLike], row_axis: str, seed_axis: str = "seed", scale: float = 1.0
) -> Figure:
    """Shapley values of the metric: one group per row, one bar per modality, mean ± std.

    Raises:
        ValueError: No completed run has Shapley values (``analysis=[contribution]``).
    """
    keys = _keys_below(runs, SHAPLEY)
    statistics = row_values(runs, keys, row_axis, seed_axis)
    if not statistics:
        raise ValueError("no completed run has Shapley values (analysis=[contribution])")
    rows, width = list(statistics), 0.8 / len(keys)
    figure, axes = _figure(len(rows))
    for index, key in enumerate(keys):
        stats = [mean_std(statistics[row].get(key, [])) for row in rows]
        positions = np.arange(len(rows)) + (index - (len(keys) - 1) / 2) * width
        heights = [0.0 if np.isnan(m) else m * scale for m, _ in stats]
        errors = [s * scale for _, s in stats]
        label = key.removeprefix(SHAPLEY)
        axes.bar(positions, heights, width, yerr=errors, capsize=3, label=label)
    unit = " (x100)" if scale == 100.0 else ""
    return _finish(figure, axes, rows, f"Shapley value{unit}", "modality")


def plot_pid(
    runs: Sequence[RunLike], target: str, row_axis: str, seed_axis: str = "seed"
) -> Figure:
    """Stacked redundancy, unique and synergy bars per row, in bits (means over seeds).

    Args:
        runs: Collected runs.
        target: ``model`` (the decomposition of its predictions) or ``data`` (of the labels).
        row_axis: Axis whose values are the bars.
        seed_axis: Axis that identifies repetitions.

    Raises:
        ValueError: No completed run has the decomposition (``analysis=[pid]``).
    """
    head = pid_key(target, "")
    atoms = atom_order([k.removeprefix(head) for k in _keys_below(runs, head)])
    keys = [head + atom for atom in atoms]
    statistics = row_values(runs, keys, row_axis, seed_axis)
    if not statistics:
        raise ValueError(f"no completed run has the PID of the {target} (analysis=[pid])")
    rows = list(statistics)
    figure, axes = _figure(len(rows))
    bottom = np.zeros(len(rows))
    for atom, key in zip(atoms, keys, strict=True):
        means = np.array([mean_std(statistics[row].get(key, []))[0] for row in rows])
        heights = np.nan_to_num(means)
        label = f"U {atom.removeprefix(UNIQUE)}" if atom.startswith(UNIQUE) else atom
        axes.bar(np.arange(len(rows)), heights, 0.6, bottom=bottom, label=label)
        bottom += heights
    what = "labels" if target == "data" else "predictions"
    axes.set_title(f"PID of the {target} ({what})", fontsize="medium")
    return _finish(figure, axes, rows, "bits", "atom")


def plot_emap(
    runs: Sequence[RunLike], row_axis: str, seed_axis: str = "seed", scale: float = 1.0
) -> Figure:
    """The EMAP gap (accuracy the additive projection loses) per row, mean ± std.

    Raises:
        ValueError: No completed run has an EMAP gap (``analysis=[emap]``).
    """
    statistics = row_values(runs, [EMAP_GAP], row_axis, seed_axis)
    if not statistics:
        raise ValueError("no completed run has an EMAP gap (analysis=[emap])")
    rows = list(statistics)
    stats = [mean_std(statistics[row][EMAP_GAP]) for row in rows]
    figure, axes = _figure(len(rows))
    axes.bar(
        np.arange(len(rows)),
        [m * scale for m, _ in stats],
        0.6,
        yerr=[s * scale for _, s in stats],
        capsize=3,
    )
    unit = " (x100)" if scale == 100.0 else ""
    return _finish(figure, axes, rows, f"EMAP gap: acc - EMAP acc{unit}", "")


def plot_path(out: Path, name: str) -> Path:
    """``<out>_<name>.png``."""
    return out.with_name(f"{out.name}_{name}.png")


def write_analysis_plots(
    runs: Sequence[RunLike], out: Path, row_axis: str, seed_axis: str = "seed", scale: float = 1.0
) -> tuple[list[Path], list[str]]:
    """Write every figure of :data:`PLOTS` the runs have results for.

    Returns:
        The files written (each figure as PNG and PDF) and the names of the figures left
        out for want of results.

    Raises:
        ValueError: No completed run has any of them.
    """
    builders: dict[str, tuple[str, Callable[[], Figure]]] = {
        "shapley": (SHAPLEY, lambda: plot_shapley(runs, row_axis, seed_axis, scale)),
        "pid_model": (pid_key("model", ""), lambda: plot_pid(runs, "model", row_axis, seed_axis)),
        "pid_data": (pid_key("data", ""), lambda: plot_pid(runs, "data", row_axis, seed_axis)),
        "emap": (EMAP_GAP, lambda: plot_emap(runs, row_axis, seed_axis, scale)),
    }
    written, skipped = [], []
    for name in PLOTS:
        head, build = builders[name]
        if not row_values(runs, _keys_below(runs, head), row_axis, seed_axis):
            skipped.append(name)
            continue
        figure = build()
        png = save_png(figure, plot_path(out, name))
        figure.savefig(png.with_suffix(".pdf"))
        written += [png, png.with_suffix(".pdf")]
    if not written:
        raise ValueError("no completed run has analysis results to plot (analysis.json)")
    return written, skipped
