import math

import pytest

from mmexp.robustness.keys import curve_points, flat_metrics, metric_key, summary_key
from mmexp.robustness.summary import summarize
from tests.helpers.robustness_runs import make_payload

PAYLOAD = make_payload(
    0.9,
    subsets={"image": 0.7},
    missing={"text": {0.5: 0.8, 1.0: 0.6}},
    noise={("image", "gaussian_noise"): {0.0: 0.9, 0.5: 0.7, 1.0: 0.5}},
)


def test_keys_name_the_condition_verbatim_and_the_metric_without_test_prefix():
    assert metric_key("missing:text@0.5", "acc") == "robust/missing:text@0.5/acc"
    assert metric_key("subset:image", "f1_macro") == "robust/subset:image/f1_macro"
    assert summary_key("RR", "noise:image/gaussian_noise") == "robust/RR/noise:image/gaussian_noise"
    assert summary_key("ER", "missing:text") == "robust/ER/missing:text"
    with pytest.raises(ValueError, match="summary kind"):
        summary_key("relative", "missing:text")


def test_flat_metrics_hold_every_condition_metric_and_the_relative_robustness():
    flat = flat_metrics(PAYLOAD)
    assert flat["robust/clean/acc"] == 0.9
    assert flat["robust/subset:image/acc"] == 0.7
    assert flat["robust/missing:text@0.5/acc"] == 0.8
    assert flat["robust/noise:image/gaussian_noise@1.0/loss"] == pytest.approx(0.5)
    assert flat["robust/RR/missing:text"] == pytest.approx(0.775)
    assert flat["robust/RR/noise:image/gaussian_noise"] == pytest.approx(0.7)
    assert not any(key.startswith("robust/ER/") for key in flat)


def test_flat_metrics_take_a_stored_summary_with_its_effective_robustness():
    late = make_payload(0.8, missing={"text": {0.5: 0.6, 1.0: 0.2}})
    payload = dict(PAYLOAD, summary=summarize(PAYLOAD, late))
    payload["conditions"] = dict(payload["conditions"])
    payload["conditions"]["subset:text"] = {"kind": "subset", "metrics": {"acc": math.nan}}
    flat = flat_metrics(payload)
    assert flat["robust/ER/missing:text"] == pytest.approx(0.125)
    assert "robust/ER/noise:image/gaussian_noise" not in flat
    assert "robust/subset:text/acc" not in flat  # non-finite values are left out


def test_curve_points_read_a_curve_back_from_flat_keys_with_the_clean_point():
    flat = flat_metrics(PAYLOAD)
    assert curve_points(flat, "missing:text", "acc") == {0.0: 0.9, 0.5: 0.8, 1.0: 0.6}
    noise = curve_points(flat, "noise:image/gaussian_noise", "acc")
    assert noise == {0.0: 0.9, 0.5: 0.7, 1.0: 0.5}
    assert curve_points(flat, "noise:image", "acc") == {}
    assert curve_points(flat, "missing:audio", "acc") == {}
