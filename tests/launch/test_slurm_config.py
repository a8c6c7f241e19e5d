"""``launcher=slurm`` sizes each job from the trainer config."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from mmexp.utils.resolvers import register_resolvers
from tests.helpers.configs import CONF_DIR


def launcher(*overrides: str) -> dict:
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["launcher=slurm", *overrides], return_hydra_config=True)
    keys = ("nodes", "tasks_per_node", "gpus_per_node", "max_num_timeout", "signal_delay_s")
    return {key: OmegaConf.select(cfg, f"hydra.launcher.{key}") for key in keys} | {
        "target": cfg.hydra.launcher._target_,
        "ckpt_path": cfg.ckpt_path,
        "plugins": [p._target_ for p in cfg.trainer.plugins],
    }


def test_multi_node_ddp_gets_one_task_and_gpu_per_device():
    job = launcher("trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2")
    assert job["target"].endswith("SlurmLauncher")
    assert (job["nodes"], job["tasks_per_node"], job["gpus_per_node"]) == (2, 4, 4)
    assert job["ckpt_path"] == "last" and job["max_num_timeout"] > 0
    assert "lightning_fabric.plugins.environments.SLURMEnvironment" in job["plugins"]


def test_cpu_jobs_request_no_gpu_and_devices_must_be_counted():
    assert launcher("trainer=cpu")["gpus_per_node"] is None
    with pytest.raises(Exception, match=r"trainer.devices=<n>"):
        launcher("trainer=ddp")  # devices=-1: all GPUs of a machine SLURM has not chosen
