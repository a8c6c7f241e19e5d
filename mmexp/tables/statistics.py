"""Statistics a table cell reports beside mean ± std: intervals, corrected tests, split seeds.

A handful of seeds per cell is what ablation studies can afford, so each figure says how
far it can be trusted: a 95 % confidence interval of the mean (Student's t, or a bootstrap
over seeds), paired tests against a baseline corrected for the number of rows compared
(Holm's step-down method controls the family-wise error rate of a column), and a marker
for cells whose seeds fall into two separate groups, the learned / not-learned outcome
that a mean ± std hides.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

INTERVALS = ("t", "bootstrap")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student's t interval of the mean: ``mean ± t_{n-1} * s / sqrt(n)``.

    Returns:
        ``(low, high)``, or ``None`` for fewer than two values.
    """
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=float)
    half = stats.t.ppf((1 + level) / 2, len(data) - 1) * data.std(ddof=1) / math.sqrt(len(data))
    return float(data.mean() - half), float(data.mean() + half)


def bootstrap_interval(
    values: Sequence[float], level: float = 0.95, resamples: int = 9999, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean over seeds (seeded, so tables repeat).

    The percentile method, since BCa is undefined when resamples are all equal, which
    happens with few seeds. With under about ten seeds it is too narrow (for two seeds it
    is their range); the t interval is the safer choice there.

    Returns:
        ``(low, high)``, or ``None`` for fewer than two values.
    """
    if len(values) < 2:
        return None
    data = np.asarray(values, dtype=float)
    if np.all(data == data[0]):
        return float(data[0]), float(data[0])
    result = stats.bootstrap(
        (data,),
        np.mean,
        confidence_level=level,
        n_resamples=resamples,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def interval(
    values: Sequence[float], method: str, level: float = 0.95
) -> tuple[float, float] | None:
    """The interval of ``method`` (``t`` or ``bootstrap``).

    Raises:
        ValueError: An unknown method.
    """
    if method == "t":
        return t_interval(values, level)
    if method == "bootstrap":
        return bootstrap_interval(values, level)
    raise ValueError(f"unknown interval {method!r}; choose one of {INTERVALS}")


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the order given.

    The i-th smallest of m p-values is multiplied by ``m - i + 1``; adjusted values are
    then made non-decreasing in that order and capped at 1. A hypothesis is rejected at
    level alpha when its adjusted p-value is below alpha.
    """
    count = len(p_values)
    order = sorted(range(count), key=lambda index: p_values[index])
    adjusted = [1.0] * count
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (count - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def seeds_split(values: Sequence[float], min_gap: float) -> bool:
    """Whether the values fall into two groups far apart compared to their own spread.

    Sorted, the values are cut at their largest gap. They count as split when that gap is
    at least ``min_gap`` (in the metric's units) and more than twice the range of the
    wider group: e.g. ``[0.99, 0.34, 0.33]``, where one seed learned the task and two
    stayed at chance. With two seeds there is no spread inside a group, so the rule is
    that they differ by at least ``min_gap``.
    """
    if len(values) < 2:
        return False
    ordered = sorted(values)
    gaps = [later - earlier for earlier, later in zip(ordered, ordered[1:], strict=False)]
    cut = int(np.argmax(gaps))
    low, high = ordered[: cut + 1], ordered[cut + 1 :]
    spread = max(low[-1] - low[0], high[-1] - high[0])
    return gaps[cut] >= min_gap and gaps[cut] > 2 * spread
