"""Trainer presets compose with the intended devices and precision; bf16 trains on CPU."""

import math

import pytest

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
