"""Analysis bar charts: the drawn heights, error bars and stacks are the means over seeds."""

import numpy as np
import pytest
from matplotlib.container import BarContainer

from mmexp.analysis.keys import flat_metrics
from mmexp.analysis.plot import plot_emap, plot_pid, plot_shapley, row_values
from mmexp.tables.collect import RunResult
from tests.helpers.analysis_runs import make_analysis


def run(fusion, seed, shapley, gap, model, data, status="completed"):
    payload = make_analysis(0.9, shapley, gap, model, data, seed=seed)
    return RunResult(status, flat_metrics(payload), {"seed": seed}, {"fusion": fusion})


RUNS = [
    run(
        "concat",
        1,
        {"image": 0.20, "text": 0.30},
        0.40,
        (0.1, (0.0, 0.1), 0.6),
        (0.0, (0.1, 0.0), 0.5),
    ),
    run(
        "concat",
        2,
        {"image": 0.10, "text": 0.20},
        0.30,
        (0.3, (0.2, 0.1), 0.4),
        (0.2, (0.1, 0.2), 0.3),
    ),
    run(
        "late",
        1,
        {"image": 0.05, "text": 0.00},
        0.00,
        (0.2, (0.3, 0.0), 0.0),
        (0.1, (0.0, 0.0), 0.6),
    ),
    # a failed run is left out, a repeated seed counts once (the later run)
    run(
        "late",
        2,
        {"image": 0.90, "text": 0.90},
        0.90,
        (1.0, (1.0, 1.0), 1.0),
        (1, (1, 1), 1),
        "failed",
    ),
    run(
        "late",
        1,
        {"image": 0.15, "text": 0.00},
        0.00,
        (0.2, (0.3, 0.0), 0.0),
        (0.1, (0.0, 0.0), 0.6),
    ),
]


def bars(figure):
    """The bar containers by label (error bars are containers of their own)."""
    (axes,) = figure.axes
    found = [c for c in axes.containers if isinstance(c, BarContainer)]
    return {container.get_label(): container for container in found}


def heights(container):
    return [patch.get_height() for patch in container.patches]


def error_bars(container):
    """``(low, high)`` of each bar's error line."""
    (lines,) = container.errorbar.lines[2]
    return [(segment[0][1], segment[1][1]) for segment in lines.get_segments()]


def test_shapley_bars_one_group_per_row_one_bar_per_modality():
    figure = plot_shapley(RUNS, "fusion", scale=100.0)
    drawn = bars(figure)
    assert set(drawn) == {"image", "text"}
    assert heights(drawn["image"]) == pytest.approx([15.0, 15.0])  # concat, late (seed 1 once)
    assert heights(drawn["text"]) == pytest.approx([25.0, 0.0])
    spread = np.std([20.0, 10.0], ddof=1)
    assert error_bars(drawn["image"])[0] == pytest.approx((15.0 - spread, 15.0 + spread))
    assert error_bars(drawn["image"])[1] == pytest.approx((15.0, 15.0))  # one seed: no spread
    (axes,) = figure.axes
    assert [tick.get_text() for tick in axes.get_xticklabels()] == ["concat", "late"]
    assert axes.get_ylabel() == "Shapley value (x100)"
    image, text = drawn["image"].patches[0], drawn["text"].patches[0]
    assert image.get_x() < text.get_x() < image.get_x() + 1  # side by side within the group


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (
            "model",
            {
                "redundancy": [0.2, 0.2],
                "U image": [0.1, 0.3],
                "U text": [0.1, 0.0],
                "synergy": [0.5, 0.0],
            },
        ),
        (
            "data",
            {
                "redundancy": [0.1, 0.1],
                "U image": [0.1, 0.0],
                "U text": [0.1, 0.0],
                "synergy": [0.4, 0.6],
            },
        ),
    ],
)
def test_pid_bars_stack_the_mean_atoms_redundancy_first(target, expected):
    figure = plot_pid(RUNS, target, "fusion")
    drawn = bars(figure)
    assert list(drawn) == list(expected)  # the stacking order
    bottom = np.zeros(2)
    for label, means in expected.items():
        assert heights(drawn[label]) == pytest.approx(means), label
        assert [patch.get_y() for patch in drawn[label].patches] == pytest.approx(bottom), label
        bottom += means
    assert figure.axes[0].get_ylabel() == "bits"


def test_emap_gap_bars_with_their_spread():
    figure = plot_emap(RUNS, "fusion")
    (container,) = bars(figure).values()
    assert heights(container) == pytest.approx([0.35, 0.0])
    spread = np.std([0.4, 0.3], ddof=1)
    assert error_bars(container)[0] == pytest.approx((0.35 - spread, 0.35 + spread))


def test_runs_without_the_results_are_named():
    bare = [RunResult("completed", {"test/acc": 0.5}, {"seed": 1}, {"fusion": "concat"})]
    assert row_values(bare, ["analysis/emap/gap"], "fusion") == {}
    with pytest.raises(ValueError, match=r"no completed run has Shapley values"):
        plot_shapley(bare, "fusion")
    with pytest.raises(ValueError, match=r"no completed run has the PID of the data"):
        plot_pid(bare, "data", "fusion")
    with pytest.raises(ValueError, match=r"no completed run has an EMAP gap"):
        plot_emap(bare, "fusion")
