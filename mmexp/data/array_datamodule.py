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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmexp.data.screening import POLICIES, SHOWN, BadSample
from mmexp.encoders.processors import ModalityProcessor

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")
# Rows checked for non-finite values per read: bounds memory on memory-mapped arrays.
CHUNK = 512


@dataclass
class ArraySplit:
    """The arrays of one split.

    Attributes:
        arrays: ``[N, ...]`` array per modality (memory-mapped ones are read row by row).
        labels: ``[N]`` class indices or real-valued targets.
        sources: File of each modality's array and of ``"label"``, named in messages.
        starts: ``[N]`` first real step per modality whose sequences are padded at the front
            (the steps before it are padding and are left out when read).
        scales: Factor each modality's values are multiplied by when read (e.g. 1/255).
        ids: Name of each sample for messages, when the release has one.
        rows: Row of each sample in its file when it differs from its position (a split
            cut from another, dropped samples), so that messages name the row in the file.
    """

    arrays: dict[str, Any]
    labels: np.ndarray
    sources: dict[str, Path]
    starts: dict[str, np.ndarray] = field(default_factory=dict)
    scales: dict[str, float] = field(default_factory=dict)
    ids: Sequence[str] | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, modality: str, index: int) -> np.ndarray:
        """One sample of ``modality`` as float32, padding left out and scaled."""
        # A copy: a view would keep a read-only memory-mapped page behind the tensor.
        value = np.array(self.arrays[modality][index], dtype=np.float32)
        if modality in self.starts:
            value = value[int(self.starts[modality][index]):]
        scale = self.scales.get(modality)
        return value * np.float32(scale) if scale is not None else value

    def name(self, index: int) -> str:
        """How messages name the sample at ``index``."""
        named = f" (id={self.ids[index]})" if self.ids is not None else ""
        return f"index {index if self.rows is None else int(self.rows[index])}{named}"


def nonfinite_rows(array: Any) -> np.ndarray:
    """``[N]`` flags of the rows of ``array`` holding a NaN or an infinity."""
    flags = np.zeros(len(array), dtype=bool)
    if not np.issubdtype(array.dtype, np.floating):
        return flags  # integers cannot hold either
    for start in range(0, len(array), CHUNK):
        block = np.asarray(array[start:start + CHUNK])
        flags[start:start + len(block)] = ~np.isfinite(block.reshape(len(block), -1)).all(1)
    return flags


class ArrayDataset(Dataset):
    """Samples of one split: each modality's array row, processed, with label and index."""

    def __init__(self, split: ArraySplit, positions: np.ndarray, modalities: Sequence[str],
                 processors: Mapping[str, ModalityProcessor] | None, stage: str) -> None:
        self.split = split
        self.positions = positions
        self.modalities = tuple(modalities)
        self.processors = dict(processors) if processors is not None else None
        self.stage = stage

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, position: int) -> dict[str, Any]:
        index = int(self.positions[position])
        sample: dict[str, Any] = {"index": index, "label": self.split.labels[index].item()}
        for modality in self.modalities:
            value: Any = self.split.sample(modality, index)
            if self.processors is not None:
                try:
                    value = self.processors[modality](value)
                except (ValueError, TypeError) as error:
                    raise type(error)(f"{self.split.sources[modality]}: {self.stage} "
                                      f"{self.split.name(index)}, {modality}: {error}") from error
            sample[modality] = value
        return sample


class ArrayCollator:
    """Collate array samples with each modality's processor; picklable for loader workers."""

    def __init__(self, processors: Mapping[str, ModalityProcessor], regression: bool) -> None:
        self.processors = dict(processors)
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``{modality: batch, "label": [B], "index": [B], "num_skipped": 0}``."""
        batch: dict[str, Any] = {name: processor.collate([s[name] for s in samples])
                                 for name, processor in self.processors.items()}
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=self.label_dtype)
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        batch["num_skipped"] = 0  # bad rows are found at setup, never while reading
        return batch


class ArrayDataModule(pl.LightningDataModule):
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

    def __init__(self, modalities: Sequence[str], batch_size: int = 64,
                 eval_batch_size: int | None = None, num_workers: int = 0,
                 pin_memory: bool = False, persistent_workers: bool = False,
                 on_bad_sample: str = "raise", train_subset: int | float | None = None,
                 subset_seed: int = 0) -> None:
        super().__init__()
        if not modalities:
            raise ValueError("data.modalities is empty; name at least one modality")
        if on_bad_sample not in POLICIES:
            raise ValueError(f"data.on_bad_sample must be one of {POLICIES}, got "
                             f"{on_bad_sample!r}")
        if train_subset is not None and not (
            (isinstance(train_subset, int) and train_subset >= 1)
            or (isinstance(train_subset, float) and 0 < train_subset <= 1)
        ):
            raise ValueError(f"data.train_subset must be a count >= 1 or a fraction in (0, 1], "
                             f"got {train_subset!r}")
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
                    bad[index] = BadSample(str(split.sources[key]), stage, split.name(index),
                                           self._reason(key, split.labels[index]))
        if bad and self.on_bad_sample == "raise":
            listed = "\n  ".join(str(b) for b in list(bad.values())[:SHOWN])
            more = f"\n  ... and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
            raise ValueError(f"{len(bad)} bad sample(s) in the {stage} split (set "
                             f"data.on_bad_sample=skip to leave them out):\n  {listed}{more}")
        if bad:
            log.warning("data.on_bad_sample=skip: left out %d of %d %s samples, e.g. %s",
                        len(bad), len(split), stage, next(iter(bad.values())))
            self.bad_samples.extend(bad.values())
        kept = np.setdiff1d(np.arange(len(split)), np.fromiter(bad, dtype=np.int64))
        if not len(kept):
            raise ValueError(f"{split.sources['label']}: no usable samples left in the {stage} "
                             "split")
        return kept

    @cached_property
    def _splits(self) -> dict[str, tuple[ArraySplit, np.ndarray]]:
        splits = self.read_splits()
        return {stage: (splits[stage], self.screen(stage, splits[stage])) for stage in STAGES}

    def set_processors(self, train: Mapping[str, ModalityProcessor],
                       evaluation: Mapping[str, ModalityProcessor]) -> None:
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
                        "features) or the data set's experiment (experiment=avmnist|mosi|mosei)")
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
        size = (self.train_subset if isinstance(self.train_subset, int)
                else max(1, round(self.train_subset * len(positions))))
        if size > len(positions):
            raise ValueError(f"data.train_subset={self.train_subset} but the train split has "
                             f"only {len(positions)} samples")
        generator = torch.Generator().manual_seed(self.subset_seed)
        chosen = torch.randperm(len(positions), generator=generator)[:size].sort().values
        return positions[chosen.numpy()]

    def setup(self, stage: str | None = None) -> None:
        """Read the arrays and build the data sets needed for ``stage``."""
        stages = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(
            stage or "", STAGES)
        for name in stages:
            if name not in self.datasets:
                self.datasets[name] = self.dataset(name)

    def _loader(self, stage: str, shuffle: bool) -> DataLoader:
        if stage not in self.datasets:
            self.setup()
        key = "train" if stage == "train" else "eval"
        return DataLoader(
            self.datasets[stage],
            batch_size=self.batch_size if stage == "train" else self.eval_batch_size,
            shuffle=shuffle, num_workers=self.num_workers, pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=ArrayCollator(self.processors[key], self.regression), drop_last=False)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches."""
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in file order."""
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in file order."""
        return self._loader("test", shuffle=False)
