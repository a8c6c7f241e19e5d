"""Composing run configs as the entry points do, and the small settings tests train with."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from mmexp.config_check import ConfigError, check_config
from mmexp.utils.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[2] / "conf"
CONF_DIR = str(CONF)

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


def fast_overrides(*, without: tuple[str, ...] = ()) -> list[str]:
    """:data:`FAST_OVERRIDES` less those that start with one of ``without`` (e.g. ``logger``)."""
    return [o for o in FAST_OVERRIDES if not o.startswith(without)]


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


def problems(cfg) -> list[str]:
    """The problems ``check_config`` reports for ``cfg``, which must have some."""
    with pytest.raises(ConfigError) as caught:
        check_config(cfg)
    assert str(caught.value).splitlines()[1:] == [f"  {p}" for p in caught.value.problems]
    return caught.value.problems
