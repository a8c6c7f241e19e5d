"""Robustness results on shapes say what the tasks' construction predicts.

The shapes tasks fix which modality carries the label, so the robustness grid's numbers have
known answers: a modality that carries nothing can be dropped for free and one that carries
everything cannot; a model trained with modality dropout (ModDrop) on a redundant task keeps
its accuracy with either modality missing; and late fusion with one modality missing is
exactly that modality's own classifier. Where learning is involved the claims are about the
median over three training seeds; the data and test split are fixed (generator seed).
"""

import json
import statistics
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import accuracy_score

from mmexp.builders import build_data_and_model
from mmexp.data.missing import MissingModalities
from mmexp.train import train
from mmexp.utils.checkpoints import load_checkpoint

SEEDS = (0, 1, 2)
CHANCE = 1 / 3  # the shape tasks have three classes
# Large enough that chance-level accuracy lies within a few points of 1/3 (its standard
# deviation over test sets is 0.021 at 500 samples) and training reaches ~0.95 in 8 epochs.
SIZES = [
    "data.num_train=800",
    "data.num_val=100",
    "data.num_test=500",
    "data.eval_batch_size=250",
    "trainer.max_epochs=8",
    "callbacks.early_stopping=null",
    "++callbacks.test_report=null",
]
# How far below clean accuracy a subset may fall after training with modality dropout
# (measured: 5 points or less).
DROPOUT_TOLERANCE = 0.1
# every subset, plus the text missing from half the test samples (the late-fusion check)
GRID = ["robustness=missing", "robustness.missing_rates=[0.5,1.0]"]


def robustness_of(make_train_cfg, *overrides: str, seed: int = 0, run_name: str = "run") -> dict:
    cfg = make_train_cfg(*GRID, *overrides, f"seed={seed}", run_name=f"{run_name}-{seed}")
    result = train(cfg)
    payload = json.loads(Path(result["robustness"]["file"]).read_text())
    payload["result"] = result
    return payload


def accuracies(payload: dict) -> dict[str, float]:
    return {name: entry["metrics"]["acc"] for name, entry in payload["conditions"].items()}


def median_accuracies(make_train_cfg, *overrides: str, run_name: str) -> dict[str, float]:
    """Each condition's accuracy, the median over :data:`SEEDS`."""
    runs = [
        accuracies(robustness_of(make_train_cfg, *overrides, seed=seed, run_name=run_name))
        for seed in SEEDS
    ]
    return {name: statistics.median(run[name] for run in runs) for name in runs[0]}


@pytest.mark.slow
def test_unique_text_loses_everything_without_text_and_nothing_without_the_image(make_train_cfg):
    # The image is drawn independently of the label: a model left with it alone is at
    # chance whatever it learnt, and one left with the text has all the label's evidence.
    # Measured (medians): clean 0.934, image alone 0.326, text alone 0.932.
    acc = median_accuracies(make_train_cfg, *SIZES, "data.task=unique_text", run_name="ut")
    assert acc["clean"] > 0.85, acc
    assert abs(acc["subset:image"] - CHANCE) < 0.05, acc
    assert abs(acc["subset:text"] - acc["clean"]) < 0.05, acc


# Redundant task: either modality alone carries the label. Elementwise product fusion: a
# model trained on complete samples only ever saw the product of both modalities' features.
REDUNDANT = [
    *SIZES,
    "data.task=redundant",
    "data.num_train=1200",
    "trainer.max_epochs=12",
    "fusion=product",
]


@pytest.mark.slow
def test_modality_dropout_keeps_the_accuracy_with_either_modality_missing(make_train_cfg):
    # Measured (medians): clean 0.99, image alone 0.94, text alone 0.946. At 0.5 the text
    # path lags (0.914); at 0.7 each modality is trained alone in 45% of the samples.
    acc = median_accuracies(
        make_train_cfg, *REDUNDANT, "model.modality_dropout=0.7", run_name="moddrop"
    )
    assert acc["clean"] > 0.95, acc
    for subset in ("subset:image", "subset:text"):
        assert acc["clean"] - acc[subset] < DROPOUT_TOLERANCE, (subset, acc)


@pytest.mark.slow
def test_without_modality_dropout_a_missing_modality_costs_most_of_the_accuracy(make_train_cfg):
    # One modality's features alone are out of the range the product fusion was trained on:
    # measured (medians) clean 0.994, image alone 0.256, text alone 0.32 (chance 0.33).
    acc = median_accuracies(make_train_cfg, *REDUNDANT, run_name="complete")
    assert acc["clean"] > 0.95, acc
    worst = min(acc["subset:image"], acc["subset:text"])
    assert worst - CHANCE < 0.5 * (acc["clean"] - CHANCE), acc


def test_late_fusion_missing_a_modality_is_that_modalitys_own_classifier(make_train_cfg):
    # One epoch: the claim is exact whatever the weights are worth.
    payload = robustness_of(
        make_train_cfg, "fusion=late", "fusion.combine=mean", "trainer.max_epochs=1"
    )
    checkpoint = load_checkpoint(payload["result"]["best_checkpoint"])
    # The scored weights are the best checkpoint's, rebuilt here independently of the probe.
    datamodule, module = build_data_and_model(OmegaConf.create(checkpoint["mmexp_config"]))
    module.load_state_dict(checkpoint["state_dict"])
    module.eval()
    datamodule.setup("test")
    modalities = list(module.encoders)
    logits: dict[str, list[torch.Tensor]] = {m: [] for m in modalities}
    labels, indices = [], []
    with torch.no_grad():
        for batch in datamodule.test_dataloader():
            for m in modalities:
                pooled = module.encoders[m](batch[m]).pooled
                logits[m].append(module.fusion.classifiers[m](pooled))
            labels.append(batch["label"])
            indices.append(batch["index"])
    own = {m: torch.cat(parts) for m, parts in logits.items()}
    y, index = torch.cat(labels), torch.cat(indices)
    n = len(y)
    conditions = payload["conditions"]
    for m in modalities:
        expected = accuracy_score(y.numpy(), own[m].argmax(1).numpy())
        scored = conditions[f"subset:{m}"]["metrics"]
        # The metric is float32: equal to 1e-6, while one prediction is worth 1/n.
        assert scored["acc"] == pytest.approx(expected, abs=1e-6) and 1 / n > 1e-4
        loss = torch.nn.functional.cross_entropy(own[m], y).item()
        assert scored["loss"] == pytest.approx(loss, rel=1e-5)
    # The other end of the text's missing-rate curve is the image classifier too, and half
    # way each sample is scored by the image classifier alone or by the mean of both.
    assert (
        conditions["missing:text@1"]["metrics"]["acc"]
        == conditions["subset:image"]["metrics"]["acc"]
    )
    missing = MissingModalities({"text": 0.5}, seed=0, splits=("test",))
    has_text = missing.present("test", index, modalities)["text"]
    assert 0.4 < float(has_text.float().mean()) < 0.6
    mixed = torch.where(has_text[:, None], (own["image"] + own["text"]) / 2, own["image"]).argmax(1)
    assert conditions["missing:text@0.5"]["metrics"]["acc"] == pytest.approx(
        accuracy_score(y.numpy(), mixed.numpy()), abs=1e-6
    )
