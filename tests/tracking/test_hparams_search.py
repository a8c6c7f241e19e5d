"""hparams_search=shapes_optuna really runs Optuna trials and reports the best metric."""

import json

import pytest
from omegaconf import OmegaConf

from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES


def test_optuna_search_returns_the_best_optimized_metric(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    run_cli(
        "train",
        "hparams_search=shapes_optuna",
        "hydra.sweeper.n_trials=4",
        # past the random start-up trials: the last ones come from TPE's model
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={data_dir}",
        "trainer.max_epochs=1",
        "test=false",
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
    )
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(trials) == 4 and all(t["status"] == "completed" for t in trials)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(t["metrics"]["val/acc_best"] for t in trials))
    assert set(best.best_params) == {"model.optimizer.lr", "model.width", "model.head.dropout"}
    widths = {
        OmegaConf.load(p.parent / "config.yaml").model.width for p in sweep.glob("*/results.json")
    }
    assert widths <= {64, 128, 256}

    # each trial ran the parameters the sampler suggested, and no two trials the same ones
    suggested = []
    for result in sweep.glob("*/results.json"):
        record = json.loads(result.read_text())
        given = dict(o.split("=", 1) for o in record["overrides"] if "=" in o)
        config = OmegaConf.load(result.parent / "config.yaml")
        values = tuple(
            float(given[key]) for key in ("model.optimizer.lr", "model.width", "model.head.dropout")
        )
        assert values == (
            pytest.approx(config.model.optimizer.lr),
            config.model.width,
            pytest.approx(config.model.head.dropout),
        )
        suggested.append(values)
    assert len(set(suggested)) == 4
