"""Sentiment-regression metrics against numpy, scipy and scikit-learn on fixed inputs."""

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr
from sklearn.metrics import accuracy_score, f1_score

from mmexp.metrics.regression import PearsonCorrelation, regression_metrics

# Targets on MOSI's scale with exact zeros and half-way values (rounding ties).
TARGETS = np.array([-3.0, -2.5, -1.2, -0.4, 0.0, 0.0, 0.6, 1.5, 2.2, 3.0, 0.4, -0.6])
PREDICTIONS = np.array([-2.1, -2.5, 0.3, -0.1, 0.2, -0.3, 1.4, 0.5, 3.6, 2.4, -0.2, 0.0])


def reference(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """The figures as the MulT evaluation script computes them, plus the has0 convention."""
    non0 = targets != 0
    return {
        "mae": float(np.mean(np.abs(predictions - targets))),
        "corr": float(pearsonr(predictions, targets)[0]),
        "acc7": float(
            np.mean(np.round(np.clip(predictions, -3, 3)) == np.round(np.clip(targets, -3, 3)))
        ),
        "acc5": float(
            np.mean(np.round(np.clip(predictions, -2, 2)) == np.round(np.clip(targets, -2, 2)))
        ),
        "acc2_has0": accuracy_score(targets >= 0, predictions >= 0),
        "f1_has0": f1_score(targets >= 0, predictions >= 0, average="weighted"),
        "acc2_non0": accuracy_score(targets[non0] > 0, predictions[non0] > 0),
        "f1_non0": f1_score(targets[non0] > 0, predictions[non0] > 0, average="weighted"),
    }


def computed(predictions: np.ndarray, targets: np.ndarray, chunks: int = 1) -> dict[str, float]:
    metrics = regression_metrics(1, "test")
    for p, t in zip(
        np.array_split(predictions, chunks), np.array_split(targets, chunks), strict=True
    ):
        metrics.update(torch.tensor(p, dtype=torch.float32), torch.tensor(t, dtype=torch.float32))
    return {key.split("/")[1]: float(value) for key, value in metrics.compute().items()}


@pytest.mark.parametrize("chunks", [1, 5])
def test_metrics_match_numpy_scipy_and_sklearn(chunks):
    expected = reference(PREDICTIONS, TARGETS)
    got = computed(PREDICTIONS, TARGETS, chunks)
    assert set(got) == set(expected)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_conventions_differ_where_zeros_are_predicted_or_true():
    # Target 0 with prediction 0.2: right under has0 (both >= 0), absent under non0.
    # Target 0.4 with prediction -0.2: wrong under both.
    got = computed(np.array([0.2, -0.2, 1.0]), np.array([0.0, 0.4, 2.0]))
    assert got["acc2_has0"] == pytest.approx(2 / 3)
    assert got["acc2_non0"] == pytest.approx(1 / 2)


def test_random_inputs_agree_with_the_references():
    rng = np.random.default_rng(0)
    targets = np.round(rng.uniform(-3, 3, 400) * 3) / 3  # MOSI averages of 3 annotators
    predictions = targets + rng.normal(0, 0.8, 400)
    expected, got = reference(predictions, targets), computed(predictions, targets, 7)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-5), name


def test_correlation_of_a_constant_prediction_is_zero_not_nan():
    metric = PearsonCorrelation()
    metric.update(torch.full((5,), 0.7), torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))
    assert float(metric.compute()) == 0.0


def test_only_one_output_is_accepted():
    with pytest.raises(ValueError, match="one value per sample"):
        regression_metrics(3, "val")
