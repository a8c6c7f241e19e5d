"""Shared fixtures: composed configs with small data, temporary run and data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

# Before the helpers are imported: their asserts report what differed, as in test modules.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers.configs import FAST_OVERRIDES, compose_config  # noqa: E402

pytest_plugins = ["tests.helpers.frozen_towers"]


def _share_the_cores_between_workers() -> None:
    """Give each pytest-xdist worker its share of the cores, itself and the runs it starts.

    The suite trains many small models, where intra-op threads gain little: two workers with
    one thread each finish about twice as fast as one process with two, and letting every
    worker take all cores would oversubscribe them. Subprocesses (CLI runs) inherit the
    share through ``OMP_NUM_THREADS``; a test that sets its own keeps it.
    """
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if not workers:
        return
    # The cores this process may use (a CPU set, a SLURM allocation); macOS has no affinity.
    affinity = getattr(os, "sched_getaffinity", None)
    cores = len(affinity(0)) if affinity is not None else os.cpu_count() or 1
    threads = max(1, cores // int(workers))
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


_share_the_cores_between_workers()


@pytest.fixture(autouse=True, scope="session")
def _offline_environment() -> None:
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["WANDB_SILENT"] = "true"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One data cache for the whole session, so each shapes variant is generated once."""
    return tmp_path_factory.mktemp("data")


@pytest.fixture
def make_train_cfg(tmp_path: Path, data_dir: Path):
    """Factory: ``make_train_cfg(*overrides)`` composes ``train.yaml`` with the fast settings."""

    def make(*overrides: str, run_name: str = "run") -> DictConfig:
        return compose_config("train", [*FAST_OVERRIDES, *overrides], tmp_path / run_name, data_dir)

    return make
