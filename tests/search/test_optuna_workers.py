"""Workers sharing one stored study, and a study resumed after its worker was killed."""

import json
import signal
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from mmexp.search.study import RETRY_ATTR, SURPLUS_ATTR, open_storage
from tests.helpers.cli import REPO, cli_env
from tests.helpers.configs import FAST_OVERRIDES


def search_command(sweep, data_dir, *overrides):
    return [
        sys.executable,
        "-m",
        "mmexp.train",
        "-m",
        *FAST_OVERRIDES,
        "hparams_search=shapes_optuna",
        "hydra/sweeper/pruner=none",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={data_dir}",
        "test=false",
        *overrides,
    ]


def start(command, tmp_path, name):
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    env = cli_env({"WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"})
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)


def finished(process, tmp_path, name, timeout=900):
    assert process.wait(timeout=timeout) == 0, (tmp_path / f"{name}.log").read_text()[-3000:]


def completed_runs(sweep):
    return {
        int(path.parent.name.removeprefix("trial_"))
        for path in sweep.glob("trial_*/results.json")
        if json.loads(path.read_text())["status"] == "completed"
    }


@pytest.mark.slow
def test_two_workers_on_one_sqlite_study_run_exactly_n_trials(tmp_path, data_dir):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    workers = [
        start(
            search_command(
                tmp_path / "sweep",
                data_dir,
                f"hydra.sweeper.storage={storage}",
                "hydra.sweeper.n_trials=5",
                "trainer.max_epochs=1",
                f"hydra.sweeper.sampler.seed={seed}",
            ),
            tmp_path,
            f"worker{seed}",
        )
        for seed in (1, 2)
    ]
    for seed, worker in zip((1, 2), workers, strict=True):
        finished(worker, tmp_path, f"worker{seed}")
    study = optuna.load_study(study_name="mmexp_shapes", storage=open_storage(storage))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    others = [t for t in study.trials if t.state != TrialState.COMPLETE]
    assert len(complete) == 5
    # a worker that lost the race for the last trial ran nothing
    assert all(t.user_attrs.get(SURPLUS_ATTR) for t in others)
    assert completed_runs(tmp_path / "sweep") == {t.number for t in complete}
    pids = {t.user_attrs["mmexp_worker"]["pid"] for t in complete}
    assert pids == {w.pid for w in workers}, "both workers ran trials of the one study"


@pytest.mark.slow
def test_a_study_killed_mid_trial_resumes_and_reruns_the_interrupted_trial(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    command = search_command(sweep, data_dir, "hydra.sweeper.n_trials=4", "trainer.max_epochs=2")
    worker = start(command, tmp_path, "first")
    deadline = time.monotonic() + 600
    while not (sweep / "trial_1" / "results.json").is_file():  # trial 1 has started
        assert worker.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    storage = open_storage(str(sweep / "optuna.journal"))
    before = optuna.load_study(study_name="mmexp_shapes", storage=storage).trials
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    finished(start(command, tmp_path, "resumed"), tmp_path, "resumed")
    trials = optuna.load_study(study_name="mmexp_shapes", storage=storage).trials
    assert [t.state for t in trials].count(TrialState.COMPLETE) == 4
    assert trials[0].datetime_complete == before[0].datetime_complete  # not run again
    assert trials[1].state == TrialState.FAIL
    (retry,) = [t for t in trials if t.user_attrs.get(RETRY_ATTR) == 1]
    assert retry.state == TrialState.COMPLETE and retry.params == before[1].params
    assert completed_runs(sweep) == {t.number for t in trials if t.state == TrialState.COMPLETE}
