"""The conditions a robustness grid evaluates a checkpoint under, built from its config.

Four kinds, named as ``robustness.json`` keys them:

* ``clean``: every modality, unperturbed;
* ``subset:<a>+<b>``: only the listed modalities present, in every sample;
* ``missing:<m>@<rate>``: ``<m>`` missing in ``rate`` of the samples, fixed per sample
  (:class:`~mmexp.data.missing.MissingModalities`, nested over rates);
* ``missing:both@<rate>``: the "missing both" case of Ma et al. (CVPR 2022) and Lee et al.
  (CVPR 2023), ``rate / M`` of the samples lacking each of the ``M`` modalities and no sample
  more than one (:meth:`~mmexp.data.missing.MissingModalities.for_case`; grids with
  ``missing_cases``);
* ``noise:<m>/<perturbation>@<level>``: ``<m>`` perturbed after decoding, before the
  encoder's preprocessing.

Conditions that only remove modalities are scored together, in one pass over the test
split, from one encoding of it; each noise condition needs a pass of its own.
"""

from __future__ import annotations

import difflib
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mmexp.data.missing import MissingModalities

log = logging.getLogger(__name__)

#: The kinds of condition, in the order the grid lists them.
KINDS = ("clean", "subset", "missing_rate", "noise")
#: The keys of a ``robustness`` config.
GRID_KEYS = (
    "name",
    "seed",
    "subsets",
    "missing_rates",
    "missing_cases",
    "levels",
    "perturbations",
    "modalities",
    "baseline",
    "output_dir",
)
#: The missing case in which every modality is missing from a share of the samples.
BOTH = "both"


@dataclass(frozen=True)
class Condition:
    """One evaluation condition of a robustness grid.

    Attributes:
        name: Its key in ``robustness.json`` (see the module docstring).
        kind: One of :data:`KINDS`.
        present: The modalities it keeps (all but the removed ones).
        modality: The modality a missing rate or perturbation applies to (``"both"``: the
            missing-both case, each modality missing from ``level / M`` of the samples).
        perturbation: The perturbation's name (noise conditions).
        level: The missing rate or perturbation level.
        missing: The per-sample assignment of a missing-rate condition.
        perturb: Builds the perturbation at ``level`` (noise conditions).
    """

    name: str
    kind: str
    present: tuple[str, ...]
    modality: str | None = None
    perturbation: str | None = None
    level: float | None = None
    missing: MissingModalities | None = None
    perturb: Callable[[], Any] | None = None

    @property
    def removes_only(self) -> bool:
        """Whether the condition only removes modalities (scored from the clean encoding)."""
        return self.kind != "noise"

    @property
    def curve(self) -> str | None:
        """The curve the condition is a point of: its name without ``@<level>``."""
        return self.name.split("@")[0] if "@" in self.name else None

    def presence(self, index: torch.Tensor, modalities: Sequence[str]) -> dict[str, torch.Tensor]:
        """``{modality: [B] bool}`` for test samples ``index``."""
        if self.missing is not None:
            return self.missing.present("test", index, modalities)
        return {m: torch.full((len(index),), m in self.present) for m in modalities}

    def describe(self) -> dict[str, Any]:
        """The condition as ``robustness.json`` keeps it (without metrics)."""
        return {
            "kind": self.kind,
            "modality": self.modality,
            "perturbation": self.perturbation,
            "level": self.level,
            "present": list(self.present),
        }


def level_name(level: float) -> str:
    """A level as condition names print it (``0.3``, ``1``)."""
    return f"{float(level):g}"


def check_levels(key: str, levels: Sequence[float]) -> list[float]:
    """The levels, each checked to lie in ``[0, 1]``.

    Raises:
        ValueError: A level outside ``[0, 1]``, named with ``key``.
    """
    checked = [float(level) for level in levels]
    outside = [level for level in checked if not 0.0 <= level <= 1.0]
    if outside:
        raise ValueError(f"{key} has levels {outside} outside [0, 1]")
    return checked


def subset_conditions(modalities: Sequence[str]) -> list[Condition]:
    """Every proper non-empty subset of the modalities (the full set is ``clean``)."""
    subsets = []
    for size in range(len(modalities) - 1, 0, -1):
        for kept in itertools.combinations(modalities, size):
            subsets.append(Condition(f"subset:{'+'.join(kept)}", "subset", tuple(kept)))
    return subsets


def missing_rate_conditions(
    modalities: Sequence[str],
    rates: Sequence[float],
    seed: int,
    cases: Sequence[str] | None = None,
) -> list[Condition]:
    """Each missing case at each rate; rate 0 is the clean condition.

    Args:
        modalities: The checkpoint's modalities.
        rates: The total missing rates.
        seed: Seed of the per-sample assignment.
        cases: The cases, each a modality (missing alone, ``missing:<m>@<rate>``) or
            :data:`BOTH` (``missing:both@<rate>``: ``rate / M`` of the samples lack each of
            the ``M`` modalities, none more than one, as ``data/missing=case`` trains with
            ``case=both``); ``None``: every modality alone.
    """
    conditions = []
    for case in modalities if cases is None else cases:
        for rate in rates:
            if rate == 0.0:
                continue
            missing = MissingModalities.for_case(
                case, rate, modalities=modalities, seed=seed, splits=("test",)
            )
            conditions.append(
                Condition(
                    f"missing:{case}@{level_name(rate)}",
                    "missing_rate",
                    tuple(modalities),
                    modality=case,
                    level=rate,
                    missing=missing,
                )
            )
    return conditions


def missing_cases(
    cases: Sequence[str] | None, modalities: Sequence[str], strict: bool = False
) -> list[str] | None:
    """The grid's ``missing_cases`` that apply to the checkpoint's modalities.

    Args:
        cases: ``robustness.missing_cases``: modalities and :data:`BOTH`; ``None`` keeps
            ``None`` (every modality alone).
        modalities: The checkpoint's modalities.
        strict: Refuse cases for modalities the checkpoint lacks (a grid written for one
            model); else they are left out, so one grid serves many models.

    Raises:
        ValueError: A case named twice; with ``strict``, one that names no modality of the
            checkpoint.
    """
    if cases is None:
        return None
    chosen = [str(case) for case in cases]
    repeated = sorted({case for case in chosen if chosen.count(case) > 1})
    if repeated:
        raise ValueError(f"robustness.missing_cases names {repeated} more than once")
    unknown = [case for case in chosen if case != BOTH and case not in modalities]
    if unknown and strict:
        raise ValueError(
            f"robustness.missing_cases has {unknown}, but the checkpoint's modalities are "
            f"{list(modalities)} (a case is one of them or {BOTH!r})"
        )
    if unknown:
        log.info("robustness.missing_cases: %s left out (not among %s)", unknown, modalities)
    return [case for case in chosen if case not in unknown]


def noise_conditions(
    modalities: Sequence[str],
    perturbations: Mapping[str, Mapping[str, Any]],
    levels: Sequence[float],
    seed: int,
    strict: bool = False,
) -> list[Condition]:
    """Each perturbation of each modality at each level above 0.

    Args:
        modalities: The checkpoint's modalities.
        perturbations: ``{modality: {name: partial config taking level and seed}}``.
        levels: The levels.
        seed: Seed of every perturbation.
        strict: Refuse perturbations for modalities the checkpoint lacks (a grid written
            for one model); else they are left out, so one grid serves many models.

    Raises:
        ValueError: With ``strict``, perturbations for a modality the checkpoint lacks.
    """
    unknown = sorted(set(perturbations) - set(modalities))
    if unknown and strict:
        raise ValueError(
            f"robustness.perturbations has {unknown}, but the checkpoint's modalities are "
            f"{list(modalities)}"
        )
    conditions = []
    for modality, named in perturbations.items():
        if modality not in modalities:
            continue
        for name, node in (named or {}).items():
            for level in levels:
                if level == 0.0:
                    continue
                conditions.append(
                    Condition(
                        f"noise:{modality}/{name}@{level_name(level)}",
                        "noise",
                        tuple(modalities),
                        modality=modality,
                        perturbation=name,
                        level=level,
                        perturb=_builder(node, level, seed),
                    )
                )
    return conditions


def _builder(node: Any, level: float, seed: int) -> Callable[[], Any]:
    """Builds the perturbation of ``node`` (a ``_partial_`` config) at ``level``."""
    config = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node
    config = {key: value for key, value in dict(config).items() if key != "_partial_"}
    return lambda: instantiate(config, level=level, seed=seed)


def build_grid(grid: Mapping[str, Any], modalities: Sequence[str]) -> list[Condition]:
    """The conditions of a ``robustness`` config for a checkpoint with ``modalities``.

    Args:
        grid: ``name``, ``seed``, ``subsets`` (bool), ``missing_rates`` (levels),
            ``levels`` and ``perturbations`` (``{modality: {name: config}}``), and optionally
            ``missing_cases`` (the cases scored at each missing rate, see
            :func:`missing_rate_conditions`; unset or ``null``: every modality alone) and
            ``modalities``, which must equal the checkpoint's.
        modalities: The checkpoint's modalities.

    Raises:
        ValueError: Levels outside ``[0, 1]``, perturbations or missing cases for modalities
            the checkpoint lacks (with ``modalities`` set), a grid written for other
            modalities, a repeated missing case, or a perturbation that cannot be built
            (named).
    """
    unknown = [str(key) for key in grid if key not in GRID_KEYS]
    if unknown:
        hints = {key: difflib.get_close_matches(key, GRID_KEYS, n=1) for key in unknown}
        named = ", ".join(
            f"{key}" + (f" (did you mean {hint[0]}?)" if hint else "")
            for key, hint in hints.items()
        )
        raise ValueError(f"robustness has unknown keys: {named}; its keys are {list(GRID_KEYS)}")
    expected = grid.get("modalities")
    if expected and sorted(expected) != sorted(modalities):
        raise ValueError(
            f"robustness.modalities={list(expected)} but the checkpoint's modalities are "
            f"{list(modalities)}: this grid is for another model"
        )
    seed = int(grid.get("seed", 0))
    conditions = [Condition("clean", "clean", tuple(modalities))]
    if grid.get("subsets") and len(modalities) > 1:
        conditions += subset_conditions(modalities)
    rates = check_levels("robustness.missing_rates", grid.get("missing_rates") or [])
    cases = missing_cases(grid.get("missing_cases"), modalities, strict=bool(expected))
    if rates and len(modalities) > 1:
        conditions += missing_rate_conditions(modalities, rates, seed, cases)
    levels = check_levels("robustness.levels", grid.get("levels") or [])
    perturbations = grid.get("perturbations") or {}
    conditions += noise_conditions(modalities, perturbations, levels, seed, strict=bool(expected))
    for condition in conditions:
        if condition.perturb is not None:
            try:
                condition.perturb()
            except Exception as error:  # a bad _target_ or option, named before evaluating
                raise ValueError(
                    f"robustness.perturbations.{condition.modality}.{condition.perturbation}: "
                    f"cannot be built ({error})"
                ) from error
    return conditions
