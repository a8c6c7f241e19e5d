"""W&B sweep specs in sweeps/ produce valid mmexp-train overrides for every value."""

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.helpers.configs import compose_config

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
SPECS = sorted(SWEEPS.glob("*.yaml"))
CONF = SWEEPS.parent / "conf"


def parameter_values(spec: dict) -> dict[str, list]:
    values = {}
    for key, options in spec["parameters"].items():
        if "value" in options:
            values[key] = [options["value"]]
        elif "values" in options:
            values[key] = options["values"]
        else:  # a distribution: check both ends of its range
            values[key] = [options["min"], options["max"]]
    return values


def jobs(values: dict[str, list]) -> list[dict]:
    """The first value of every parameter, then each parameter through all its values."""
    first = {key: options[0] for key, options in values.items()}
    return [first] + [
        {**first, key: value} for key, options in values.items() for value in options[1:]
    ]


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_sweep_value_is_a_valid_override(path, tmp_path, data_dir):
    spec = yaml.safe_load(path.read_text())
    assert spec["command"][1:] == ["mmexp-train", "${args_no_hyphens}"]
    assert spec["metric"]["name"].startswith("val/")
    # An agent passes all parameters of a job together: compose them the same way.
    for job in jobs(parameter_values(spec)):
        cfg = compose_config(
            "train", [f"{k}={v}" for k, v in job.items()], tmp_path / "run", data_dir
        )
        for key, value in job.items():
            if (CONF / key).is_dir():  # a config group: its choice built a real config
                continue
            if key == "data.modalities":
                assert list(cfg.data.modalities) == value.strip("[]").split(","), key
            else:
                assert str(OmegaConf.select(cfg, key)) == str(value), key
        if "fusion" in job:
            assert cfg.fusion._target_.startswith("mmexp.fusion.")
        if "finetune" in job:
            assert cfg.finetune._target_.startswith("mmexp.finetune.")
            expected = job["pretrained_checkpoint"] if job.get("init") == "contrastive" else None
            assert cfg.finetune.checkpoint == expected


def test_wandb_and_hydra_fusion_matrices_agree():
    spec = yaml.safe_load((SWEEPS / "wandb_fusion_ablation.yaml").read_text())
    experiment = OmegaConf.load(SWEEPS.parent / "conf" / "experiment" / "fusion_ablation.yaml")
    hydra_params = experiment.hydra.sweeper.params
    assert spec["parameters"]["fusion"]["values"] == hydra_params.fusion.split(",")
    assert spec["parameters"]["data.task"]["values"] == hydra_params["data.task"].split(",")
    seeds = [int(seed) for seed in str(hydra_params.seed).split(",")]
    assert spec["parameters"]["seed"]["values"] == seeds
