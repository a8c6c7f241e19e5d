"""A search space written in Hydra's sweep syntax, as Optuna distributions.

The sweeper's ``params`` and the command line's sweeps use one syntax, Hydra's:

- ``choice(a, b, c)`` or ``a,b,c``: categorical;
- ``interval(lo, hi)``: uniform on ``[lo, hi]``; ``int(interval(lo, hi))`` the integers
  in it; ``tag(log, interval(lo, hi))`` samples on a log scale;
- ``range(start, stop, step)``: the integers of Python's ``range`` (``stop`` excluded);
  float ranges become a categorical over their values;
- anything else is a fixed override given to every trial.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)


@dataclass(frozen=True)
class SearchSpace:
    """What the sweeper samples and what it passes unchanged.

    Attributes:
        distributions: Config key -> the Optuna distribution of its values.
        fixed: Overrides given to every trial as they are (``key=value``).
    """

    distributions: dict[str, BaseDistribution]
    fixed: list[str]

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter's values, for Optuna's grid sampler.

        Raises:
            ValueError: A parameter is continuous; the message names it.
        """
        grid: dict[str, list[Any]] = {}
        for key, distribution in self.distributions.items():
            if isinstance(distribution, CategoricalDistribution):
                grid[key] = list(distribution.choices)
            elif isinstance(distribution, IntDistribution) and not distribution.log:
                grid[key] = list(range(distribution.low, distribution.high + 1, distribution.step))
            else:
                raise ValueError(
                    f"the grid sampler needs discrete values, but {key!r} is continuous "
                    f"({distribution}); give it as choice(...) or range(...)"
                )
        return grid


def _categorical(key: str, choices: list[Any]) -> CategoricalDistribution:
    # Optuna stores choices in its database, which takes only scalars.
    for choice in choices:
        if not (choice is None or isinstance(choice, (bool, int, float, str))):
            raise ValueError(
                f"{key}: Optuna samples only numbers, strings, booleans and null, got "
                f"{choice!r}; sweep a config group or a scalar key instead"
            )
    return CategoricalDistribution(choices)


def _distribution(override: Override) -> BaseDistribution:
    key = override.get_key_element()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        if "log" in value.tags:
            raise ValueError(f"{key}: tag(log, ...) applies to interval(...), not choice(...)")
        return _categorical(key, list(override.sweep_iterator()))
    if isinstance(value, RangeSweep):
        start, stop, step = value.start, value.stop, value.step
        if "log" in value.tags:
            raise ValueError(f"{key}: tag(log, ...) applies to interval(...), not range(...)")
        if all(isinstance(x, int) for x in (start, stop, step)):
            if step <= 0 or stop <= start:
                raise ValueError(f"{key}: range({start}, {stop}, {step}) holds no value")
            return IntDistribution(start, start + (stop - 1 - start) // step * step, step=step)
        return _categorical(key, list(override.sweep_iterator()))
    if isinstance(value, IntervalSweep):
        low, high, log = value.start, value.end, "log" in value.tags
        if not low < high:
            raise ValueError(f"{key}: interval({low}, {high}) needs low < high")
        if log and low <= 0:
            raise ValueError(f"{key}: tag(log, interval({low}, {high})) needs low > 0")
        if isinstance(low, int) and isinstance(high, int):
            return IntDistribution(low, high, log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise ValueError(f"{key}: {override.input_line!r} is no sweep Optuna can sample")


def parse_search_space(params: Mapping[str, str] | None, arguments: Sequence[str]) -> SearchSpace:
    """The search space of the config's ``params`` and the command-line ``arguments``.

    A command-line sweep of a key replaces that key's entry in ``params``, as in Hydra's
    other sweepers.

    Args:
        params: Config key -> sweep expression (the sweeper's ``params``).
        arguments: The command-line overrides given to the multirun.

    Raises:
        ValueError: An expression Optuna cannot sample; the message names its key.
    """
    parser = OverridesParser.create()
    lines = {key: f"{key}={value}" for key, value in (params or {}).items()}
    for override in parser.parse_overrides(list(arguments)):
        lines[override.get_key_element()] = override.input_line
    distributions: dict[str, BaseDistribution] = {}
    fixed: list[str] = []
    for override in parser.parse_overrides(list(lines.values())):
        if override.is_sweep_override():
            distributions[override.get_key_element()] = _distribution(override)
        else:
            fixed.append(override.input_line)
    return SearchSpace(distributions, fixed)


def quoted(text: str) -> str:
    """``text`` as a quoted string of Hydra's override grammar.

    In it a backslash is literal, except that backslashes before a quote or at the end are
    doubled, and a quote is escaped.
    """
    doubled = re.sub(r"(\\+)(?='|$)", lambda run: run.group(1) * 2, text)
    return "'" + doubled.replace("'", "\\'") + "'"


def as_override(key: str, value: Any) -> str:
    """``key=value`` in override syntax (strings quoted, so ``"1e-3"`` stays a string)."""
    if isinstance(value, str):
        return f"{key}={quoted(value)}"
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    return f"{key}={value}"
