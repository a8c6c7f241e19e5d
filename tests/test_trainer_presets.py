"""Trainer presets compose with the intended devices and precision; bf16 trains on CPU;
gradient accumulation trains as the larger batch."""

import math

import pytest
import torch

from mmexp.train import train
from tests.helpers.configs import compose_config


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("gpu", {"accelerator": "gpu", "devices": 1, "precision": "bf16-mixed"}),
        (
            "ddp",
            {
                "accelerator": "gpu",
                "devices": -1,
                "precision": "bf16-mixed",
                "sync_batchnorm": True,
            },
        ),
        ("ddp_cpu", {"accelerator": "cpu", "devices": 2}),
        ("cpu", {"accelerator": "cpu", "deterministic": True}),
    ],
)
def test_presets_compose_their_devices_and_precision(tmp_path, data_dir, preset, expected):
    cfg = compose_config("train", [f"trainer={preset}"], tmp_path / "run", data_dir)
    assert {key: cfg.trainer[key] for key in expected} == expected
    if preset == "ddp":
        assert cfg.trainer.strategy._target_ == "pytorch_lightning.strategies.DDPStrategy"
        assert cfg.trainer.sync_batchnorm is True


@pytest.mark.slow
def test_bf16_mixed_precision_trains_on_cpu(make_train_cfg):
    full = train(make_train_cfg("trainer.max_epochs=1", run_name="fp32"))["metrics"]
    mixed = train(
        make_train_cfg("trainer.max_epochs=1", "trainer.precision=bf16-mixed", run_name="bf16")
    )["metrics"]
    assert math.isfinite(mixed["train/loss_epoch"]) and math.isfinite(mixed["test/loss"])
    # bf16 autocast changes the arithmetic: the same seed gives another loss
    assert mixed["train/loss_epoch"] != full["train/loss_epoch"]


def test_two_accumulated_batches_train_as_the_doubled_batch(make_train_cfg):
    # Text only (the image and audio encoders have batch norm, whose statistics differ
    # between one batch of 64 and two of 32), no dropout, 256 samples (no partial last
    # window). Lightning halves each micro-batch's loss, so the summed gradient is the
    # doubled batch's mean-loss gradient, clipped and stepped the same way.
    same = ["data.modalities=[text]", "model.head.dropout=0", "data.num_train=256"]
    same += ["trainer.max_epochs=2"]
    results, weights = [], []
    for run, extra in (
        ("accumulated", ["data.batch_size=32", "+trainer.accumulate_grad_batches=2"]),
        ("doubled", ["data.batch_size=64"]),
    ):
        cfg = make_train_cfg(*same, *extra, run_name=run)
        results.append(train(cfg))
        state = torch.load(results[-1]["last_checkpoint"], weights_only=True)
        weights.append(state["state_dict"])
        assert state["global_step"] == 2 * 256 // 64  # optimizer steps, not micro-batches
    assert weights[0].keys() == weights[1].keys()
    # the same up to float sums in another order (3e-5 at most after 8 Adam steps)
    for name in weights[0]:
        torch.testing.assert_close(weights[0][name], weights[1][name], atol=1e-4, rtol=1e-3)
    for metric in ("val/loss", "val/acc", "test/acc"):
        assert results[0]["metrics"][metric] == pytest.approx(
            results[1]["metrics"][metric], abs=1e-5
        ), metric
