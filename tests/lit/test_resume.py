"""Interrupted runs resume to the figures of the uninterrupted run."""

import json
import signal

import pytest
import torch

from mmexp.lit.preemption import Preempted
from mmexp.train import train
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES, compose_config

# 240 training samples in batches of 32: 8 steps per epoch, 2 epochs. Dropout on, so the
# generator states matter; the order reshuffles each epoch, so the loader position does.
RUN = ["trainer.max_epochs=2", "model.head.dropout=0.3", "seed=11"]
COMPARED = ("val/loss", "val/acc", "test/loss", "test/acc", "train/loss_epoch", "train/acc")


def weights(checkpoint: str) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("uninterrupted")
    result = train(compose_config("train", [*FAST_OVERRIDES, *RUN], out, data_dir))
    return result


def _assert_same_run(resumed: dict, reference: dict) -> None:
    for name in COMPARED:
        assert resumed["metrics"][name] == pytest.approx(reference["metrics"][name], abs=1e-6), name
    ours, theirs = weights(resumed["last_checkpoint"]), weights(reference["last_checkpoint"])
    assert ours.keys() == theirs.keys()
    for key in ours:
        difference = (ours[key].float() - theirs[key].float()).abs().max().item()
        assert difference <= 1e-6, f"{key} differs by up to {difference:.3g}"


@pytest.mark.parametrize(
    "signal_name", ["SIGTERM", pytest.param("SIGUSR1", marks=pytest.mark.slow)]
)
def test_signal_mid_epoch_saves_and_the_resumed_run_matches(
    make_train_cfg, uninterrupted, signal_name
):
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.SignalAtStep",
        "+callbacks.fault.step=10",
        f"+callbacks.fault.signal={signal_name}",
    ]
    with pytest.raises(Preempted) as stopped:
        train(make_train_cfg(*RUN, *fault, run_name=signal_name))
    # The signal comes after step 11 (this callback runs after the one that saves), so the
    # save follows step 12: batch 4 of epoch 1, mid-epoch, after one epoch-end checkpoint.
    assert stopped.value.step == 12 and stopped.value.code == 128 + signal.Signals[signal_name]
    assert f"stopped by {signal_name} after step 12" in str(stopped.value)
    saved = torch.load(stopped.value.checkpoint, weights_only=True)
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"] == 4
    record = json.loads((stopped.value.checkpoint.parents[1] / "results.json").read_text())
    assert record["status"] == "interrupted"
    assert record["resume_from"] == str(stopped.value.checkpoint)

    resumed = train(make_train_cfg(*RUN, "ckpt_path=last", run_name=signal_name))
    _assert_same_run(resumed, uninterrupted)


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_epoch_checkpoint(tmp_path, data_dir, uninterrupted):
    """SIGKILL leaves no chance to save: the epoch-end last.ckpt is what resumes."""
    out = tmp_path / "killed"
    run = [*RUN, f"paths.data_dir={data_dir}", f"hydra.run.dir={out}"]
    env = {"WANDB_MODE": "disabled"}
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.KillAtStep",
        "+callbacks.fault.step=12",
    ]
    run_cli(
        "train",
        *run,
        *fault,
        cwd=tmp_path,
        fast=FAST_OVERRIDES,
        env=env,
        returncode=-signal.SIGKILL,
    )
    last = out / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 0  # written at the end of epoch 0
    assert not list(out.glob("checkpoints/.*.tmp"))

    run_cli("train", *run, "ckpt_path=last", cwd=tmp_path, fast=FAST_OVERRIDES, env=env)
    _assert_same_run(json.loads((out / "results.json").read_text()), uninterrupted)


@pytest.fixture(scope="module")
def accumulated(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("accumulated")
    cfg = compose_config("train", [*FAST_OVERRIDES, *RUN, *ACCUMULATE], out, data_dir)
    return train(cfg)


# Two batches per optimizer step: 4 steps an epoch.
ACCUMULATE = ["+trainer.accumulate_grad_batches=2"]


def test_a_signal_inside_an_accumulation_window_resumes_to_the_uninterrupted_run(
    make_train_cfg, accumulated
):
    # The signal comes after optimizer step 5 (batch 9, the second of epoch 1's first
    # window) and is acted on after the next batch, the first half of a window: a save
    # there would lose that half's gradient on resume.
    fault = [
        "+callbacks.fault._target_=tests.helpers.faults.SignalAtStep",
        "+callbacks.fault.step=4",
        "+callbacks.fault.signal=SIGTERM",
    ]
    with pytest.raises(Preempted) as stopped:
        train(make_train_cfg(*RUN, *ACCUMULATE, *fault, run_name="accumulate"))
    saved = torch.load(stopped.value.checkpoint, weights_only=True)
    processed = saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["processed"]
    # Saved mid-epoch, at a window's end.
    assert 0 < processed < 8 and processed % 2 == 0, processed
    resumed = train(make_train_cfg(*RUN, *ACCUMULATE, "ckpt_path=last", run_name="accumulate"))
    _assert_same_run(resumed, accumulated)
