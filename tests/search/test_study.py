"""Stored studies: the exact trial budget across workers, abandoned trials, other processes."""

import os
import socket
import subprocess
import sys

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

import mmexp.search.study as study_module
from mmexp.search.study import (
    RETRY_ATTR,
    SURPLUS_ATTR,
    WORKER_ATTR,
    ask_within_budget,
    load_trial,
    open_storage,
    retry_abandoned_trials,
    storage_location,
)

SPACE = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}


def worker_study(location, name="s"):
    """A study as one worker process opens it (its own storage object)."""
    return optuna.create_study(
        storage=open_storage(location), study_name=name, direction="maximize", load_if_exists=True
    )


@pytest.fixture(params=["journal", "sqlite"])
def location(request, tmp_path):
    if request.param == "journal":
        return storage_location(None, tmp_path)
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_no_storage_is_a_journal_in_the_sweep_folder(tmp_path):
    location = storage_location(None, tmp_path)
    assert location == str(tmp_path.resolve() / "optuna.journal")
    worker_study(location).ask()
    assert (tmp_path / "optuna.journal").stat().st_size > 0


def test_workers_stop_at_the_budget(location):
    first, second = worker_study(location), worker_study(location)
    asked = [ask_within_budget(s, SPACE, 3) for s in (first, second, first, second)]
    assert [t.number for t in asked[:3]] == [0, 1, 2] and asked[3] is None
    assert len(first.get_trials(states=(TrialState.RUNNING,))) == 3


def test_the_later_of_two_workers_asking_for_the_last_trial_runs_nothing(location, monkeypatch):
    first, second = worker_study(location), worker_study(location)
    assert ask_within_budget(first, SPACE, 2).number == 0
    assert ask_within_budget(first, SPACE, 2).number == 1
    # both workers counted before either asked: the budget check before asking passed
    monkeypatch.setattr(study_module, "counted", lambda study: 0)
    assert ask_within_budget(second, SPACE, 2) is None
    surplus = second.get_trials()[2]
    assert surplus.state == TrialState.FAIL and surplus.user_attrs[SURPLUS_ATTR] is True


def test_a_trial_left_running_by_a_dead_worker_is_failed_and_queued_again(location):
    study = worker_study(location)
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    dead_pid, here = int(finished.stdout), socket.gethostname()
    for worker in [
        {"host": here, "pid": dead_pid},
        {"host": here, "pid": os.getpid()},  # alive: still running
        {"host": "another-node", "pid": dead_pid},  # no way to tell: left alone
    ]:
        study.ask(SPACE).set_user_attr(WORKER_ATTR, worker)
    assert retry_abandoned_trials(worker_study(location)) == [0]
    trials = worker_study(location).get_trials()
    assert [t.state for t in trials] == [
        TrialState.FAIL,
        TrialState.RUNNING,
        TrialState.RUNNING,
        TrialState.WAITING,
    ]
    assert trials[3].user_attrs[RETRY_ATTR] == 0
    # the next trial asked is the queued one, with the abandoned trial's parameters
    retried = ask_within_budget(worker_study(location), SPACE, 10)
    assert retried.number == 3 and retried.params == trials[0].params


def test_a_job_process_reports_to_its_trial_and_is_pruned_by_the_studys_pruner(location):
    study = worker_study(location)
    for value in (0.9, 0.8):  # two complete trials reaching 0.9 and 0.8 after step 0
        trial = study.ask()
        trial.report(value, step=0)
        study.tell(trial, value)
    running = study.ask()
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2)
    other_study, trial = load_trial(location, "s", running.number, pruner)
    trial.report(0.1, step=0)
    assert trial.should_prune()
    trial.report(0.95, step=1)
    assert not trial.should_prune()
    assert study.get_trials()[2].intermediate_values == {0: 0.1, 1: 0.95}


def test_an_unknown_trial_number_is_an_error(location):
    worker_study(location).ask()
    with pytest.raises(KeyError):
        load_trial(location, "s", 5, None)


@pytest.mark.parametrize(
    "error",
    [
        sqlalchemy.exc.OperationalError("CREATE TABLE", {}, Exception("database is locked")),
        sqlalchemy.exc.IntegrityError(
            "INSERT INTO alembic_version", {}, Exception("UNIQUE constraint failed")
        ),
    ],
    ids=["locked", "version-stamped-twice"],
)
def test_a_worker_that_loses_the_race_to_create_the_tables_tries_again(
    tmp_path, monkeypatch, error
):
    # Workers started together all create the schema; the losers see one of these errors.
    real = study_module.RDBStorage
    calls = []

    def first_fails(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(study_module, "RDBStorage", first_fails)
    monkeypatch.setattr(study_module.time, "sleep", lambda _s: None)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = study_module.open_storage(url)
    assert isinstance(storage, real) and len(calls) == 2
