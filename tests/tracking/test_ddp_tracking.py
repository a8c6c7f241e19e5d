"""Under DDP (2 CPU processes, gloo) each job has one run folder and one W&B run."""

import json
import os
import subprocess
import sys

from omegaconf import OmegaConf

from tests.helpers.configs import FAST_OVERRIDES


def test_ddp_multirun_gives_one_folder_and_one_wandb_run_per_job(tmp_path, data_dir):
    overrides = [o for o in FAST_OVERRIDES if not o.startswith("logger")]
    command = [
        sys.executable,
        "-m",
        "mmexp.train",
        "-m",
        "trainer=ddp_cpu",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"paths.data_dir={data_dir}",
        *overrides,
        "trainer.max_epochs=1",
        "seed=1,2",
    ]
    env = {**os.environ, "WANDB_MODE": "offline"}
    done = subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=900, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {p.name for p in tmp_path.iterdir()} == {"sweep"}  # no stray folders from rank 1
    jobs = sorted(p.parent for p in (tmp_path / "sweep").glob("*/results.json"))
    assert len(jobs) == 2
    assert {OmegaConf.load(job / "config.yaml").seed for job in jobs} == {1, 2}
    for job in jobs:
        assert json.loads((job / "results.json").read_text())["status"] == "completed"
        assert len(list((job / "wandb").glob("offline-run-*"))) == 1
