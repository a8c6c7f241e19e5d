"""What a finished search leaves in its sweep folder: the best trials and Optuna's plots.

``optimization_results.yaml`` holds the study's name and, for one objective, the best
trial's ``best_params`` and ``best_value``; for several, every Pareto-optimal trial
(``best_trials``). The plots are Optuna's own (matplotlib backend), as PNG and PDF under
``optuna_plots/``: the optimisation history, the parameter importances (fANOVA, from two
complete trials with parameters on) and, for several objectives, the Pareto front.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import TrialState

log = logging.getLogger(__name__)

RESULTS_FILE = "optimization_results.yaml"
PLOTS_DIR = "optuna_plots"


def best_trials(study: optuna.Study) -> dict[str, Any]:
    """The study's best trial (one objective) or Pareto front (several), as plain data."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return {"name": study.study_name, "best_trials": []}
    if len(study.directions) == 1:
        best = study.best_trial
        return {
            "name": study.study_name,
            "best_trial": best.number,
            "best_params": dict(best.params),
            "best_value": best.value,
        }
    return {
        "name": study.study_name,
        "best_trials": [
            {"number": t.number, "params": dict(t.params), "values": list(t.values)}
            for t in study.best_trials
        ],
    }


def _plots(study: optuna.Study) -> dict[str, Callable[[], Any]]:
    from optuna.visualization import matplotlib as plot

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    plots: dict[str, Callable[[], Any]] = {}
    if len(study.directions) == 1:
        plots["history"] = lambda: plot.plot_optimization_history(study)
        if len(complete) >= 2 and complete[0].params:
            plots["importance"] = lambda: plot.plot_param_importances(study)
        if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
            plots["intermediate"] = lambda: plot.plot_intermediate_values(study)
    else:
        names = [f"objective {i}" for i in range(len(study.directions))]
        for i in range(len(study.directions)):
            plots[f"history_{i}"] = lambda i=i: plot.plot_optimization_history(
                study, target=lambda t: t.values[i], target_name=names[i]
            )
        if len(study.directions) <= 3:
            plots["pareto_front"] = lambda: plot.plot_pareto_front(study)
    return plots


def write_report(study: optuna.Study, sweep_dir: Path) -> list[Path]:
    """Write ``optimization_results.yaml`` and the plots; return the plot files.

    A plot Optuna cannot draw for this study (too few trials of a kind) is logged and left
    out; the results file is always written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(OmegaConf.create(best_trials(study)), sweep_dir / RESULTS_FILE)
    written = []
    folder = sweep_dir / PLOTS_DIR
    for name, draw in _plots(study).items():
        try:
            with warnings.catch_warnings():
                # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = draw()
        except (ValueError, RuntimeError) as error:
            log.warning("Optuna plot %s left out: %s", name, error)
            continue
        figure = axes.figure if hasattr(axes, "figure") else axes.flat[0].figure
        folder.mkdir(exist_ok=True)
        for suffix in (".png", ".pdf"):
            path = folder / f"{name}{suffix}"
            figure.savefig(path, bbox_inches="tight")
            written.append(path)
        plt.close(figure)
    return written
