"""Unimodal auxiliary losses and Gradient-Blending: weights, losses and their wiring."""

from __future__ import annotations

import csv

import pytest
import torch
from torch.nn import functional as F

from mmexp.builders import build_module, encoder_processors, instantiate_datamodule
from mmexp.train import train
from mmexp.training.unimodal_losses import GradientBlending, UnimodalLosses, blending_weights

# Hand-computed window: fused val 1.0 -> 0.6 (dG 0.4), overfitting 0.1 -> 0.3 (dO 0.2):
# 0.4 / 0.04 = 10; audio val 1.2 -> 1.0 (dG 0.2), overfitting 0.1 -> 0.2 (dO 0.1):
# 0.2 / 0.01 = 20; visual val 1.0 -> 1.1 got worse: 0. Normalised: 1/3, 2/3, 0.
START = {
    "train": {"fused": 0.9, "audio": 1.1, "visual": 0.9},
    "val": {"fused": 1.0, "audio": 1.2, "visual": 1.0},
}
END = {
    "train": {"fused": 0.3, "audio": 0.8, "visual": 0.5},
    "val": {"fused": 0.6, "audio": 1.0, "visual": 1.1},
}


def test_blending_weights_on_a_hand_computed_window():
    weights = blending_weights(START, END)
    assert weights == pytest.approx({"fused": 1 / 3, "audio": 2 / 3, "visual": 0.0})


def test_no_head_that_generalised_gives_uniform_weights():
    worse = {"train": START["train"], "val": {k: v + 1 for k, v in START["val"].items()}}
    assert blending_weights(START, worse) == pytest.approx(dict.fromkeys(START["val"], 1 / 3))


def test_a_head_that_does_not_overfit_is_floored_not_infinite():
    flat = {"train": {"a": 1.0, "b": 1.0}, "val": {"a": 1.0, "b": 1.0}}
    later = {"train": {"a": 0.5, "b": 0.5}, "val": {"a": 0.5, "b": 0.9}}
    # a: dG 0.5, dO 0 floored at 0.01 -> 5000; b: dG 0.1, dO 0.4 -> 0.625
    weights = blending_weights(flat, later, min_overfitting=0.01)
    assert weights["a"] == pytest.approx(5000 / 5000.625)


def feed(blend: GradientBlending, epoch_losses: dict) -> None:
    for split in ("train", "val"):
        # two steps of 10 samples whose mean is the epoch's loss
        for offset in (-0.05, 0.05):
            blend.observe(
                split, {k: torch.tensor(v + offset) for k, v in epoch_losses[split].items()}, 10
            )


def test_gradient_blending_is_uniform_until_its_first_window_closes_then_follows_it():
    blend = GradientBlending(super_epoch=2)
    blend.build({"audio": 4, "visual": 4}, num_classes=3)
    uniform = dict.fromkeys(("fused", "audio", "visual"), 1 / 3)
    assert blend.weights() == pytest.approx(uniform)
    middle = {s: {k: (START[s][k] + END[s][k]) / 2 for k in START[s]} for s in START}
    # epoch 0 opens the window; it closes after two more epochs, at epoch 2
    for epoch, losses in enumerate((START, middle)):
        feed(blend, losses)
        blend.end_epoch(epoch, reduce=lambda t: t)
        assert blend.weights() == pytest.approx(uniform), epoch
    feed(blend, END)
    blend.end_epoch(2, reduce=lambda t: t)
    assert blend.weights() == pytest.approx(blending_weights(START, END), rel=1e-4)
    # the next window (END -> END: nothing generalised) closes at epoch 4, not 3
    for epoch in (3, 4):
        feed(blend, END)
        blend.end_epoch(epoch, reduce=lambda t: t)
        expected = blending_weights(START, END) if epoch == 3 else uniform
        assert blend.weights() == pytest.approx(expected, rel=1e-4), epoch
    # the estimate and the window travel in checkpoints
    feed(blend, START)
    blend.end_epoch(5, reduce=lambda t: t)
    again = GradientBlending(super_epoch=2)
    again.build({"audio": 4, "visual": 4}, num_classes=3)
    again.load_state_dict(blend.state_dict())
    assert again.weights() == pytest.approx(blend.weights())
    for model in (blend, again):
        feed(model, middle)
        model.end_epoch(6, reduce=lambda t: t)
    assert again.weights() == pytest.approx(blend.weights())
    assert blend.weights() == pytest.approx(blending_weights(END, middle), rel=1e-4)


def test_a_validation_without_training_leaves_nothing_behind():
    blend = GradientBlending(super_epoch=1)
    blend.build({"audio": 4, "visual": 4}, num_classes=3)
    blend.observe("val", {k: torch.tensor(9.0) for k in blend.names}, 10)
    blend.end_epoch(0, reduce=lambda t: t)  # trainer.validate: no training losses
    feed(blend, START)
    blend.end_epoch(0, reduce=lambda t: t)
    feed(blend, END)
    blend.end_epoch(1, reduce=lambda t: t)
    assert blend.weights() == pytest.approx(blending_weights(START, END), rel=1e-4)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("trainer.check_val_every_n_epoch=2", "check_val_every_n_epoch=2"),
        ("+trainer.val_check_interval=0.5", "val_check_interval=0.5"),
        ("+trainer.limit_val_batches=0", "limit_val_batches=0"),
    ],
)
def test_trainer_settings_without_one_validation_per_epoch_are_refused(
    make_train_cfg, override, message
):
    cfg = make_train_cfg("training=gradient_blending", override)
    with pytest.raises(ValueError, match=message):
        train(cfg)


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: UnimodalLosses(weight=-1), "must be >= 0"),
        (lambda: GradientBlending(super_epoch=0), "super_epoch must be >= 1"),
        (lambda: GradientBlending(min_overfitting=0), "min_overfitting must be > 0"),
    ],
)
def test_bad_settings_are_refused_by_name(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_the_training_loss_adds_each_modalitys_own_classifier(make_train_cfg):
    cfg = make_train_cfg("training=unimodal_aux", "model.unimodal_losses.weight=0.5")
    module = build_module(cfg, num_classes=3)
    datamodule = instantiate_datamodule(cfg)
    datamodule.prepare_data()
    datamodule.set_processors(*encoder_processors(module))
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    module.eval()  # no dropout: the two computations below see the same network
    with torch.no_grad():
        logits, loss, parts = module._training_losses(batch)
        features = module.encode(batch)
        labels = batch["label"]
        task = F.cross_entropy(module.predict_from_features(features), labels)
        own = {
            m: F.cross_entropy(module.unimodal_losses.heads[m](features[m].pooled), labels)
            for m in ("image", "text")
        }
    assert set(parts) == {"task_loss", "image_loss", "text_loss"}
    torch.testing.assert_close(parts["task_loss"], task)
    torch.testing.assert_close(parts["image_loss"], own["image"])
    torch.testing.assert_close(loss, task + 0.5 * (own["image"] + own["text"]))


def test_a_gradient_blending_run_logs_weights_that_sum_to_one_and_move(make_train_cfg):
    cfg = make_train_cfg(
        "training=gradient_blending",
        "model.unimodal_losses.super_epoch=1",
        "trainer.max_epochs=3",
        "callbacks.early_stopping=null",
    )
    train(cfg)
    with open(f"{cfg.paths.output_dir}/csv/metrics.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("gblend/fused/weight")]
    heads = ("fused", "image", "text")
    weights = [[float(r[f"gblend/{h}/weight"]) for h in heads] for r in rows]
    assert len(weights) == 3
    assert weights[0] == pytest.approx([1 / 3] * 3)  # the first epoch opens the window
    for epoch in weights:
        assert sum(epoch) == pytest.approx(1.0, abs=1e-6)
        assert min(epoch) >= 0
    assert weights[1] != pytest.approx(weights[0])  # estimated from epochs 0 -> 1


def test_a_strategy_with_losses_of_its_own_refuses_unimodal_losses(make_train_cfg):
    cfg = make_train_cfg("training=unimodal_aux", "fusion=misa")
    with pytest.raises(ValueError, match="MISA.* trains with losses of its own"):
        build_module(cfg, num_classes=3)


def test_a_module_without_per_modality_heads_refuses_them_by_key(make_train_cfg):
    cfg = make_train_cfg("training=gradient_blending", "objective=contrastive")
    with pytest.raises(TypeError, match="model.unimodal_losses .* needs a classifier"):
        build_module(cfg, num_classes=3)
