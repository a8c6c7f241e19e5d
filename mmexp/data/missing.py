"""Which samples lack which modality: missing modalities fixed per sample by a seed.

The protocol of Ma et al., "Are Multimodal Transformers Robust to Missing Modality?" (CVPR
2022) and Lee et al., "Multimodal Prompting with Missing Modalities for Visual Recognition"
(CVPR 2023): at a total missing rate ``eta``, ``eta`` of the samples lack the text (text
missing), or the image (image missing), or ``eta / 2`` lack each (both missing); every other
sample is complete. The samples that lack a modality are fixed: the same in every epoch,
every run with the same seed and every process.

Each sample draws a uniform number ``u`` from a hash of ``(seed, split, index)``; nothing
depends on the order samples are read in, the number of loader workers or processes. Two
assignments are offered:

* exclusive (the protocol above): the modalities' rates are disjoint intervals of
  ``[0, 1)``; a sample whose ``u`` falls in a modality's interval lacks that modality and no
  other, so no sample loses every modality. The rates must sum to at most 1. The interval
  of modality ``k`` of ``M`` grows from the point ``k / (M - 1)`` with its own rate alone
  (the first up from 0, the last down from 1): with two modalities they never meet while
  the rates sum to at most 1, and with more they do not for equal rates (case ``both``).
  Rates these intervals cannot keep apart (three or more modalities, unequal rates) are
  laid out one after the other instead, which is not nested.
* independent: each modality draws its own ``u``; at least one modality must keep rate 0,
  so that no sample can lose every modality.

The rates are nested: a sample missing a modality at rate ``r`` misses it at every rate
above ``r`` (exclusive, three or more modalities: as stated above), so a curve over rates
degrades the same samples further, never others.

The absent modality reaches the fusion as ``present=False``; the batch still holds its
decoded value, which the model never encodes (:mod:`mmexp.lit.presence`).
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from mmexp.data.contract import STAGES

#: Batch key holding ``{modality: [B] bool}``; ``False`` marks a sample lacking the modality.
PRESENT_KEY = "present"

_MASK64 = (1 << 64) - 1


def _splitmix64(values: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser on ``uint64`` values: a stateless, well-mixed hash."""
    with np.errstate(over="ignore"):
        z = values + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _word(text: str) -> int:
    """A stable 64-bit word for a name (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little")


def sample_uniforms(seed: int, stream: str, index: torch.Tensor | np.ndarray) -> np.ndarray:
    """One uniform number in ``[0, 1)`` per sample index, fixed by ``seed`` and ``stream``.

    Args:
        seed: The seed of the assignment.
        stream: Names the draw (split and modality), so that draws do not repeat each other.
        index: ``[B]`` sample indices within their split.
    """
    rows = np.asarray(torch.as_tensor(index).cpu().numpy(), dtype=np.int64).astype(np.uint64)
    key = np.uint64(_splitmix64(np.array([(seed & _MASK64) ^ _word(stream)], np.uint64))[0])
    mixed = _splitmix64(_splitmix64(rows ^ key) + key)
    # The top 53 bits as a double in [0, 1), as numpy's generators do.
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class MissingModalities:
    """Per-sample missing modalities at fixed rates (see the module docstring).

    Args:
        rates: Missing rate of each modality in ``[0, 1]``; modalities left out keep rate 0
            (``None``: none missing).
        seed: Seed of the assignment (fixed across training seeds by default, so that seeds
            vary the model and not which samples are missing).
        exclusive: One missing modality per sample at most (the published protocol); else
            each modality is drawn on its own.
        splits: The splits the rates apply to; the others are complete.

    Raises:
        ValueError: A rate outside ``[0, 1]``, exclusive rates summing to more than 1,
            independent rates that could leave a sample with no modality, or an unknown
            split.
    """

    def __init__(
        self,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        exclusive: bool = True,
        splits: Sequence[str] = STAGES,
    ) -> None:
        self.rates = {str(m): float(r) for m, r in dict(rates or {}).items()}
        for modality, rate in self.rates.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(
                    f"data.missing.rates.{modality}={rate} is outside [0, 1]; a missing rate "
                    "is the fraction of samples that lack the modality"
                )
        unknown_splits = sorted(set(splits) - set(STAGES))
        if unknown_splits:
            raise ValueError(
                f"data.missing.splits has {unknown_splits}; the splits are {list(STAGES)}"
            )
        total = sum(self.rates.values())
        if exclusive and total > 1.0 + 1e-9:
            raise ValueError(
                f"data.missing.rates {self.rates} sum to {total:g} > 1; with exclusive=true "
                "each sample lacks one modality at most. Lower them or set exclusive=false"
            )
        self.seed = int(seed)
        self.exclusive = bool(exclusive)
        self.splits = tuple(splits)

    @classmethod
    def for_case(
        cls,
        case: str,
        rate: float,
        modalities: Sequence[str] = ("image", "text"),
        seed: int = 0,
        splits: Sequence[str] = STAGES,
    ) -> MissingModalities:
        """The missing cases of Ma et al. / Lee et al. at a total missing rate ``rate``.

        Args:
            case: A modality name (that modality missing in ``rate`` of the samples) or
                ``"both"`` (``rate / M`` of the samples lack each of the ``M`` modalities,
                no sample more than one; for two modalities, ``rate / 2`` each).
            rate: The total missing rate ``eta``.
            modalities: The modalities of the data.
            seed: See the class.
            splits: See the class.

        Raises:
            ValueError: ``case`` is neither ``"both"`` nor one of ``modalities``, or ``rate``
                is outside ``[0, 1]``.
        """
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(
                f"data.missing.rate={rate} is outside [0, 1]; it is the fraction of samples "
                "that lack a modality"
            )
        if case == "both":
            rates = {m: rate / len(modalities) for m in modalities}
        elif case in modalities:
            rates = {case: rate}
        else:
            raise ValueError(f"data.missing.case={case!r}: choose one of {[*modalities, 'both']}")
        return cls(rates, seed=seed, exclusive=True, splits=splits)

    def check(self, modalities: Sequence[str]) -> None:
        """Refuse rates for modalities the data does not load, and unsafe assignments.

        Raises:
            ValueError: A rate names an unknown modality; a single-modality data set (its
                samples would have nothing left); independent rates all above 0.
        """
        unknown = sorted(set(self.rates) - set(modalities))
        if unknown:
            raise ValueError(
                f"data.missing.rates names {unknown}, which data.modalities="
                f"{list(modalities)} does not load"
            )
        if any(self.rates.values()) and len(modalities) < 2:
            raise ValueError(
                f"data.missing with data.modalities={list(modalities)}: a sample lacking its "
                "only modality has nothing to predict from"
            )
        if not self.exclusive and all(self.rates.get(m, 0.0) > 0 for m in modalities):
            raise ValueError(
                f"data.missing.rates {self.rates} with exclusive=false: a sample could lack "
                f"every modality of {list(modalities)}; keep one modality's rate at 0 or set "
                "exclusive=true"
            )

    def applies_to(self, stage: str) -> bool:
        """Whether the rates apply to the split ``stage``."""
        return stage in self.splits and any(self.rates.values())

    def present(
        self, stage: str, index: torch.Tensor, modalities: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """``{modality: [B] bool}`` for a batch of ``stage`` with sample indices ``index``."""
        count = len(index)
        if not self.applies_to(stage):
            return {m: torch.ones(count, dtype=torch.bool) for m in modalities}
        if self.exclusive:
            draw = sample_uniforms(self.seed, f"missing/{stage}", index)
            present, taken = {}, np.zeros(len(draw), dtype=bool)
            for modality, (low, high) in self.intervals(modalities).items():
                # taken: intervals that meet by rounding still miss one modality per sample
                missing = (draw >= low) & (draw < high) & ~taken
                present[modality] = torch.from_numpy(~missing)
                taken |= missing
            return present
        return {
            m: torch.from_numpy(
                sample_uniforms(self.seed, f"missing/{stage}/{m}", index) >= self.rates.get(m, 0.0)
            )
            for m in modalities
        }

    def intervals(self, modalities: Sequence[str]) -> dict[str, tuple[float, float]]:
        """The interval of ``[0, 1)`` of each modality's exclusive draw (module docstring).

        Anchored at ``k / (M - 1)`` so that each grows with its own rate only (the rates nest);
        one after the other where anchored intervals would overlap.
        """
        rates = [self.rates.get(m, 0.0) for m in modalities]
        last = max(len(modalities) - 1, 1)
        spans = [(k / last * (1.0 - r), k / last * (1.0 - r) + r) for k, r in enumerate(rates)]
        used = sorted(span for span, rate in zip(spans, rates, strict=True) if rate > 0)
        if any(low < high - 1e-9 for (_, high), (low, _) in itertools.pairwise(used)):
            bounds = [0.0, *itertools.accumulate(rates)]
            spans = list(itertools.pairwise(bounds))
        return dict(zip(modalities, spans, strict=True))

    def describe(self) -> dict[str, Any]:
        """The assignment as the run record keeps it."""
        return {
            "rates": dict(self.rates),
            "seed": self.seed,
            "exclusive": self.exclusive,
            "splits": list(self.splits),
        }


class MarkMissing:
    """A collate function that adds :data:`PRESENT_KEY` to the batches of one split.

    Picklable for loader workers. Presence the collated batch already carries (a data set
    whose samples lack modalities of their own) is combined with the missing assignment.

    Args:
        collate: The data module's own collate function.
        missing: The assignment.
        stage: The split the batches come from.
        modalities: The modalities of the batches.
    """

    def __init__(
        self,
        collate: Callable[[Sequence[Any]], dict[str, Any]],
        missing: MissingModalities,
        stage: str,
        modalities: Sequence[str],
    ) -> None:
        self.collate = collate
        self.missing = missing
        self.stage = stage
        self.modalities = tuple(modalities)

    def __call__(self, samples: Sequence[Any]) -> dict[str, Any]:
        """The collated batch with each modality's ``[B]`` presence."""
        batch = self.collate(samples)
        present = self.missing.present(self.stage, batch["index"], self.modalities)
        own = batch.get(PRESENT_KEY) or {}
        batch[PRESENT_KEY] = {
            m: present[m] & own[m].bool() if m in own else present[m] for m in self.modalities
        }
        return batch
