"""Optuna's grid sampler under ask-and-tell.

Optuna's :class:`~optuna.samplers.GridSampler` ends a search by stopping
``Study.optimize`` once every grid point was visited; under ask-and-tell there is no such
loop and stopping raises. Here the sweeper's trial budget ends the search instead: it
runs at most as many trials as the grid has points.
"""

from __future__ import annotations

from collections.abc import Sequence

from optuna import Study
from optuna.samplers import GridSampler
from optuna.trial import FrozenTrial, TrialState


class GridSearch(GridSampler):
    """Every combination of the search space's values, each once (in a random order).

    Args:
        search_space: Parameter -> its values (the sweeper passes the ``params``' grid).
        seed: Seed of the order.
    """

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        """Nothing: the sweeper's budget, not a stop of ``Study.optimize``, ends the grid."""
