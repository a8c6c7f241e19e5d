"""``launcher=submitit_local``: the requeue path of ``launcher=slurm`` without a cluster.

submitit's local executor runs the same signal handler as on SLURM: on SIGUSR2 it asks the
job for a checkpoint and requeues it, here by restarting the process in its folder. So the
save-on-signal, requeue and resume logic is covered by the default suite; the test with a
real cluster (``test_slurm.py``) adds sbatch, srun and scontrol.
"""

import csv
import json

from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES


def test_signalled_job_is_requeued_and_resumes_in_its_folder(tmp_path, data_dir):
    sweep_dir = tmp_path / "sweep"
    done = run_cli(
        "train",
        "launcher=submitit_local",
        f"hydra.sweep.dir={sweep_dir}",
        f"paths.data_dir={data_dir}",
        "data.num_train=96",
        "data.batch_size=16",
        "trainer.max_epochs=2",
        "trainer.log_every_n_steps=1",
        "logger=csv",
        "seed=1",
        # SIGUSR2 after step 3 of 12, in the first attempt only
        "+callbacks.fault._target_=tests.helpers.faults.SignalOnFirstAttempt",
        "+callbacks.fault.step=3",
        "+callbacks.fault.signal=SIGUSR2",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        timeout=600,
        returncode=None,  # checked below, with the job's log
    )
    job_logs = "\n".join(p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.*"))
    assert done.returncode == 0, done.stderr[-2000:] + job_logs[-3000:]
    [folder] = [p.parent for p in sweep_dir.glob("*/results.json")]
    record = json.loads((folder / "results.json").read_text())
    assert record["status"] == "completed"
    log = (folder / "train.log").read_text()
    assert "received SIGUSR2" in log and "resuming from" in log
    # submitit requeued the job once (its own log lines; Hydra's logger repeats them) and
    # started it a second time, which went on from the checkpoint's step.
    own_lines = [line for line in job_logs.splitlines() if line.startswith("submitit INFO")]
    assert sum("Requeued job" in line for line in own_lines) == 1
    assert sum("Starting with JobEnvironment" in line for line in own_lines) == 2
    with open(folder / "csv" / "metrics.csv", newline="") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle) if row.get("train/loss")]
    assert steps == list(range(12))
