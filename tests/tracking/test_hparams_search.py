"""hparams_search=shapes_optuna runs, prunes and reports real trials; the best one reruns alike."""

import json

import optuna
import pytest
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mmexp.search.space import as_override
from mmexp.search.study import open_storage
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES

SEARCHED = ("model.optimizer.lr", "model.width", "model.head.dropout")


@pytest.mark.slow
def test_optuna_search_prunes_and_its_best_trial_is_reproduced(tmp_path, data_dir):
    sweep = tmp_path / "sweep"
    settings = [f"paths.data_dir={data_dir}", "trainer.max_epochs=3", "test=false"]
    run_cli(
        "train",
        "hparams_search=shapes_optuna",
        "hydra.sweeper.n_trials=6",
        # past the random start-up trials: the last ones come from TPE's model
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"hydra.sweep.dir={sweep}",
        *settings,
        cwd=tmp_path,
        multirun=True,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
    )
    study = optuna.load_study(
        study_name="mmexp_shapes", storage=open_storage(str(sweep / "optuna.journal"))
    )
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) + states.count(TrialState.PRUNED) == 6
    assert TrialState.PRUNED in states, states  # the median pruner stopped a trial early

    for trial in study.trials:
        record = json.loads((sweep / f"trial_{trial.number}" / "results.json").read_text())
        config = OmegaConf.load(sweep / f"trial_{trial.number}" / "config.yaml")
        # each trial ran the parameters the sampler suggested, every one of them ...
        assert set(trial.params) == set(SEARCHED)
        for key, value in trial.params.items():
            assert OmegaConf.select(config, key) == pytest.approx(value), key
        assert config.optuna_trial.number == trial.number
        # ... reported its validation accuracy after every epoch it trained ...
        epochs = max(trial.intermediate_values) + 1
        assert (epochs < 3) == (trial.state == TrialState.PRUNED)
        if trial.state == TrialState.PRUNED:  # the run record and the loggers say so too
            assert record["status"] == "pruned"
            assert record["pruned_at_epoch"] == epochs - 1
            metrics = (sweep / f"trial_{trial.number}" / "csv" / "metrics.csv").read_text()
            assert "optuna/pruned_at_epoch" in metrics.splitlines()[0]
        else:
            assert record["status"] == "completed"
        assert max(trial.intermediate_values.values()) == pytest.approx(
            record["metrics"]["val/acc_best"]
        )
        # ... and a complete trial's value is its run's optimized metric
        if trial.state == TrialState.COMPLETE:
            assert trial.value == pytest.approx(record["metrics"]["val/acc_best"])

    # the trials are different models, not one run repeated: no two complete values agree
    values = [t.value for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(set(values)) == len(values), values

    best = OmegaConf.load(sweep / "optimization_results.yaml")
    assert best.best_value == pytest.approx(study.best_value)
    assert set(best.best_params) == set(SEARCHED)
    for plot in ("history", "importance", "intermediate"):
        assert (sweep / "optuna_plots" / f"{plot}.png").is_file()

    # the best trial, run again on its own from the reported parameters, gives its value
    rerun = tmp_path / "rerun"
    run_cli(
        "train",
        *[as_override(key, value) for key, value in best.best_params.items()],
        f"hydra.run.dir={rerun}",
        *settings,
        cwd=tmp_path,
        fast=FAST_OVERRIDES,
        env={"WANDB_MODE": "disabled"},
    )
    again = json.loads((rerun / "results.json").read_text())["metrics"]["val/acc_best"]
    assert again == pytest.approx(best.best_value, abs=1e-6)
