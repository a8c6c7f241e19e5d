"""Optuna studies that several workers fill and that outlive a crash.

Every study is stored: in a relational database (``sqlite:///...``, ``postgresql://...``)
or in a journal file (any other path; the default is ``optuna.journal`` in the sweep
folder). Workers sharing the storage and study name fill one study; a worker started again
after a crash finds the trials done before it.

Two rules make the trial count exact with several workers:

- a worker asks for a trial only while fewer than ``n_trials`` trials are complete, pruned
  or running;
- having asked, it runs the trial only if fewer than ``n_trials`` of those trials have a
  lower number (trial numbers are given out one by one by the storage): of two workers
  that asked at once for the last trial, the later one marks its trial failed with the
  user attribute ``mmexp_surplus`` and runs nothing.

A trial left ``RUNNING`` by a worker process of this host that no longer exists (killed,
crashed machine, pre-empted) is marked failed when a worker starts, and its parameters are
queued again (user attribute ``mmexp_retry_of``), so the study ends with as many finished
trials as asked for. Trials of other hosts are left alone: no heartbeat tells whether they
still run.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, Trial, TrialState

log = logging.getLogger(__name__)

#: Trials that count against ``n_trials``.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
WORKER_ATTR = "mmexp_worker"
SURPLUS_ATTR = "mmexp_surplus"
RETRY_ATTR = "mmexp_retry_of"


def storage_location(storage: str | None, sweep_dir: Path) -> str:
    """The storage a study lives in: a database URL or a journal file path."""
    if storage is None:
        return str((sweep_dir / "optuna.journal").resolve())
    return storage


def open_storage(location: str) -> BaseStorage:
    """A database URL (``<dialect>://``) as an RDB storage, anything else as a journal file."""
    if "://" in location:
        # SQLite waits for a writer instead of failing at once when workers share the file
        kwargs = {"connect_args": {"timeout": 60}} if location.startswith("sqlite") else {}
        for attempt in range(1, 6):
            try:
                return RDBStorage(location, engine_kwargs=kwargs)
            except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.IntegrityError):
                # workers started together race to create the tables and stamp their
                # version (a locked database, or a duplicate alembic_version row): one
                # wins, the others find them on the next try
                if attempt == 5:
                    raise
                time.sleep(0.5 * attempt)
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def load_trial(
    location: str, study_name: str, number: int, pruner: optuna.pruners.BasePruner | None
) -> tuple[optuna.Study, Trial]:
    """The study and the running trial ``number`` of it, from another process.

    The pruner is not stored with the study, so the process that asks it gives it again.

    Raises:
        KeyError: The study has no trial with that number.
    """
    storage = open_storage(location)
    study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    study_id = storage.get_study_id_from_name(study_name)
    trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, number)
    return study, Trial(study, trial_id)


def _worker() -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def retry_abandoned_trials(study: optuna.Study) -> list[int]:
    """Fail the running trials whose worker on this host is gone, and queue them again.

    Returns:
        The numbers of the trials marked failed.
    """
    here = socket.gethostname()
    abandoned = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not worker or worker["host"] != here or _alive(worker["pid"]):
            continue
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={RETRY_ATTR: trial.number})
        abandoned.append(trial.number)
    if abandoned:
        log.warning(
            "trials %s were left running by a worker that is gone; marked failed and queued "
            "again with the same parameters",
            abandoned,
        )
    return abandoned


def counted(study: optuna.Study) -> int:
    """Trials complete, pruned or running."""
    return len(study.get_trials(deepcopy=False, states=COUNTED))


def ask_within_budget(
    study: optuna.Study, distributions: dict[str, Any], n_trials: int
) -> Trial | None:
    """A new trial, or ``None`` once ``n_trials`` trials are complete, pruned or running."""
    if counted(study) >= n_trials:
        return None
    trial = study.ask(fixed_distributions=distributions)
    trial.set_user_attr(WORKER_ATTR, _worker())
    earlier = sum(t.number < trial.number for t in study.get_trials(deepcopy=False, states=COUNTED))
    if earlier >= n_trials:  # another worker took the last trial first
        trial.set_user_attr(SURPLUS_ATTR, True)
        study.tell(trial, state=TrialState.FAIL)
        return None
    return trial


def frozen(study: optuna.Study, number: int) -> FrozenTrial:
    """The stored state of trial ``number``."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)
