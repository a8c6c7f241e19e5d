"""Shared fixtures: composed configs with small data, temporary run and data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from omegaconf import DictConfig

# Before the helpers are imported: their asserts report what differed, as in test modules.
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers.configs import FAST_OVERRIDES, compose_config  # noqa: E402

pytest_plugins = ["tests.helpers.frozen_towers"]


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
