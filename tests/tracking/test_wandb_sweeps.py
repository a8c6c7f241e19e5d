"""W&B sweep specs in sweeps/ produce valid mmexp-train overrides for every value."""

from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from tests.conftest import compose_config

SWEEPS = Path(__file__).resolve().parents[2] / "sweeps"
SPECS = sorted(SWEEPS.glob("wandb_*.yaml"))


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


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_sweep_value_is_a_valid_override(path, tmp_path, data_dir):
    spec = yaml.safe_load(path.read_text())
    assert spec["command"][1:] == ["mmexp-train", "${args_no_hyphens}"]
    assert spec["metric"]["name"].startswith("val/")
    for key, values in parameter_values(spec).items():
        for value in values:
            cfg = compose_config("train", [f"{key}={value}"], tmp_path / "run", data_dir)
            if not key.startswith(("fusion", "data.modalities")):
                assert str(OmegaConf.select(cfg, key)) == str(value), key
            elif key == "fusion":
                assert cfg.fusion._target_.startswith("mmexp.fusion.")


def test_wandb_and_hydra_fusion_matrices_agree():
    spec = yaml.safe_load((SWEEPS / "wandb_fusion_ablation.yaml").read_text())
    experiment = OmegaConf.load(SWEEPS.parent / "conf" / "experiment" / "fusion_ablation.yaml")
    hydra_params = experiment.hydra.sweeper.params
    assert spec["parameters"]["fusion"]["values"] == hydra_params.fusion.split(",")
    assert spec["parameters"]["data.task"]["values"] == hydra_params["data.task"].split(",")
    seeds = [int(seed) for seed in str(hydra_params.seed).split(",")]
    assert spec["parameters"]["seed"]["values"] == seeds
