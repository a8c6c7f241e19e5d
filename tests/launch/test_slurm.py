"""``launcher=slurm`` on a real one-node SLURM cluster (``.ci/start_slurm`` starts one).

Jobs go through sbatch and srun as on any cluster: a sweep runs its jobs in parallel, a DDP
job gets one SLURM task per process, and a job signalled before its time limit saves,
is requeued by submitit and resumes from its checkpoint into the same folder.
"""

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.cli import run_cli

pytestmark = pytest.mark.slow

COMMON = [
    "data.num_train=240",
    "data.num_val=80",
    "data.num_test=80",
    "data.batch_size=32",
    "trainer.accelerator=cpu",
    "logger=csv",
    "++callbacks.rich_progress_bar=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=15",
]


def _cluster_up() -> bool:
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return False
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return states.returncode == 0 and any(
        s in states.stdout for s in ("idle", "mixed", "allocated")
    )


@pytest.fixture(scope="module")
def slurm() -> None:
    if _cluster_up():
        return
    message = "no SLURM cluster on this machine (.ci/start_slurm starts a local one)"
    # CI starts the cluster and sets MMEXP_REQUIRE_SLURM: there a missing cluster is a failure.
    if os.environ.get("MMEXP_REQUIRE_SLURM") == "1":
        pytest.fail(message)
    pytest.skip(message)


def sweep(tmp_path: Path, data_dir: Path, *overrides: str) -> subprocess.CompletedProcess:
    return run_cli(
        "train",
        "launcher=slurm",
        *COMMON,
        *overrides,
        f"paths.data_dir={data_dir}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        cwd=tmp_path,
        multirun=True,
        env={"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        timeout=1200,
        returncode=None,  # each test checks the exit status
    )


def results(tmp_path: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((tmp_path / "sweep").glob("*/results.json"))]


def test_preempted_job_is_requeued_and_resumes_in_its_folder(slurm, tmp_path, data_dir):
    # Two jobs in parallel; the signal (SIGUSR2, what SLURM sends before the time limit
    # with launcher=slurm) reaches each in its first attempt after step 3 of 16.
    done = sweep(
        tmp_path,
        data_dir,
        "trainer.max_epochs=2",
        "seed=1,2",
        "trainer.log_every_n_steps=1",
        "+callbacks.fault._target_=tests.helpers.faults.SignalOnFirstAttempt",
        "+callbacks.fault.step=3",
        "+callbacks.fault.signal=SIGUSR2",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = results(tmp_path)
    assert [r["status"] for r in runs] == ["completed", "completed"]
    assert sorted(r["seed"] for r in runs) == [1, 2]
    for folder in (p.parent for p in (tmp_path / "sweep").glob("*/results.json")):
        log = (folder / "train.rank0.log").read_text()
        assert "received SIGUSR2" in log and "resuming from" in log
        # The rows the first attempt logged (steps 0-4) are still there, then the rest.
        with open(folder / "csv" / "metrics.csv", newline="") as handle:
            steps = [int(row["step"]) for row in csv.DictReader(handle) if row["train/loss"]]
        assert steps == list(range(16))
    # Both tasks of the job array were requeued by submitit.
    logs = [p.read_text() for p in (tmp_path / "sweep" / ".submitit").rglob("*_log.out")]
    assert sum("Requeued job" in log for log in logs) == 2


def test_ddp_job_gets_one_slurm_task_per_process(slurm, tmp_path, data_dir):
    done = sweep(
        tmp_path,
        data_dir,
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "data.batch_size=16",
        "seed=3",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = results(tmp_path)
    assert run["status"] == "completed"
    folder = next((tmp_path / "sweep").glob("*/results.json")).parent
    # srun started both ranks; each logs to its own file and reports its SLURM rank.
    assert (folder / "train.rank0.log").is_file() and (folder / "train.rank1.log").is_file()
    script = next((tmp_path / "sweep" / ".submitit").rglob("*_submission.sh")).read_text()
    assert "#SBATCH --ntasks-per-node=2" in script
