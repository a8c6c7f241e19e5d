"""A real multirun: a failing job is recorded and the sweep goes on; a rerun skips done jobs."""

import json

import pytest
from omegaconf import OmegaConf

from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES


def run_sweep(sweep_dir, data_dir, cwd):
    return run_cli(
        "train",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        "data.task=redundant,no_such_task",
        cwd=cwd,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        returncode=None,  # the test checks the exit status
    )


@pytest.mark.slow
def test_failed_job_is_recorded_the_sweep_goes_on_and_a_rerun_skips_finished_jobs(
    tmp_path, data_dir
):
    sweep_dir = tmp_path / "sweep"
    first = run_sweep(sweep_dir, data_dir, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    records = {path: json.loads(path.read_text()) for path in sweep_dir.glob("*/results.json")}
    assert len(records) == 2
    task = {path: OmegaConf.load(path.parent / "config.yaml").data.task for path in records}
    good = next(p for p in records if task[p] == "redundant")
    bad = next(p for p in records if task[p] == "no_such_task")
    assert json.loads(good.read_text())["status"] == "completed"
    failed = json.loads(bad.read_text())
    assert failed["status"] == "failed" and "no_such_task" in failed["error"]
    finished_at = json.loads(good.read_text())["finished_at"]
    good_mtime = good.stat().st_mtime_ns

    second = run_sweep(sweep_dir, data_dir, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already completed with this config" in second.stdout + second.stderr
    assert good.stat().st_mtime_ns == good_mtime
    assert json.loads(good.read_text())["finished_at"] == finished_at
    assert json.loads(bad.read_text())["status"] == "failed"  # rerun, failed again


@pytest.mark.slow
def test_a_single_run_still_fails_loudly(tmp_path, data_dir):
    completed = run_cli(
        "train",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.data_dir={data_dir}",
        "data.task=no_such_task",
        cwd=tmp_path,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=300,
        returncode=None,  # any failure: checked below
    )
    assert completed.returncode != 0
    assert "no_such_task" in completed.stderr
    assert json.loads((tmp_path / "run" / "results.json").read_text())["status"] == "failed"


def test_job_dir_names_are_stable_and_bounded():
    from mmexp.utils.resolvers import MAX_JOB_DIR, job_dir_name

    assert job_dir_name("fusion=concat,seed=1") == "fusion=concat,seed=1"
    assert job_dir_name("model/encoders/text=minilm") == "model_encoders_text=minilm"
    long = ",".join(f"key{i}=value{i}" for i in range(40))
    assert len(job_dir_name(long)) == MAX_JOB_DIR
    assert job_dir_name(long) == job_dir_name(long) != job_dir_name(long + "x")
