"""The metric states a resume carries are the ones the modules declare, and exist."""

import pytest
from torchmetrics import Metric

from mmexp.builders import build_module
from mmexp.lit.classifier import MultimodalClassifier
from tests.helpers.configs import FAST_OVERRIDES, compose_config

OBJECTIVES = ["classify", "multilabel", "regression", "contrastive", "itm"]


@pytest.fixture(scope="module")
def modules(tmp_path_factory, data_dir):
    built = {}
    for objective in OBJECTIVES:
        out = tmp_path_factory.mktemp(objective)
        cfg = compose_config("train", [*FAST_OVERRIDES, f"objective={objective}"], out, data_dir)
        built[objective] = build_module(cfg, num_classes=3)
    return built


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_every_declared_name_holds_metrics_and_every_training_metric_is_declared(
    modules, objective
):
    module = modules[objective]
    carried = module.carried_metrics()
    for attribute in module.carried:
        held = [name for name in carried if name.split(".")[0] == attribute]
        assert held, f"{attribute} carries no metric"
    # Independently of the declaration: every metric under a train_* attribute or the
    # best value accumulates across steps or epochs, so it must be carried.
    accumulating = {
        name
        for name, metric in module.named_modules()
        if isinstance(metric, Metric)
        and (name.startswith("train_") or name.split(".")[0] == "best_monitored")
    }
    assert accumulating and accumulating == set(carried)


class Misspelled(MultimodalClassifier):
    carried = (*MultimodalClassifier.carried, "train_metricz")


class NotAMetric(MultimodalClassifier):
    carried = (*MultimodalClassifier.carried, "head")


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (
            Misspelled,
            r"Misspelled\.carried names 'train_metricz', but Misspelled\.train_metricz "
            r"is no attribute",
        ),
        (
            NotAMetric,
            r"NotAMetric\.carried names 'head', but NotAMetric\.head is \w+, not a "
            r"torchmetrics Metric",
        ),
    ],
    ids=["misspelled", "not_a_metric"],
)
def test_a_name_that_holds_no_metric_is_refused_with_class_and_attribute(
    make_train_cfg, cls, message
):
    cfg = make_train_cfg()
    cfg.objective.module._target_ = f"{__name__}.{cls.__name__}"
    module = build_module(cfg, num_classes=3)
    with pytest.raises(TypeError, match=message):
        module.carried_metrics()
