"""Shared fixtures: composed configs with small data, temporary run and data folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmexp.utils.resolvers import register_resolvers

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")

# Small, fast settings shared by the tests that train: a few hundred samples, few epochs.
FAST_OVERRIDES = [
    "data.num_train=240",
    "data.num_val=80",
    "data.num_test=80",
    "data.batch_size=32",
    "trainer.max_epochs=2",
    "trainer.accelerator=cpu",
    "logger=csv",
    "++callbacks.model_summary=null",
    "++callbacks.rich_progress_bar=null",
]


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


def compose_config(
    config_name: str, overrides: list[str], output_dir: Path, data_dir: Path
) -> DictConfig:
    """Compose a config as the entry point would, with run folders under ``output_dir``."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(
            config_name,
            overrides=[f"paths.data_dir={data_dir}", f"hydra.run.dir={output_dir}", *overrides],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.log_dir = str(output_dir.parent)
        cfg.paths.root_dir = str(output_dir.parent)
        del cfg.hydra
    return cfg


@pytest.fixture
def make_train_cfg(tmp_path: Path, data_dir: Path):
    """Factory: ``make_train_cfg(*overrides)`` composes ``train.yaml`` with the fast settings."""

    def make(*overrides: str, run_name: str = "run") -> DictConfig:
        return compose_config("train", [*FAST_OVERRIDES, *overrides], tmp_path / run_name, data_dir)

    return make
