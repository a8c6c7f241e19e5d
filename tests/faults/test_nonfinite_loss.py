"""NaN training loss: the run stops naming where, or skips the batch; no NaN weights on disk.

240 training samples in batches of 32: 8 steps per epoch, 2 epochs (steps 0-15). The other
runs are shorter: 128 samples (4 steps per epoch), 192 for the run stopping at step 5, and
32 validation samples; none reaches the test stage.
"""

import json
import re
from pathlib import Path

import pytest
import torch

from mmexp.lit.nonfinite import NonFiniteLossError
from mmexp.train import train

NAN = ["+callbacks.nan._target_=tests.helpers.faults.NanLossAtStep"]
SKIP = ["callbacks.non_finite_loss.action=skip"]
SHORT = ["data.num_train=128", "data.num_val=32", "data.num_test=32", "test=false"]


def assert_finite(tensors: dict[str, torch.Tensor], where: str) -> None:
    bad = [
        name
        for name, value in tensors.items()
        if value.is_floating_point() and not torch.isfinite(value).all()
    ]
    assert not bad, f"{where}: non-finite {bad}"


def saved_checkpoints(run: Path) -> list[Path]:
    return sorted((run / "checkpoints").glob("*.ckpt"))


def record(run: Path) -> dict:
    return json.loads((run / "results.json").read_text())


def test_stop_names_epoch_step_batch_and_the_last_good_checkpoint(make_train_cfg):
    cfg = make_train_cfg(*NAN, "+callbacks.nan.step=10", "data.num_val=32")
    run = Path(cfg.paths.output_dir)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(cfg)
    message = str(stopped.value)
    # step 10 is batch 2 of epoch 1; the last save was last.ckpt at the end of epoch 0
    assert "at epoch 1, step 10 (batch 2 of the epoch)" in message
    last = run / "checkpoints" / "last.ckpt"
    assert f"the last checkpoint before it is {last}" in message
    assert "callbacks.non_finite_loss.action=skip" in message
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 8
    assert_finite(checkpoint["state_dict"], str(last))
    for path in saved_checkpoints(run):  # nothing written after the NaN step
        assert torch.load(path, weights_only=True)["global_step"] <= 8, path
    saved = record(run)
    assert saved["status"] == "failed"
    assert saved["error"] == f"NonFiniteLossError: {message}"


@pytest.mark.parametrize(
    "fault",
    [
        # NaN at the last step of epoch 0: caught before validating (and checkpointing) it
        pytest.param(["+callbacks.nan.step=3"], id="before-validation"),
        # a signal asks for a checkpoint right after the NaN step: the save itself refuses
        pytest.param(
            [
                "+callbacks.nan.step=2",
                "+callbacks.signal._target_=tests.helpers.faults.SignalAtStep",
                "+callbacks.signal.step=1",
            ],
            id="signal-save",
        ),
        # step-triggered saves without a monitor: ModelCheckpoint names its file before saving
        pytest.param(
            [
                "+callbacks.nan.step=1",
                "callbacks.model_checkpoint.monitor=null",
                "+callbacks.model_checkpoint.every_n_train_steps=2",
            ],
            id="every-2-steps",
        ),
    ],
)
def test_stop_never_writes_a_checkpoint_of_poisoned_weights(make_train_cfg, fault):
    cfg = make_train_cfg(*SHORT, *NAN, *fault)
    run = Path(cfg.paths.output_dir)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(cfg)
    assert saved_checkpoints(run) == []
    assert not list(run.glob("checkpoints/.*.tmp"))
    # no checkpoint named that was never written
    assert "no checkpoint was written before it" in str(stopped.value)
    assert record(run)["status"] == "failed"


def test_skip_drops_one_nan_batch_and_training_completes(make_train_cfg):
    # every epoch saved, so the weights after the skipped step are on disk
    cfg = make_train_cfg(
        *SHORT, *NAN, "+callbacks.nan.step=5", *SKIP, "callbacks.model_checkpoint.save_top_k=-1"
    )
    run = Path(cfg.paths.output_dir)
    result = train(cfg)
    assert result["status"] == "completed"
    assert result["metrics"]["train/skipped_batches"] == 1
    # the NaN batch left neither the weights nor the normalization statistics poisoned
    assert result["metrics"]["val/loss"] is not None  # None in results.json means NaN
    epoch_1 = run / "checkpoints" / "epoch_001.ckpt"
    checkpoint = torch.load(epoch_1, weights_only=True)
    assert checkpoint["global_step"] == 8
    assert_finite(checkpoint["state_dict"], str(epoch_1))
    assert record(run)["metrics"]["train/skipped_batches"] == 1


def test_skip_stops_after_max_skips_in_a_row(make_train_cfg):
    cfg = make_train_cfg(
        *NAN,
        "+callbacks.nan.step=3",
        "+callbacks.nan.every=true",
        *SKIP,
        "callbacks.non_finite_loss.max_skips=2",
        *SHORT,
        "data.num_train=192",
    )
    run = Path(cfg.paths.output_dir)
    with pytest.raises(NonFiniteLossError) as stopped:
        train(cfg)
    # steps 3 and 4 skipped, the third NaN batch in a row (step 5) stops the run
    message = str(stopped.value)
    assert re.search(
        r"at epoch 0, step 5 \(batch 5 of the epoch\) \(3 batches in a row\)", message
    ), message
    assert "no checkpoint was written before it" in message
    assert saved_checkpoints(run) == []
    saved = record(run)
    assert saved["status"] == "failed" and "3 batches in a row" in saved["error"]
