import numpy as np
import pytest
from PIL import Image

from mmexp.robustness.keys import flat_metrics
from mmexp.robustness.plot import payload_figure, plot_curves, save_png, write_curve_png
from mmexp.tables.collect import RunResult
from tests.helpers.robustness_runs import make_payload

NOISE = ("image", "gaussian_noise")


def run(fusion, seed, clean, half, full, status="completed"):
    payload = make_payload(
        clean, missing={"text": {0.5: half, 1.0: full}}, noise={NOISE: {0.5: half}}, seed=seed
    )
    return RunResult(status, flat_metrics(payload), {"seed": seed}, {"fusion": fusion})


RUNS = [
    run("concat", 1, 0.90, 0.80, 0.60),
    run("concat", 2, 0.86, 0.70, 0.40),
    run("late", 1, 0.80, 0.75, 0.70),
    run("late", 2, 0.82, 0.77, 0.72),
    run("late", 3, 0.10, 0.10, 0.10, status="failed"),
]


def lines(figure):
    (axes,) = figure.axes
    return {line.get_label(): line for line in axes.get_lines()}


def test_curves_across_strategies_plot_the_mean_over_seeds_with_a_std_band(tmp_path):
    figure = plot_curves(RUNS, "missing:text", "acc", "fusion")
    drawn = lines(figure)
    assert set(drawn) == {"concat", "late"}
    assert list(drawn["concat"].get_xdata()) == [0.0, 0.5, 1.0]
    assert drawn["concat"].get_ydata() == pytest.approx([0.88, 0.75, 0.50])
    assert drawn["late"].get_ydata() == pytest.approx([0.81, 0.76, 0.71])  # failed run left out
    (axes,) = figure.axes
    band = axes.collections[0].get_paths()[0].vertices[:, 1]
    spread = np.std([0.90, 0.86], ddof=1)
    assert band.max() == pytest.approx(0.88 + spread)
    path = save_png(figure, tmp_path / "plots" / "curve.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 300


def test_scale_and_a_noise_curve_with_the_clean_point_at_level_zero():
    figure = plot_curves(RUNS, "noise:image/gaussian_noise", "acc", "fusion", scale=100.0)
    concat = lines(figure)["concat"]
    assert list(concat.get_xdata()) == [0.0, 0.5]
    assert concat.get_ydata() == pytest.approx([88.0, 75.0])
    assert figure.axes[0].get_ylabel() == "acc (x100)"
    with pytest.raises(ValueError, match="no completed run has the curve 'missing:audio'"):
        plot_curves(RUNS, "missing:audio", "acc", "fusion")


def test_one_runs_curves_are_one_line_each_and_written_as_png(tmp_path):
    payload = make_payload(
        0.9, subsets={"image": 0.7}, missing={"text": {0.5: 0.8}}, noise={NOISE: {0.2: 0.85}}
    )
    drawn = lines(payload_figure(payload))
    assert set(drawn) == {"missing:text", "noise:image/gaussian_noise"}
    assert drawn["missing:text"].get_ydata() == pytest.approx([0.9, 0.8])
    assert drawn["noise:image/gaussian_noise"].get_xdata() == pytest.approx([0.0, 0.2])
    assert lines(payload_figure(payload, "loss"))["missing:text"].get_ydata() == pytest.approx(
        [0.1, 0.2]
    )
    path = write_curve_png(payload, tmp_path / "robustness.png")
    with Image.open(path) as image:
        assert image.format == "PNG"
    with pytest.raises(ValueError, match="no missing-rate or noise curve"):
        payload_figure(make_payload(0.9, subsets={"image": 0.7}))
