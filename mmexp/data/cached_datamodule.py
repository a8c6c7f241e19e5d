"""A data module serving cached encoder features instead of decoding files.

Built by :class:`mmexp.data.feature_cache.FeatureCache`; it keeps everything else of the
data module it wraps (class count, label names, skipped samples) so that training code
cannot tell the difference, apart from batches that no longer need decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmexp.data.contract import MultimodalDataModule
from mmexp.data.loaders import LoopProgress, SplitLoaders, stage_loader
from mmexp.data.screening import BadSample
from mmexp.encoders.base import CachedFeatures
from mmexp.encoders.processors import ModalityProcessor

# Row-aligned tensors of a split, next to the features of the modality.
LABELS, POSITIONS = "__labels__", "__positions__"


@dataclass
class SplitFeatures:
    """One modality's cached features on one split.

    Attributes:
        features: ``{name: [N, ...]}``; token sequences are right-padded to the longest.
        labels: ``[N]`` (or ``[N, C]`` multi-hot) labels of the rows.
        positions: ``[N]`` sample index of each row in the split (rows of samples skipped
            as unreadable are absent).
    """

    features: dict[str, torch.Tensor]
    labels: torch.Tensor
    positions: torch.Tensor

    @classmethod
    def from_rows(
        cls,
        rows: Sequence[Mapping[str, torch.Tensor]],
        labels: torch.Tensor,
        positions: torch.Tensor,
    ) -> SplitFeatures:
        """Stack per-sample rows, padding token sequences (and their masks) to one length."""
        if not rows:
            raise ValueError("feature cache: a split produced no samples")
        features = {}
        for name in rows[0]:
            values = [row[name] for row in rows]
            if name in ("tokens", "mask"):
                length = max(v.shape[0] for v in values)
                values = [
                    torch.nn.functional.pad(v, (0, 0) * (v.dim() - 1) + (0, length - v.shape[0]))
                    for v in values
                ]
            features[name] = torch.stack(values)
        # Token features are stored in half precision: a quarter of the disk of float64,
        # half of float32, and more precise than the bf16 most GPU runs train in.
        if "tokens" in features:
            features["tokens"] = features["tokens"].half()
        return cls(features, labels, positions)

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, torch.Tensor]) -> SplitFeatures:
        """Inverse of :meth:`tensors` (a cache file read back)."""
        features = {k: v for k, v in tensors.items() if k not in (LABELS, POSITIONS)}
        return cls(features, tensors[LABELS], tensors[POSITIONS])

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything in one flat dict, as a cache file stores it."""
        return {
            **{k: v.contiguous() for k, v in self.features.items()},
            LABELS: self.labels.contiguous(),
            POSITIONS: self.positions.contiguous(),
        }

    def __len__(self) -> int:
        return len(self.positions)


class CachedSplit(Dataset):
    """Rows of one split across modalities; item ``i`` is the ``i``-th common sample."""

    def __init__(self, modalities: Mapping[str, SplitFeatures]) -> None:
        first = next(iter(modalities.values()))
        for name, split in modalities.items():
            if not torch.equal(split.positions, first.positions):
                raise ValueError(
                    f"feature cache: modality {name!r} covers other samples than "
                    f"{next(iter(modalities))!r}; delete the cache entries"
                )
        self.modalities = dict(modalities)
        self.labels = first.labels
        self.positions = first.positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, row: int) -> int:
        return row

    def collate(self, rows: Sequence[int]) -> dict[str, Any]:
        """Gather rows of every modality; token padding trimmed to the batch's longest."""
        index = torch.as_tensor(list(rows), dtype=torch.long)
        batch: dict[str, Any] = {}
        for name, split in self.modalities.items():
            features = {key: value[index] for key, value in split.features.items()}
            if "mask" in features:
                # Up to the last position any sample uses (left padding stays intact).
                used = features["mask"].any(dim=0).nonzero()
                length = int(used.max()) + 1 if len(used) else 1
                features["mask"] = features["mask"][:, :length].bool()
                features["tokens"] = features["tokens"][:, :length]
            features = {
                key: value.float() if value.dtype == torch.float16 else value
                for key, value in features.items()
            }
            batch[name] = CachedFeatures(features)
        batch["label"] = self.labels[index]
        batch["index"] = self.positions[index]
        batch["num_skipped"] = 0
        return batch


class CachedDataModule(SplitLoaders):
    """Loaders over cached features; other attributes come from the wrapped data module.

    Args:
        base: The data module the features were computed from.
        splits: ``{stage: {modality: SplitFeatures}}``.
        report: Cache keys and whether each entry was reused, for the run record.
    """

    def __init__(
        self,
        base: MultimodalDataModule,
        splits: Mapping[str, Mapping[str, SplitFeatures]],
        report: Mapping[str, Any],
    ) -> None:
        super().__init__()
        self.base = base
        # Which samples lack a modality depends on the sample only: cached or not, the same.
        self.missing = getattr(base, "missing", None)
        self.splits = {stage: CachedSplit(features) for stage, features in splits.items()}
        self.report = dict(report)

    # The members of the data-module contract (mmexp.data.contract), as the wrapped module
    # has them; other attributes are looked up there too (__getattr__).
    @property
    def num_classes(self) -> int:
        """The wrapped data module's class count."""
        return self.base.num_classes

    @property
    def label_names(self) -> list[str]:
        """The wrapped data module's class names."""
        return self.base.label_names

    @property
    def label_report(self) -> Mapping[str, Mapping[str, Any]]:
        """The wrapped data module's report of suspicious labels."""
        return self.base.label_report

    @property
    def bad_samples(self) -> list[BadSample]:
        """The rows the wrapped data module left out at setup."""
        return self.base.bad_samples

    def set_processors(
        self,
        train: Mapping[str, ModalityProcessor],
        evaluation: Mapping[str, ModalityProcessor],
    ) -> None:
        """Install preprocessing in the wrapped data module (the cached loaders have none)."""
        self.base.set_processors(train, evaluation)

    def __getattr__(self, name: str) -> Any:
        # Other attributes (batch sizes, sources, ...): as the wrapped module has them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["base"], name)

    def setup(self, stage: str | None = None) -> None:
        """Nothing to read: the features are in memory."""

    def loader(self, stage: str) -> DataLoader:
        """The loader of ``stage``, over the cached features."""
        split = self.splits[stage]
        batch_size = getattr(self.base, "batch_size", 64)
        if stage != "train":
            batch_size = getattr(self.base, "eval_batch_size", None) or batch_size
        # In-memory gathers are faster in the main process than any worker hand-off.
        return stage_loader(
            split,
            stage,
            batch_size,
            LoopProgress(self),
            collate_fn=self.marked(stage, split.collate),
            num_workers=0,
        )
