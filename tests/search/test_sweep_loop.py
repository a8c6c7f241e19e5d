"""The sweeper's ask-launch-tell loop, with a launcher that computes each trial's value."""

import functools
import math

import optuna
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from mmexp.search.grid import GridSearch
from mmexp.search.report import PLOTS_DIR, RESULTS_FILE
from mmexp.search.sweep import SearchSettings, run_search


class ComputingLauncher:
    """Runs no training: a trial's value is ``objective`` of its parameter overrides."""

    def __init__(self, objective):
        self.objective = objective
        self.batches = []

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append(job_overrides)
        returns = []
        for overrides in job_overrides:
            parsed = {
                o.key_or_group: o.value()
                for o in OverridesParser.create().parse_overrides(overrides)
            }
            returns.append(
                JobReturn(
                    overrides=overrides,
                    status=JobStatus.COMPLETED,
                    _return_value=self.objective(parsed),
                )
            )
        return returns


def settings(**changes):
    base = dict(
        sampler=optuna.samplers.RandomSampler(seed=0),
        pruner=optuna.pruners.NopPruner(),
        storage=None,
        study_name="loop",
        direction="maximize",
        n_trials=5,
        n_jobs=2,
        max_failure_rate=0.5,
        params={"x": "interval(0.0, 1.0)", "fusion": "choice(concat, late)"},
    )
    return SearchSettings(**{**base, **changes})


def config(sweep_dir, metric="val/acc_best"):
    return OmegaConf.create(
        {"optimized_metric": metric, "hydra": {"sweep": {"dir": str(sweep_dir)}, "launcher": {}}}
    )


def score(parsed):
    return parsed["x"] + (0.5 if parsed["fusion"] == "late" else 0.0)


def test_trials_run_in_rounds_of_n_jobs_with_their_parameters_and_identity(tmp_path):
    launcher = ComputingLauncher(score)
    study = run_search(settings(), launcher, config(tmp_path), ["seed=3"])
    assert [len(b) for b in launcher.batches] == [2, 2, 1]
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    for trial, overrides in zip(trials, [o for b in launcher.batches for o in b], strict=True):
        parsed = {
            o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(overrides)
        }
        assert parsed["seed"] == 3  # the command line's fixed overrides reach every trial
        assert parsed["hydra.sweep.subdir"] == f"trial_{trial.number}"
        assert parsed["optuna_trial"] == {
            "storage": str(tmp_path.resolve() / "optuna.journal"),
            "study_name": "loop",
            "number": trial.number,
        }
        assert {k: parsed[k] for k in ("x", "fusion")} == trial.params
        assert trial.value == pytest.approx(score(trial.params))
    best = OmegaConf.load(tmp_path / RESULTS_FILE)
    top = max(trials, key=lambda t: t.value)
    assert best.best_trial == top.number and best.best_value == pytest.approx(top.value)
    assert dict(best.best_params) == top.params
    assert (tmp_path / PLOTS_DIR / "history.png").is_file()
    assert (tmp_path / PLOTS_DIR / "importance.pdf").is_file()


def test_a_second_run_on_the_same_study_adds_only_the_missing_trials(tmp_path):
    run_search(settings(), ComputingLauncher(score), config(tmp_path), [])
    launcher = ComputingLauncher(score)
    study = run_search(settings(n_trials=7), launcher, config(tmp_path), [])
    assert sum(len(b) for b in launcher.batches) == 2
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 7


def test_failed_jobs_are_failed_trials_and_too_many_stop_the_search(tmp_path):
    # five finished trials are asked for: failed ones do not count
    values = iter([0.3, math.nan, 0.5, math.nan, 0.2, 0.1, 0.4])
    study = run_search(
        settings(max_failure_rate=0.6),
        ComputingLauncher(lambda p: next(values)),
        config(tmp_path),
        [],
    )
    states = [t.state for t in study.get_trials()]
    assert states.count(TrialState.FAIL) == 2 and states.count(TrialState.COMPLETE) == 5
    with pytest.raises(RuntimeError, match="2 of 2 trials failed"):
        run_search(
            settings(study_name="broken"),
            ComputingLauncher(lambda p: math.nan),
            config(tmp_path / "broken"),
            [],
        )


def test_the_grid_sampler_runs_every_combination_once(tmp_path):
    grid = functools.partial(GridSearch, seed=0)
    launcher = ComputingLauncher(lambda p: float(p["width"]))
    study = run_search(
        settings(
            sampler=grid, n_trials=6, params={"width": "choice(8, 16, 32)", "fusion": "concat,late"}
        ),
        launcher,
        config(tmp_path),
        [],
    )
    combos = [(t.params["width"], t.params["fusion"]) for t in study.get_trials()]
    assert len(combos) == 6  # n_trials=50 is capped at the grid's size
    assert set(combos) == {(w, f) for w in (8, 16, 32) for f in ("concat", "late")}


def test_a_multi_objective_search_keeps_the_pareto_front(tmp_path):
    # accuracy up with x, parameters up with x squared, except 'late', which is dominated
    def objectives(parsed):
        x = parsed["x"]
        return [x, x * x] if parsed["fusion"] == "concat" else [x - 0.5, x * x + 1]

    study = run_search(
        settings(direction=["maximize", "minimize"], n_trials=8),
        ComputingLauncher(objectives),
        config(tmp_path, metric=["val/acc_best", "params"]),
        [],
    )
    trials = study.get_trials()
    front = {
        t.number
        for t in trials
        if not any(
            o.values[0] >= t.values[0] and o.values[1] <= t.values[1] and o.values != t.values
            for o in trials
        )
    }
    saved = OmegaConf.load(tmp_path / RESULTS_FILE)
    assert {t.number for t in saved.best_trials} == front
    assert all(trials[n].params["fusion"] == "concat" for n in front)
    assert (tmp_path / PLOTS_DIR / "pareto_front.png").is_file()


@pytest.mark.parametrize(
    ("changes", "metric", "message"),
    [
        ({"direction": "up"}, "val/acc_best", "neither minimize nor maximize"),
        ({"direction": ["maximize", "minimize"]}, "val/acc_best", "one metric per"),
        ({}, None, "one metric per"),
        ({"params": {"lr": "tag(log, interval(0.0, 1.0))"}}, "val/acc_best", "lr: .*low > 0"),
        (
            {"sampler": functools.partial(GridSearch)},
            "val/acc_best",
            "'x' is continuous",
        ),
    ],
)
def test_bad_settings_are_named_before_any_trial(tmp_path, changes, metric, message):
    launcher = ComputingLauncher(score)
    with pytest.raises(ValueError, match=message):
        run_search(settings(**changes), launcher, config(tmp_path, metric), [])
    assert launcher.batches == []
