"""Data modules over arrays: releases that ship tensors rather than one file per sample.

AV-MNIST (``.npy`` files) and CMU-MOSI / CMU-MOSEI (a pickle of feature sequences) as
MultiBench distributes them (Liang et al., NeurIPS 2021) hold whole splits as arrays. They
are read once (``.npy`` memory-mapped, so a 3 GB spectrogram file is not loaded at once),
screened at setup like the manifests (a non-finite feature row or a label out of range is a
bad sample named by file and index; ``on_bad_sample=raise|skip``), and served through the
encoders' processors like any other data.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import Any

import numpy as np
import torch

from mmexp.data.arrays import ArrayCollator, ArrayDataset, ArraySplit, nonfinite_rows
from mmexp.data.contract import STAGES
from mmexp.data.loaders import SplitLoaders
from mmexp.data.screening import POLICIES, SHOWN, BadSample
from mmexp.encoders.processors import ModalityProcessor

log = logging.getLogger(__name__)


class ArrayDataModule(SplitLoaders):
    """Train/val/test loaders over the splits a subclass reads (:meth:`read_splits`).

    Args:
        modalities: Modalities to load, in the order the model fuses them.
        batch_size: Training batch size (per process).
        eval_batch_size: Validation/test batch size; defaults to ``batch_size``.
        num_workers: Loader worker processes.
        pin_memory: Pin host memory for faster host-to-GPU copies.
        persistent_workers: Keep workers alive between epochs.
        on_bad_sample: ``raise`` stops at setup on a non-finite feature row or a label out of
            range, naming file and index; ``skip`` leaves them out, logs and records them.
        train_subset: Use only this many training samples (an int) or this fraction (a float
            in (0, 1]), drawn with ``subset_seed``; validation and test stay whole.
        subset_seed: Seed of the training subset draw.
    """

    # Real-valued targets (float labels, one output) instead of class indices.
    regression: bool = False
    # Valid range of regression targets (inclusive); None accepts any finite value.
    label_range: tuple[float, float] | None = None

    def __init__(
        self,
        modalities: Sequence[str],
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        on_bad_sample: str = "raise",
        train_subset: int | float | None = None,
        subset_seed: int = 0,
    ) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("data.modalities is empty; name at least one modality")
        if on_bad_sample not in POLICIES:
            raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got {on_bad_sample!r}")
        if train_subset is not None and not (
            (isinstance(train_subset, int) and train_subset >= 1)
            or (isinstance(train_subset, float) and 0 < train_subset <= 1)
        ):
            raise ValueError(
                f"data.train_subset must be a count >= 1 or a fraction in (0, 1], "
                f"got {train_subset!r}"
            )
        self.modalities = tuple(modalities)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.on_bad_sample = on_bad_sample
        self.train_subset = train_subset
        self.subset_seed = subset_seed
        self.bad_samples: list[BadSample] = []
        self.processors: dict[str, dict[str, ModalityProcessor]] = {}
        self.datasets: dict[str, ArrayDataset] = {}

    @property
    def label_names(self) -> list[str]:
        """Class names in index order (the target's name for a regression)."""
        raise NotImplementedError

    @property
    def label_report(self) -> dict[str, dict[str, Any]]:
        """Nothing to report: the labels are class indices (or values) of a published set."""
        return {}

    @property
    def num_classes(self) -> int:
        """Number of classes; 1 for a regression (one value per sample)."""
        return 1 if self.regression else len(self.label_names)

    def read_splits(self) -> dict[str, ArraySplit]:
        """The ``train``, ``val`` and ``test`` arrays, shapes checked; subclasses read them."""
        raise NotImplementedError

    def label_problems(self, labels: np.ndarray) -> np.ndarray:
        """``[N]`` flags of labels that are not a class index (or not a valid target)."""
        labels = np.asarray(labels, dtype=np.float64)
        valid = np.isfinite(labels)
        if self.regression:
            if self.label_range is not None:
                low, high = self.label_range
                valid &= (labels >= low) & (labels <= high)
        else:
            valid &= (labels == np.round(labels)) & (labels >= 0) & (labels < self.num_classes)
        return ~valid

    def _reason(self, key: str, label: Any) -> str:
        if key != "label":
            return f"non-finite values (NaN or inf) in {key}"
        if self.regression:
            interval = list(self.label_range) if self.label_range else "(-inf, inf)"
            return f"label {label.item()!r} is not a finite value in {interval}"
        return f"label {label.item()!r} is not a class index in [0, {self.num_classes})"

    def screen(self, stage: str, split: ArraySplit) -> np.ndarray:
        """Positions of the usable samples of ``stage``; the bad ones raised or recorded."""
        bad: dict[int, BadSample] = {}
        flags = {m: nonfinite_rows(split.arrays[m]) for m in self.modalities}
        flags["label"] = self.label_problems(split.labels)
        for key, rows in flags.items():
            for index in np.flatnonzero(rows).tolist():
                if index not in bad:
                    bad[index] = BadSample(
                        str(split.sources[key]),
                        stage,
                        split.name(index),
                        self._reason(key, split.labels[index]),
                    )
        if bad and self.on_bad_sample == "raise":
            listed = "\n  ".join(str(b) for b in list(bad.values())[:SHOWN])
            more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
            raise ValueError(
                f"{len(bad)} bad sample(s) in the {stage} split (set "
                f"data.on_bad_sample=skip to leave them out):\n  {listed}{more}"
            )
        if bad:
            log.warning(
                "data.on_bad_sample=skip: left out %d of %d %s samples, e.g. %s",
                len(bad),
                len(split),
                stage,
                next(iter(bad.values())),
            )
            self.bad_samples.extend(bad.values())
        kept = np.setdiff1d(np.arange(len(split)), np.fromiter(bad, dtype=np.int64))
        if not len(kept):
            raise ValueError(
                f"{split.sources['label']}: no usable samples left in the {stage} split"
            )
        return kept

    @cached_property
    def _splits(self) -> dict[str, tuple[ArraySplit, np.ndarray]]:
        splits = self.read_splits()
        return {stage: (splits[stage], self.screen(stage, splits[stage])) for stage in STAGES}

    def set_processors(
        self, train: Mapping[str, ModalityProcessor], evaluation: Mapping[str, ModalityProcessor]
    ) -> None:
        """Install the encoders' preprocessing; it must take arrays, not decoded files."""
        for name, processors in (("train", train), ("evaluation", evaluation)):
            missing = set(self.modalities) - set(processors)
            if missing:
                raise ValueError(f"no {name} processor for modalities {sorted(missing)}")
            for modality in self.modalities:
                if not getattr(processors[modality], "accepts_arrays", False):
                    raise ValueError(
                        f"model.encoders.{modality} preprocesses files ("
                        f"{type(processors[modality]).__name__}), but this data set holds "
                        f"arrays; choose an array encoder (model/encoders/{modality}=lenet or "
                        "features) or the data set's experiment (experiment=avmnist|mosi|mosei)"
                    )
        self.processors = {"train": dict(train), "eval": dict(evaluation)}
        self.datasets.clear()

    def dataset(self, stage: str, processed: bool = True) -> ArrayDataset:
        """The data set of one stage, with the stage's processors unless ``processed=False``."""
        split, positions = self._splits[stage]
        if stage == "train" and self.train_subset is not None:
            positions = self._subset(positions)
        processors = None
        if processed:
            if not self.processors:
                raise RuntimeError("call set_processors() with the encoders' processors first")
            processors = self.processors["train" if stage == "train" else "eval"]
        return ArrayDataset(split, positions, self.modalities, processors, stage)

    def _subset(self, positions: np.ndarray) -> np.ndarray:
        size = (
            self.train_subset
            if isinstance(self.train_subset, int)
            else max(1, round(self.train_subset * len(positions)))
        )
        if size > len(positions):
            raise ValueError(
                f"data.train_subset={self.train_subset} but the train split has "
                f"only {len(positions)} samples"
            )
        generator = torch.Generator().manual_seed(self.subset_seed)
        chosen = torch.randperm(len(positions), generator=generator)[:size].sort().values
        return positions[chosen.numpy()]

    def setup(self, stage: str | None = None) -> None:
        """Read the arrays and build the data sets needed for ``stage``."""
        stages = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", STAGES
        )
        for name in stages:
            if name not in self.datasets:
                self.datasets[name] = self.dataset(name)

    def collator(self, stage: str) -> ArrayCollator:
        """Batches of array rows processed for ``stage``."""
        return ArrayCollator(
            self.processors["train" if stage == "train" else "eval"], self.regression
        )
