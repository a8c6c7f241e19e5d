"""finetune=logistic_probe: CLIP's L-BFGS probe, checked against scikit-learn run here.

One tiny shapes run (frozen random towers, ``init=scratch``) is shared by most tests; its
features are extracted again here, from the towers alone, and the regression refitted with
scikit-learn.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.linear_model import LogisticRegression

from mmexp.assemble import assemble
from mmexp.eval import evaluate
from mmexp.finetune.logistic_probe import ABSENT_CLASS_LOGIT, head_parameters, parametric_search
from mmexp.resolve import resolve_run_config
from mmexp.utils.digest import tensors_digest
from tests.helpers.configs import compose_config
from tests.helpers.tiny_runs import train_tiny

# Weakly regularised fits stop at max_iter, as in the run: no warning for each.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Fewer L-BFGS iterations than CLIP's 1,000: the weakly regularised fits stop at the limit
# either way, and the tests' own scikit-learn fits use the same limit.
PROBE = ["finetune=logistic_probe", "init=scratch", "finetune.max_iter=200"]
MAX_ITER = 200


@pytest.fixture(scope="module")
def probe_run(tmp_path_factory, data_dir) -> dict:
    folder = tmp_path_factory.mktemp("probe")
    return train_tiny(folder, data_dir, *PROBE)


def rebuilt(run: dict):
    """The run's module and data as it built them (same seed: the towers' initial weights)."""
    cfg = OmegaConf.load(Path(run["run_dir"]) / "config.yaml")
    return assemble(cfg, "bench")


def tower_features(module, loader) -> tuple[np.ndarray, np.ndarray]:
    """Pooled tower outputs side by side (what concat fuses), rows in sample-index order."""
    module.eval()
    rows, labels, indices = [], [], []
    with torch.no_grad():
        for batch in loader:
            rows.append(
                torch.cat([module.encoders[m](batch[m]).pooled for m in ("image", "text")], 1)
            )
            labels.append(batch["label"])
            indices.append(batch["index"])
    order = torch.argsort(torch.cat(indices))
    return torch.cat(rows)[order].double().numpy(), torch.cat(labels)[order].numpy()


@pytest.fixture(scope="module")
def splits(probe_run) -> dict:
    """Features of every split from the initial towers, and the tested checkpoint's model."""
    run = rebuilt(probe_run)
    data = run.datamodule
    features = {
        "train": tower_features(run.module, data.train_dataloader()),
        "val": tower_features(run.module, data.val_dataloader()),
        "test": tower_features(run.module, data.test_dataloader()),
    }
    initial = tensors_digest(run.module.encoders.state_dict())
    state = torch.load(probe_run["best_checkpoint"], weights_only=True)
    run.module.load_state_dict(state["state_dict"])
    return {
        "features": features,
        "initial": initial,
        "module": run.module,
        "data": data,
        "state": state,
    }


def sklearn_fit(features, c: float) -> LogisticRegression:
    x, y = features["train"]
    return LogisticRegression(C=c, solver="lbfgs", max_iter=MAX_ITER).fit(x, y)


def test_head_logits_are_sklearn_decision_function(probe_run, splits):
    report = probe_run["logistic_probe"]
    assert report["max_iter"] == MAX_ITER
    reference = sklearn_fit(splits["features"], report["C"])
    x_test, y_test = splits["features"]["test"]
    module = splits["module"].eval()
    with torch.no_grad():
        batches = list(splits["data"].test_dataloader())
        logits = torch.cat([module(batch) for batch in batches])
    logits = logits[torch.argsort(torch.cat([batch["index"] for batch in batches]))]
    expected = reference.decision_function(x_test)
    assert expected.ndim == 2  # three shapes: multinomial
    np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-4, atol=1e-4)
    accuracy = float(np.mean(reference.predict(x_test) == y_test))
    assert probe_run["metrics"]["test/acc"] == pytest.approx(accuracy, abs=1e-6)


def test_chosen_c_is_the_best_of_the_sweep(probe_run, splits):
    report = probe_run["logistic_probe"]
    x_val, y_val = splits["features"]["val"]
    accuracy = {}
    for point in report["sweep"]:
        model = sklearn_fit(splits["features"], point["C"])
        accuracy[point["log10_C"]] = float(np.mean(model.predict(x_val) == y_val))
        assert point["val/acc"] == pytest.approx(accuracy[point["log10_C"]], abs=1e-6)
    best = max(accuracy.values())
    assert report["log10_C"] == min(e for e, a in accuracy.items() if a == best)
    assert report["C"] == pytest.approx(10 ** report["log10_C"])
    # CLIP's search: the seven-point grid, then four halvings (two points each) to 1/8 decade
    assert {-6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0} <= set(accuracy)
    assert 9 <= len(accuracy) <= 15
    assert all(float(e * 8).is_integer() for e in accuracy)
    # validation of the fitted head, through the trainer, scores what the sweep scored
    assert probe_run["metrics"]["val/acc"] == pytest.approx(best, abs=1e-6)
    assert probe_run["metrics"]["val/acc_best"] == pytest.approx(best, abs=1e-6)


def test_no_gradient_step_and_the_towers_are_unchanged(probe_run, splits):
    state = splits["state"]
    assert state["global_step"] == 0
    assert probe_run["best_checkpoint"] == probe_run["last_checkpoint"]
    assert tensors_digest(splits["module"].encoders.state_dict()) == splits["initial"]
    weight, bias = head_parameters(
        sklearn_fit(splits["features"], probe_run["logistic_probe"]["C"]),
        splits["module"].num_classes,
    )
    torch.testing.assert_close(state["state_dict"]["head.weight"], torch.tensor(weight).float())
    torch.testing.assert_close(state["state_dict"]["head.bias"], torch.tensor(bias).float())
    lineage = probe_run["pretrained_from"]
    assert lineage["protocol"] == "logistic_probe" and lineage["towers"] == ["image", "text"]


def test_the_checkpoint_evaluates_to_the_same_metrics(probe_run, tmp_path, data_dir):
    cfg = compose_config(
        "eval",
        [f"ckpt_path={probe_run['best_checkpoint']}", "logger=csv", "trainer.accelerator=cpu"],
        tmp_path / "eval",
        data_dir,
    )
    evaluated = evaluate(cfg)
    assert evaluated["metrics"]["test/acc"] == pytest.approx(probe_run["metrics"]["test/acc"])
    record = json.loads((Path(probe_run["run_dir"]) / "results.json").read_text())
    assert record["logistic_probe"]["C"] == probe_run["logistic_probe"]["C"]


def test_feature_cache_gives_the_same_probe(probe_run, tmp_path, data_dir):
    cached = train_tiny(
        tmp_path / "cached",
        data_dir,
        *PROBE,
        "feature_cache.enabled=true",
        f"feature_cache.dir={tmp_path / 'cache'}",
    )
    assert cached["feature_cache"]  # the features came from the cache's data module
    assert cached["logistic_probe"]["C"] == probe_run["logistic_probe"]["C"]
    for point, reference in zip(
        cached["logistic_probe"]["sweep"], probe_run["logistic_probe"]["sweep"], strict=True
    ):
        assert point["val/acc"] == reference["val/acc"]
    for name in ("val/acc", "test/acc", "test/loss"):
        assert cached["metrics"][name] == pytest.approx(probe_run["metrics"][name], abs=1e-5)


@pytest.mark.parametrize("peak", [-5.3, 0.0, 1.3, 5.95])
def test_parametric_search_finds_a_peak_at_eight_steps_per_decade(peak):
    visited = []

    def score(exponent):
        visited.append(exponent)
        return -((exponent - peak) ** 2)

    best, scores = parametric_search(score)
    assert abs(best - peak) <= 1 / 16 + 1e-9
    assert sorted(visited) == sorted(scores) and len(visited) <= 15
    assert parametric_search(lambda e: (e - peak) ** 2, maximize=False)[0] == best


def test_parametric_search_breaks_ties_towards_regularisation():
    best, _ = parametric_search(lambda e: float(e >= 0), maximize=True)
    assert best == 0.0
    assert parametric_search(lambda e: math.nan if e < 6 else 1.0)[0] == 6.0


@pytest.mark.parametrize("classes", [2, 3])
def test_head_parameters_reproduce_sklearn_probabilities(classes):
    generator = np.random.default_rng(0)
    x = generator.normal(size=(60, 5))
    y = np.arange(60) % classes * 2  # labels 0, 2 (, 4): class 1 (and 3) absent
    model = LogisticRegression(C=0.5, solver="lbfgs", max_iter=1000).fit(x, y)
    weight, bias = head_parameters(model, num_classes=2 * classes - 1)
    logits = x @ weight.T + bias
    decision = model.decision_function(x)
    if classes == 2:
        np.testing.assert_allclose(logits[:, 2], decision)
        np.testing.assert_allclose(logits[:, 0], 0.0)
    else:
        np.testing.assert_allclose(logits[:, [0, 2, 4]], decision)
    assert np.all(logits[:, 1] == ABSENT_CLASS_LOGIT)
    probabilities = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(probabilities[:, model.classes_], model.predict_proba(x), atol=1e-9)


def built(make_train_cfg, *overrides):
    return assemble(resolve_run_config(make_train_cfg(*PROBE, *overrides), "train"), "bench")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["objective=multilabel"], "needs objective=classify.*MultilabelBCELoss"),
        (["objective=regression"], "needs objective=classify.*MultimodalRegressor"),
        (["fusion=gated"], "logistic_probe: fusion GatedFusion has .* parameters"),
        (["fusion=late"], "logistic_probe needs a feature-level fusion.*LateFusion"),
        (["model.modality_dropout=0.3"], "model.modality_dropout: finetune=logistic_probe"),
        (["finetune.log10_c_range=[2,-2]"], "finetune.log10_c_range must be"),
        (["finetune.initial_step=0"], "finetune.initial_step must be"),
    ],
)
def test_bad_input_is_refused_before_any_fit(make_train_cfg, overrides, message):
    with pytest.raises(Exception, match=message):
        built(make_train_cfg, *overrides)


def test_towers_from_scratch_are_frozen_too(make_train_cfg):
    run = built(make_train_cfg, "finetune.towers=[text]")
    assert run.lineage["frozen_from_scratch"] == ["image"]
    trainable = [n for n, p in run.module.named_parameters() if p.requires_grad]
    assert trainable == ["head.weight", "head.bias"]


def test_resuming_a_probe_is_refused(probe_run, tmp_path, data_dir):
    with pytest.raises(ValueError, match="ckpt_path=.*nothing to resume"):
        train_tiny(
            tmp_path / "resume", data_dir, *PROBE, f"ckpt_path={probe_run['best_checkpoint']}"
        )
