"""A job crashing mid-training inside a multirun: recorded, its checkpoint kept, sweep goes on.

``tests/tracking/test_sweep_jobs.py`` covers a job failing at setup (an unknown task) and
the rerun that skips finished jobs; here the job crashes after it has written a checkpoint,
and ``fail_fast=true`` is checked to stop the sweep at the crash.
"""

import json
import subprocess
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES

# 64 samples in batches of 32: 2 steps per epoch. Step 2 is the first of epoch 1, after
# the end-of-epoch-0 checkpoints; the first job crashes there, the second has no fault.
CRASH = "+callbacks.crash={_target_:tests.helpers.faults.RaiseAtStep,step:2},null"
SMALL = ["data.num_train=64", "data.num_val=32", "data.num_test=32", "test=false"]


def sweep(sweep_dir: Path, data_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(
        "train",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        *SMALL,
        CRASH,
        *extra,
        cwd=sweep_dir.parent,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=300,
        returncode=None,  # each test checks the exit status
    )


def jobs(sweep_dir: Path) -> dict[str, Path]:
    """Job folders by whether the job had the crash callback."""
    folders = {}
    for config in sweep_dir.glob("*/config.yaml"):
        crash = OmegaConf.load(config).callbacks.get("crash")
        folders["crashed" if crash else "good"] = config.parent
    return folders


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.slow
def test_a_crashed_job_is_recorded_with_its_checkpoint_and_the_sweep_goes_on(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    finished = sweep(sweep_dir, data_dir)
    # a failed job is recorded, not raised: the sweep exits 0 (see mmexp.tracking.sweep_jobs)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "the sweep goes on" in finished.stdout + finished.stderr
    folders = jobs(sweep_dir)
    assert folders.keys() == {"crashed", "good"}
    crashed, good = results(folders["crashed"]), results(folders["good"])
    assert crashed["status"] == "failed"
    assert crashed["error"] == "RuntimeError: injected crash after step 2"
    assert good["status"] == "completed" and good["metrics"]["val/acc"] is not None
    # what the crashed job wrote before the crash is still there and loads
    last = folders["crashed"] / "checkpoints" / "last.ckpt"
    checkpoint = torch.load(last, weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2
    assert (folders["crashed"] / "csv" / "metrics.csv").is_file()
    assert not list(sweep_dir.glob("*/checkpoints/.*.tmp"))


@pytest.fixture(scope="module")
def fail_fast_sweep(tmp_path_factory, data_dir) -> tuple[subprocess.CompletedProcess, Path]:
    sweep_dir = tmp_path_factory.mktemp("fail_fast") / "sweep"
    return sweep(sweep_dir, data_dir, "fail_fast=true"), sweep_dir


@pytest.mark.slow
def test_fail_fast_ends_the_sweep_with_the_error(fail_fast_sweep):
    stopped, sweep_dir = fail_fast_sweep
    assert stopped.returncode == 1
    assert "RuntimeError: injected crash after step 2" in stopped.stderr
    crashed = jobs(sweep_dir)["crashed"]
    assert results(crashed)["status"] == "failed"
    assert torch.load(crashed / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 0


def test_fail_fast_runs_no_job_after_the_crash(fail_fast_sweep):
    _, sweep_dir = fail_fast_sweep
    assert jobs(sweep_dir).keys() == {"crashed"}  # the second job never started training
    assert (sweep_dir / "FAILED_FAST").read_text().count("injected crash after step 2") == 1
