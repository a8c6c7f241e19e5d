"""The Hydra plugin class of mmexp's Optuna sweeper (``hydra/sweeper=mmexp_optuna``).

Hydra instantiates sweepers only from its ``hydra_plugins`` namespace, so the class lives
here; the search itself is :func:`mmexp.search.sweep.run_search`. Importing this module
stays light (Hydra imports every plugin module at start-up): Optuna and mmexp load when a
search starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class OptunaSweeper(Sweeper):
    """Optuna search over a Hydra config, one mmexp-train job per trial.

    Args:
        sampler: An Optuna sampler, or a callable taking ``search_space`` (the grid
            sampler, configured with ``_partial_: true``).
        pruner: An Optuna pruner (``NopPruner`` for none).
        storage: A database URL or journal file path; ``None``: ``optuna.journal`` in the
            sweep folder.
        study_name: Workers sharing storage and name fill one study.
        direction: ``maximize`` / ``minimize``, or one per objective.
        n_trials: Finished trials the study should hold (over every worker and restart).
        n_jobs: Trials launched together; ``None``: the launcher's ``n_jobs``, else 1.
        max_failure_rate: The search stops once more of its trials than this fraction
            failed.
        params: Config key -> Hydra sweep expression.
    """

    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        storage: str | None,
        study_name: str,
        direction: Any,
        n_trials: int,
        n_jobs: int | None,
        max_failure_rate: float,
        params: Any = None,
    ) -> None:
        from mmexp.search.sweep import SearchSettings

        self.settings = SearchSettings(
            sampler=sampler,
            pruner=pruner,
            storage=storage,
            study_name=study_name,
            direction=direction if isinstance(direction, str) else list(direction),
            n_trials=n_trials,
            n_jobs=n_jobs,
            max_failure_rate=max_failure_rate,
            params=dict(params) if params else None,
        )
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        """Build the launcher that runs the trials."""
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: Sequence[str]) -> Any:
        """Run the search; returns the Optuna study."""
        from mmexp.search.sweep import run_search

        assert self.config is not None, "setup() runs before sweep()"
        return run_search(self.settings, self.launcher, self.config, list(arguments))
