import json
import logging

import numpy as np
import pytest
from scipy.integrate import trapezoid

from mmexp.robustness.summary import (
    curves,
    effective_robustness,
    relative_robustness,
    summarize,
)
from tests.helpers.robustness_runs import make_payload


def test_flat_curve_has_its_value_as_relative_robustness():
    assert relative_robustness([0.0, 0.3, 1.0], [0.7, 0.7, 0.7]) == pytest.approx(0.7)


def test_linear_drop_from_a_to_b_gives_their_mean():
    levels = np.linspace(0.0, 1.0, 11)
    values = 0.9 + (0.4 - 0.9) * levels
    assert relative_robustness(levels, values) == pytest.approx((0.9 + 0.4) / 2)


def test_uneven_levels_match_the_trapezoid_rule_over_the_level_range():
    levels = [0.0, 0.05, 0.2, 0.5, 0.9]
    values = [0.91, 0.9, 0.82, 0.61, 0.3]
    expected = np.trapezoid(values, levels) / 0.9
    assert relative_robustness(levels, values) == pytest.approx(expected)
    assert relative_robustness(levels, values) == pytest.approx(trapezoid(values, levels) / 0.9)


def test_relative_robustness_refuses_bad_curves():
    with pytest.raises(ValueError, match="at least two levels"):
        relative_robustness([0.0], [0.5])
    with pytest.raises(ValueError, match="must increase"):
        relative_robustness([0.0, 0.5, 0.5], [0.5, 0.4, 0.3])


def test_effective_robustness_on_a_hand_worked_example():
    # Baseline shifted to the model's clean 0.9: [0.9, 0.7, 0.3]; model minus it: [0, .1, .3];
    # trapezoid: 0.5 * (0 + .1) / 2 + 0.5 * (.1 + .3) / 2 = 0.125 over a range of 1.
    levels, model, baseline = [0.0, 0.5, 1.0], [0.9, 0.8, 0.6], [0.8, 0.6, 0.2]
    value = effective_robustness(levels, model, baseline)
    assert value == pytest.approx(0.125)
    expected = relative_robustness(levels, model) - relative_robustness(levels, baseline) - 0.1
    assert value == pytest.approx(expected)


def test_effective_robustness_is_zero_for_the_baseline_and_its_shifted_copies():
    levels, baseline = [0.0, 0.5, 1.0], [0.8, 0.6, 0.2]
    assert effective_robustness(levels, baseline, baseline) == pytest.approx(0.0)
    shifted = [v + 0.15 for v in baseline]
    assert effective_robustness(levels, shifted, baseline) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="clean level 0"):
        effective_robustness([0.1, 0.5], [0.8, 0.6], [0.8, 0.6])
    with pytest.raises(ValueError, match="baseline has 2 values"):
        effective_robustness(levels, [0.9, 0.8, 0.6], [0.8, 0.6])


def test_multibench_sum_on_its_eleven_levels_is_ten_times_the_area_plus_half_the_end():
    levels = np.linspace(0.0, 1.0, 11)
    model = 0.9 - 0.3 * levels**2
    baseline = 0.8 - 0.5 * levels
    shifted = baseline + (model[0] - baseline[0])
    multibench = float(np.sum(model - shifted))
    end = (model - shifted)[-1]
    assert multibench == pytest.approx(10 * effective_robustness(levels, model, baseline) + end / 2)


MODEL = make_payload(
    0.9,
    subsets={"image": 0.7, "text": 0.6},
    missing={"text": {0.5: 0.8, 1.0: 0.6}},
    noise={("image", "gaussian_noise"): {0.0: 0.9, 0.1: 0.88, 0.4: 0.7, 1.0: 0.5}},
)
LATE = make_payload(
    0.8,
    missing={"text": {0.0: 0.8, 0.5: 0.6, 1.0: 0.2}},
    noise={("image", "gaussian_noise"): {0.0: 0.8, 0.1: 0.8, 0.5: 0.7, 1.0: 0.6}},
)


def test_curves_group_levels_and_take_the_clean_point_at_level_zero():
    found = curves(MODEL)
    assert list(found) == ["missing:text", "noise:image/gaussian_noise"]
    assert found["missing:text"].levels == (0.0, 0.5, 1.0)
    assert found["missing:text"].values == (0.9, 0.8, 0.6)
    assert found["noise:image/gaussian_noise"].levels == (0.0, 0.1, 0.4, 1.0)
    losses = curves(MODEL, "loss")["missing:text"].values
    assert losses == pytest.approx((0.1, 0.2, 0.4))


def test_summarize_gives_both_summaries_where_the_baseline_has_the_same_levels():
    summary = summarize(MODEL, LATE)
    assert summary["metric"] == "acc" and summary["mode"] == "max"
    assert summary["baseline"] == LATE["checkpoint"]
    relative = summary["relative_robustness"]
    assert relative["missing:text"] == pytest.approx(0.775)
    noise = summary["curves"]["noise:image/gaussian_noise"]
    assert relative["noise:image/gaussian_noise"] == pytest.approx(
        np.trapezoid(noise["values"], noise["levels"])
    )
    assert summary["effective_robustness"] == {"missing:text": pytest.approx(0.125)}
    assert summary["curves"]["missing:text"]["baseline_values"] == [0.8, 0.6, 0.2]
    assert "baseline_values" not in noise  # the baseline's noise levels differ
    json.dumps(summary)  # JSON-ready: goes into robustness.json


def test_summarize_without_baseline_has_no_effective_robustness():
    summary = summarize(MODEL)
    assert summary["baseline"] is None and summary["effective_robustness"] == {}
    assert set(summary["relative_robustness"]) == {"missing:text", "noise:image/gaussian_noise"}


def test_lower_is_better_metrics_keep_their_direction():
    model = make_payload(0.9, missing={"text": {0.5: 0.8, 1.0: 0.6}}, mode="min")
    late = make_payload(0.8, missing={"text": {0.5: 0.6, 1.0: 0.2}}, mode="min")
    summary = summarize(model, late, metric="loss")
    assert summary["mode"] == "min"
    # Loss 1 - acc: the mean loss over levels, and a loss that grows less than the baseline's
    # is a negative (better) effective robustness.
    assert summary["relative_robustness"]["missing:text"] == pytest.approx(1 - 0.775)
    assert summary["effective_robustness"]["missing:text"] == pytest.approx(-0.125)
    with pytest.raises(ValueError, match="baseline mode 'max' differs"):
        summarize(model, LATE)


def test_curves_missing_the_metric_or_with_repeated_levels(caplog):
    payload = make_payload(0.9, missing={"text": {0.5: 0.8, 1.0: 0.6}, "image": {1.0: 0.5}})
    payload["conditions"]["missing:text@0.5"]["metrics"]["acc"] = None
    with caplog.at_level(logging.WARNING):
        summary = summarize(payload)
    assert set(summary["relative_robustness"]) == {"missing:image"}
    assert "missing:text lacks acc" in caplog.text
    payload["conditions"]["missing:image@1"] = payload["conditions"]["missing:image@1.0"]
    with pytest.raises(ValueError, match="level 1.0 twice"):
        curves(payload)
