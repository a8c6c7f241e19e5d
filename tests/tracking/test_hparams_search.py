"""hparams_search=shapes_optuna really runs Optuna trials and reports the best metric."""

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from tests.helpers.configs import FAST_OVERRIDES


def test_optuna_search_returns_the_best_optimized_metric(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    command = [
        sys.executable,
        "-m",
        "mmexp.train",
        "-m",
        "hparams_search=shapes_optuna",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweep.dir={sweep}",
        f"paths.data_dir={data_dir}",
        *FAST_OVERRIDES,
        "trainer.max_epochs=1",
        "test=false",
    ]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    trials = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    assert len(trials) == 3 and all(t["status"] == "completed" for t in trials)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(max(t["metrics"]["val/acc_best"] for t in trials))
    assert set(best.best_params) == {"model.optimizer.lr", "model.width", "model.head.dropout"}
    widths = {
        OmegaConf.load(p.parent / "config.yaml").model.width for p in sweep.glob("*/results.json")
    }
    assert widths <= {64, 128, 256}
