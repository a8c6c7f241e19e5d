"""Robustness summaries of ``robustness.json`` curves: relative and effective robustness.

A *curve* groups the conditions of one modality and one kind of imperfection over levels:
``missing:<modality>`` (the rate of test samples that lack the modality) and
``noise:<modality>/<perturbation>`` (the strength of a perturbation). Level 0 is the clean
test set; a curve without a level-0 condition takes the ``clean`` condition's value there.

Both summaries follow MultiBench (Liang et al., "MultiBench: Multiscale Benchmarks for
Multimodal Representation Learning", NeurIPS 2021 Datasets and Benchmarks; Liang et al.,
"MultiZoo & MultiBench: A Standardized Toolkit for Multimodal Deep Learning", JMLR 2023),
which takes effective robustness from Taori et al.,
"Measuring Robustness to Natural Distribution Shifts in Image Classification", NeurIPS 2020.

Both are reported in the metric's own units and keep its direction: for a ``mode: min``
metric (``mae``, ``loss``) a smaller value of either summary is better. MultiBench scores
its mean-squared-error tasks the same way and only flips their sign before its cross-method
min-max normalisation, which is not applied here (see :func:`relative_robustness`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Condition kinds that form curves over levels.
CURVE_KINDS = ("missing_rate", "noise")
CLEAN = "clean"


@dataclass(frozen=True)
class Curve:
    """One metric of one curve, ordered by level.

    Attributes:
        name: Curve key, a condition name without ``@<level>`` (``missing:text``).
        levels: Increasing imperfection levels.
        values: The metric at each level.
    """

    name: str
    levels: tuple[float, ...]
    values: tuple[float, ...]

    @property
    def has_clean_point(self) -> bool:
        """Whether the curve starts at level 0, the clean test set."""
        return bool(self.levels) and self.levels[0] == 0.0


def curve_name(condition_name: str) -> str:
    """The curve a condition belongs to: its name without ``@<level>``."""
    return condition_name.rsplit("@", 1)[0]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def curves(payload: Mapping[str, Any], metric: str | None = None) -> dict[str, Curve]:
    """The curves of a ``robustness.json`` payload for one metric.

    Args:
        payload: The parsed ``robustness.json``.
        metric: Metric key inside each condition's ``metrics``; the payload's primary
            ``metric`` when ``None``.

    Returns:
        Curves by name, in the order their first condition appears. A curve with a level
        that lacks the metric (or has a non-finite value) is left out with a warning.

    Raises:
        ValueError: A curve has the same level twice.
    """
    metric = metric or payload["metric"]
    conditions: Mapping[str, Mapping[str, Any]] = payload.get("conditions", {})
    points: dict[str, dict[float, float | None]] = {}
    for name, condition in conditions.items():
        if condition.get("kind") not in CURVE_KINDS or condition.get("level") is None:
            continue
        level = float(condition["level"])
        curve = points.setdefault(curve_name(name), {})
        if level in curve:
            raise ValueError(f"curve {curve_name(name)!r} has level {level} twice")
        curve[level] = _number(condition.get("metrics", {}).get(metric))
    clean = conditions.get(CLEAN)
    clean_value = _number(clean.get("metrics", {}).get(metric)) if clean else None
    result = {}
    for name, by_level in points.items():
        if 0.0 not in by_level and clean_value is not None:
            by_level[0.0] = clean_value
        known = {level: value for level, value in by_level.items() if value is not None}
        if len(known) < len(by_level):
            log.warning("curve %s lacks %s at some level: left out of the summary", name, metric)
            continue
        levels = tuple(sorted(known))
        result[name] = Curve(name, levels, tuple(known[level] for level in levels))
    return result


def relative_robustness(levels: Sequence[float], values: Sequence[float]) -> float:
    r"""Relative robustness: the mean height of the performance-imperfection curve.

    MultiBench measures robustness as the area under the curve of performance against
    imperfection level. Here the area is the trapezoid rule over the given levels, divided
    by the level range so that the result is in the metric's units:

    .. math:: \mathrm{RR}(f) = \frac{1}{l_n - l_0}\sum_{i=1}^{n}
        \frac{(l_i - l_{i-1})\,(f_{i-1} + f_i)}{2}

    A flat curve gives its value; a linear drop from ``a`` to ``b`` gives ``(a + b) / 2``.

    MultiBench's ``eval_scripts/robustness.py`` (``relative_robustness_helper``) uses a
    fixed step of 0.1, which equals this on its 11 levels 0, 0.1, ..., 1 (on its 10-level
    curves it integrates over [0, 0.9] without dividing by 0.9); it then min-max normalises
    the area across the methods of its own leaderboard (``maxmin_normalize``). That
    normalisation depends on a fixed set of reference methods and is not applied: the value
    is the raw, comparable area. Uneven levels are integrated exactly by the trapezoid rule.

    Args:
        levels: Increasing levels, at least two.
        values: The metric at each level.

    Raises:
        ValueError: Fewer than two levels, lengths differ, or levels do not increase.
    """
    x = np.asarray(levels, dtype=float)
    y = np.asarray(values, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError(f"need at least two levels and one value per level, got {x} {y}")
    if np.any(np.diff(x) <= 0):
        raise ValueError(f"levels must increase, got {x.tolist()}")
    area = float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))
    return area / float(x[-1] - x[0])


def effective_robustness(
    levels: Sequence[float], values: Sequence[float], baseline_values: Sequence[float]
) -> float:
    r"""Effective robustness against a baseline model, after equalising clean performance.

    MultiBench (Liang et al., NeurIPS 2021) follows Taori et al. (NeurIPS 2020): effective
    robustness is the performance under imperfection beyond what a baseline with the same
    clean performance would keep. MultiBench's baseline is late fusion (``LF``) on the same
    task and imperfection. The baseline curve ``b`` is shifted to start at the model's clean
    value, :math:`\beta_f(l) = b(l) + f(0) - b(0)`, and the model's curve is compared with it
    level by level. As with :func:`relative_robustness`, the comparison is reduced to the
    normalised trapezoid area of :math:`f - \beta_f`:

    .. math:: \mathrm{ER}(f) = \mathrm{RR}(f - \beta_f)
        = \mathrm{RR}(f) - \mathrm{RR}(b) - \bigl(f(0) - b(0)\bigr)

    Positive: the model loses less than the baseline as the level grows (for a
    higher-is-better metric); zero for the baseline itself, and for any model whose curve is
    the baseline's moved up or down.

    MultiBench's code (``effective_robustness_helper``) computes the same shifted baseline
    but adds up :math:`f - \beta_f` over its levels (``np.sum``) instead of taking an area.
    A sum grows with the number of levels and ignores their spacing, so the differences are
    reduced here as :func:`relative_robustness` reduces a curve: ER is then
    in the metric's units like RR and comparable across grids. On MultiBench's 11 levels
    0, 0.1, ..., 1 its sum is :math:`10\,\mathrm{ER} + (f - \beta_f)(1) / 2`. Its
    cross-method min-max normalisation is not applied either.

    Args:
        levels: Increasing levels starting at 0 (the clean test set), at least two.
        values: The model's metric at each level.
        baseline_values: The baseline's metric at the same levels.

    Raises:
        ValueError: The levels do not start at 0, or the curves differ in length.
    """
    if len(baseline_values) != len(values):
        raise ValueError(f"baseline has {len(baseline_values)} values, model {len(values)}")
    if len(levels) == 0 or float(levels[0]) != 0.0:
        raise ValueError(f"effective robustness needs the clean level 0 first, got {list(levels)}")
    model = np.asarray(values, dtype=float)
    baseline = np.asarray(baseline_values, dtype=float)
    shifted = baseline + (model[0] - baseline[0])
    return relative_robustness(levels, model - shifted)


def summarize(
    payload: Mapping[str, Any],
    baseline: Mapping[str, Any] | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """The ``summary`` block of a ``robustness.json``: both summaries of every curve.

    Args:
        payload: The parsed ``robustness.json`` of the model.
        baseline: The ``robustness.json`` of the baseline model for effective robustness
            (MultiBench uses late fusion on the same task and seed); without it, effective
            robustness is left empty. A curve gets one only where the baseline has the same
            curve at the same levels, starting at level 0.
        metric: The metric summarised; the payload's primary ``metric`` when ``None``.

    Returns:
        ``{"metric", "mode", "baseline", "relative_robustness": {curve: value},
        "effective_robustness": {curve: value}, "curves": {curve: {"levels", "values"}}}``;
        ``baseline`` is the baseline's checkpoint (or ``None``), and each curve that has
        an effective robustness also lists its ``baseline_values``.

    Raises:
        ValueError: The baseline's ``mode`` differs from the model's.
    """
    metric = metric or payload["metric"]
    mode = payload.get("mode", "max")
    ours = curves(payload, metric)
    theirs: dict[str, Curve] = {}
    if baseline is not None:
        if baseline.get("mode", "max") != mode:
            raise ValueError(f"baseline mode {baseline.get('mode')!r} differs from {mode!r}")
        theirs = curves(baseline, metric)
    summary: dict[str, Any] = {
        "metric": metric,
        "mode": mode,
        "baseline": baseline.get("checkpoint") if baseline is not None else None,
        "relative_robustness": {},
        "effective_robustness": {},
        "curves": {},
    }
    for name, curve in ours.items():
        if len(curve.levels) < 2:
            log.warning("curve %s has a single level: no summary", name)
            continue
        entry: dict[str, Any] = {"levels": list(curve.levels), "values": list(curve.values)}
        summary["relative_robustness"][name] = relative_robustness(curve.levels, curve.values)
        other = theirs.get(name)
        if other is not None and other.levels == curve.levels and curve.has_clean_point:
            summary["effective_robustness"][name] = effective_robustness(
                curve.levels, curve.values, other.values
            )
            entry["baseline_values"] = list(other.values)
        elif baseline is not None:
            log.warning("baseline has no curve %s at the same levels from 0", name)
        summary["curves"][name] = entry
    return summary
