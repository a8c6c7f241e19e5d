"""Arrays of one split, read sample by sample: the data set and collator of array releases.

Data sets distributed as whole-split arrays (``.npy`` files, pickled feature sequences) keep
them in memory or memory-mapped; a sample is a row, copied out when read, with the leading
padding of front-padded sequences cut and a scale applied. Non-finite rows are found with
:func:`nonfinite_rows` at setup, a bounded chunk at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from mmexp.encoders.processors import ModalityProcessor

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
            value = value[int(self.starts[modality][index]) :]
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
        block = np.asarray(array[start : start + CHUNK])
        flags[start : start + len(block)] = ~np.isfinite(block.reshape(len(block), -1)).all(1)
    return flags


class ArrayDataset(Dataset):
    """Samples of one split: each modality's array row, processed, with label and index."""

    def __init__(
        self,
        split: ArraySplit,
        positions: np.ndarray,
        modalities: Sequence[str],
        processors: Mapping[str, ModalityProcessor] | None,
        stage: str,
    ) -> None:
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
                    raise type(error)(
                        f"{self.split.sources[modality]}: {self.stage} "
                        f"{self.split.name(index)}, {modality}: {error}"
                    ) from error
            sample[modality] = value
        return sample


class ArrayCollator:
    """Collate array samples with each modality's processor; picklable for loader workers."""

    def __init__(self, processors: Mapping[str, ModalityProcessor], regression: bool) -> None:
        self.processors = dict(processors)
        self.label_dtype = torch.float32 if regression else torch.long

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """``{modality: batch, "label": [B], "index": [B], "num_skipped": 0}``."""
        batch: dict[str, Any] = {
            name: processor.collate([s[name] for s in samples])
            for name, processor in self.processors.items()
        }
        batch["label"] = torch.tensor([s["label"] for s in samples], dtype=self.label_dtype)
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        batch["num_skipped"] = 0  # bad rows are found at setup, never while reading
        return batch
