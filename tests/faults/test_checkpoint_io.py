"""Checkpoint files under faults: disk full, truncated files, hostile configs and pickles.

Every failure names the file, and the checkpoint written before it stays loadable.
"""

import errno
import io
import json
import os
import re
from pathlib import Path

import pytest
import torch

from mmexp.eval import evaluate
from mmexp.lit import checkpoint_io
from mmexp.lit.checkpoint_io import (
    AtomicCheckpointIO,
    CheckpointReadError,
    CheckpointWriteError,
    atomic_save,
)
from mmexp.train import train
from mmexp.utils.checkpoints import check_targets, load_checkpoint
from tests.helpers.configs import FAST_OVERRIDES, compose_config

# 64 samples in batches of 32, one epoch, no test: a real checkpoint in a few seconds.
SMALL = [
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "trainer.max_epochs=1",
    "test=false",
]
# Training never reaches its first step when this callback stays silent.
NO_STEP = [
    "+callbacks.fault._target_=tests.helpers.faults.RaiseAtStep",
    "+callbacks.fault.step=0",
    "+callbacks.fault.message=training started",
]
NO_SPACE = "No space left on device"


def no_space() -> OSError:
    return OSError(errno.ENOSPC, NO_SPACE)


class FullDiskFile:
    """A file on a disk with ``room`` bytes left: writes that much, then ENOSPC."""

    def __init__(self, handle: io.BufferedWriter, room: int) -> None:
        self.handle, self.room = handle, room

    def write(self, data) -> int:
        self.handle.write(memoryview(data).cast("B")[: self.room])
        raise no_space()

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.handle.close()


def fill_disk_at_open(monkeypatch, failing_call: int, room: int = 1000) -> list[str]:
    """From the ``failing_call``-th file ``checkpoint_io`` opens on, the disk is full."""
    opened: list[str] = []

    def opener(file, mode="r", *args, **kwargs):
        handle = open(file, mode, *args, **kwargs)  # noqa: SIM115 - wrapped below
        opened.append(str(file))
        return FullDiskFile(handle, room) if len(opened) >= failing_call else handle

    monkeypatch.setattr(checkpoint_io, "open", opener, raising=False)
    return opened


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir) -> Path:
    """A real checkpoint (``last.ckpt``) of a short run."""
    run = tmp_path_factory.mktemp("trained") / "run"
    result = train(compose_config("train", [*FAST_OVERRIDES, *SMALL], run, data_dir))
    return Path(result["last_checkpoint"])


def state(step: float) -> dict:
    return {"state_dict": {"w": torch.full((64, 64), step)}, "global_step": int(step)}


@pytest.mark.parametrize("failure", ["fsync", "write"])
def test_disk_full_while_overwriting_keeps_the_previous_checkpoint(tmp_path, monkeypatch, failure):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(state(1), path)
    before = path.read_bytes()
    if failure == "fsync":  # everything written, the flush to disk fails

        def full(fd: int) -> None:
            raise no_space()

        monkeypatch.setattr(checkpoint_io.os, "fsync", full)
    else:  # the disk fills up halfway through the file
        fill_disk_at_open(monkeypatch, failing_call=1)
    with pytest.raises(CheckpointWriteError) as failed:
        AtomicCheckpointIO().save_checkpoint(state(2), path)
    message = str(failed.value)
    assert str(path) in message and NO_SPACE in message
    assert "the previous checkpoint there is intact" in message
    assert failed.value.__cause__.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["last.ckpt"]  # no temporary file left
    assert torch.load(path, weights_only=True)["global_step"] == 1


def test_disk_full_on_a_new_file_leaves_nothing_behind(tmp_path, monkeypatch):
    fill_disk_at_open(monkeypatch, failing_call=1)
    path = tmp_path / "checkpoints" / "epoch_000.ckpt"
    with pytest.raises(CheckpointWriteError, match="nothing saved") as failed:
        atomic_save(state(1), path)
    assert str(path) in str(failed.value)
    assert os.listdir(path.parent) == []


def test_disk_full_at_the_second_save_of_a_run_keeps_the_first(make_train_cfg, monkeypatch):
    # the end of epoch 0 writes epoch_000.ckpt (the best), then last.ckpt: that one fails
    opened = fill_disk_at_open(monkeypatch, failing_call=2)
    cfg = make_train_cfg(*SMALL)
    run = Path(cfg.paths.output_dir)
    with pytest.raises(CheckpointWriteError) as failed:
        train(cfg)
    first, last = run / "checkpoints" / "epoch_000.ckpt", run / "checkpoints" / "last.ckpt"
    assert [Path(p).name for p in opened] == [
        f".{first.name}.{os.getpid()}.tmp",
        f".{last.name}.{os.getpid()}.tmp",
    ]
    assert f"could not write checkpoint {last} ({NO_SPACE})" in str(failed.value)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [first.name]
    checkpoint = load_checkpoint(first)
    assert checkpoint["epoch"] == 0 and checkpoint["state_dict"]
    saved = json.loads((run / "results.json").read_text())
    assert saved["status"] == "failed"
    assert saved["error"].startswith("CheckpointWriteError: could not write checkpoint")
    assert NO_SPACE in saved["error"]


def truncated_copy(checkpoint: Path, folder: Path) -> Path:
    data = checkpoint.read_bytes()
    copy = folder / "truncated.ckpt"
    copy.write_bytes(data[: len(data) // 2])
    return copy


def test_resuming_from_a_truncated_checkpoint_fails_before_training(
    make_train_cfg, trained, tmp_path
):
    original = trained.read_bytes()
    broken = truncated_copy(trained, tmp_path)
    cfg = make_train_cfg(*SMALL, *NO_STEP, f"ckpt_path={broken}")
    with pytest.raises(CheckpointReadError) as failed:
        train(cfg)  # RaiseAtStep would have raised RuntimeError had a step run
    message = str(failed.value)
    assert message.startswith(f"ckpt_path: {broken} is not a readable checkpoint (truncated")
    run = Path(cfg.paths.output_dir)
    assert not list(run.glob("checkpoints/*"))
    saved = json.loads((run / "results.json").read_text())
    assert saved["status"] == "failed" and str(broken) in saved["error"]
    assert trained.read_bytes() == original


def test_eval_of_a_truncated_checkpoint_names_the_file(trained, tmp_path, data_dir):
    broken = truncated_copy(trained, tmp_path)
    eval_dir = tmp_path / "eval"
    cfg = compose_config(
        "eval",
        [f"ckpt_path={broken}", "trainer.accelerator=cpu", "callbacks=none"],
        eval_dir,
        data_dir,
    )
    unreadable = re.escape(f"ckpt_path: {broken} is not a readable checkpoint")
    with pytest.raises(CheckpointReadError, match=unreadable):
        evaluate(cfg)
    saved = json.loads((eval_dir / "results.json").read_text())
    assert saved["status"] == "failed" and str(broken) in saved["error"]


@pytest.mark.parametrize("key_path", ["model.head._target_", "fusion._target_"])
def test_a_config_naming_os_system_is_refused(trained, tmp_path, data_dir, monkeypatch, key_path):
    checkpoint = torch.load(trained, weights_only=True)
    node = checkpoint["mmexp_config"]
    *parents, _ = key_path.replace("[0]", ".0").split(".")
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    node["_target_"] = "os.system"
    hostile = tmp_path / "hostile.ckpt"
    atomic_save(checkpoint, hostile)
    expected = f"ckpt_path: {hostile}: {key_path}='os.system' is outside the modules"
    with pytest.raises(ValueError, match=re.escape(expected)):
        load_checkpoint(hostile)

    called = []
    monkeypatch.setattr(os, "system", lambda *args, **kwargs: called.append(args))
    cfg = compose_config(
        "eval",
        [f"ckpt_path={hostile}", "trainer.accelerator=cpu", "callbacks=none"],
        tmp_path / "eval",
        data_dir,
    )
    with pytest.raises(ValueError, match="refusing to build a model from it"):
        evaluate(cfg)
    assert called == []


def test_only_the_built_parts_are_checked_and_labs_can_trust_their_modules(monkeypatch):
    config = {
        "model": {"head": {"_target_": "mylab.heads.Probe"}},
        "callbacks": {"mine": {"_target_": "mylab.callbacks.Notify"}},
    }
    with pytest.raises(ValueError, match=r"model\.head\._target_='mylab\.heads\.Probe'"):
        check_targets(config, "run.ckpt")
    # Callbacks and loggers are never rebuilt from a checkpoint: not checked.
    check_targets({"callbacks": config["callbacks"]}, "run.ckpt")
    monkeypatch.setenv("MMEXP_TRUSTED_TARGETS", "mylab.heads.,otherlab.")
    check_targets(config, "run.ckpt")


class Payload:
    """Unpickling it creates ``marker``: the code a hostile checkpoint would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_holding_a_pickled_object_is_refused_unread(trained, make_train_cfg, tmp_path):
    checkpoint = torch.load(trained, weights_only=True)
    marker = tmp_path / "code-ran"
    checkpoint["callbacks"]["payload"] = Payload(marker)
    hostile = tmp_path / "pickled.ckpt"
    torch.save(checkpoint, hostile)
    with pytest.raises(CheckpointReadError, match="objects that weights_only loading refuses"):
        load_checkpoint(hostile)
    # resuming reads it through the trainer's checkpoint IO: refused as well
    cfg = make_train_cfg(*SMALL, *NO_STEP, f"ckpt_path={hostile}")
    unreadable = re.escape(f"ckpt_path: {hostile} is not a readable checkpoint")
    with pytest.raises(CheckpointReadError, match=unreadable):
        train(cfg)
    assert not marker.exists()
    assert not list(Path(cfg.paths.output_dir).glob("checkpoints/*"))
