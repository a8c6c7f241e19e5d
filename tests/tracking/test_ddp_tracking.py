"""Under DDP (2 CPU processes, gloo) each job has one run folder and one W&B run."""

import json

import pytest
from omegaconf import OmegaConf

from tests.helpers.cli import run_cli
from tests.helpers.configs import fast_overrides


@pytest.mark.slow
def test_ddp_multirun_gives_one_folder_and_one_wandb_run_per_job(tmp_path, data_dir):
    run_cli(
        "train",
        "trainer=ddp_cpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        "seed=1,2",
        cwd=tmp_path,
        multirun=True,
        fast=fast_overrides(without=("logger",)),
        timeout=900,
    )
    assert {p.name for p in tmp_path.iterdir()} == {"sweep"}  # no stray folders from rank 1
    jobs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/results.json"))
    assert len(jobs) == 2
    assert {OmegaConf.load(job / "config.yaml").seed for job in jobs} == {1, 2}
    for job in jobs:
        assert json.loads((job / "results.json").read_text())["status"] == "completed"
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
