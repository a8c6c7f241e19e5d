"""launcher=local_parallel: multirun jobs side by side, under the same job policy."""

import json
from datetime import datetime

import pytest
from omegaconf import OmegaConf

from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES


def run_parallel_sweep(sweep_dir, data_dir, cwd):
    # Four jobs, two at a time; one of them names a task that does not exist.
    return run_cli(
        "train",
        "launcher=local_parallel",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=2",
        "data.task=redundant,no_such_task",
        "seed=1,2",
        cwd=cwd,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
        timeout=600,
        returncode=None,  # checked below
    )


def interval(record):
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(
        record["finished_at"]
    )


@pytest.mark.slow
def test_four_jobs_two_at_once_one_failing_the_rest_complete_and_a_rerun_skips_them(
    tmp_path, data_dir
):
    sweep_dir = tmp_path / "sweep"
    first = run_parallel_sweep(sweep_dir, data_dir, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    records = {p: json.loads(p.read_text()) for p in sweep_dir.glob("*/results.json")}
    assert len(records) == 4
    # The launcher is no part of a job's folder: run elsewhere, a finished job is skipped.
    assert not any("launcher" in path.parent.name for path in records)
    by_job = {
        (cfg.data.task, cfg.seed): records[path]
        for path in records
        for cfg in [OmegaConf.load(path.parent / "config.yaml")]
    }
    assert set(by_job) == {(t, s) for t in ("redundant", "no_such_task") for s in (1, 2)}
    for (task, _seed), record in by_job.items():
        expected = "completed" if task == "redundant" else "failed"
        assert record["status"] == expected, record.get("error")
    assert "no_such_task" in by_job[("no_such_task", 1)]["error"]
    # Each job ran in a worker process with one intra-op thread (2 jobs on 2 cores).
    assert {record["torch_threads"] for record in by_job.values()} == {1}
    assert len({record["pid"] for record in by_job.values()}) == 2
    # Two jobs ran at the same time: some pair of runs overlaps in time.
    spans = sorted(interval(record) for record in by_job.values())
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    # The seeds differ, so do the completed runs' results (each job seeds itself).
    good = [by_job[("redundant", seed)]["metrics"]["test/loss"] for seed in (1, 2)]
    assert good[0] != good[1]

    finished = {p: p.stat().st_mtime_ns for p in records if records[p]["status"] == "completed"}
    second = run_parallel_sweep(sweep_dir, data_dir, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "already completed with this config" in second.stdout + second.stderr
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in finished.items())
