"""CMU-MOSI and CMU-MOSEI sentiment, read from the aligned-feature pickles of MulT/MultiBench.

CMU-MOSI (Zadeh et al., IEEE Intelligent Systems 2016) and CMU-MOSEI (Zadeh et al., ACL 2018)
label opinion segments of YouTube videos with a sentiment score in [-3, 3]. MulT (Tsai et al.,
ACL 2019) and MultiBench (Liang et al., NeurIPS 2021) distribute them word-aligned as one
pickle (``mosi_data.pkl``, ``mosei_senti_data.pkl``)::

    {"train" | "valid" | "test": {"text": [N, 50, 300],   GloVe word vectors
                                  "audio": [N, 50, Fa],   COVAREP (MOSI 5, MOSEI 74)
                                  "vision": [N, 50, Fv],  Facet (MOSI 20, MOSEI 35)
                                  "labels": [N, 1, 1],    sentiment score
                                  "id": [N, ...]}}

Sequences are zero-padded at the front. MultiBench's loader (``datasets/affect/get_data.py``)
sets ``-inf`` audio values to 0, drops segments with no word (all-zero text), and starts
every modality of a segment at its first word (aligned data; each modality at its own first
non-zero step for unaligned pickles). This module does the same. Published splits: MOSI
1,284 / 229 / 686, MOSEI 16,326 / 1,871 / 4,659. The pickle is unpickled, which can run code
from the file: read only copies from the release.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mmexp.data.array_datamodule import ArrayDataModule
from mmexp.data.arrays import ArraySplit
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

RELEASES: dict[str, dict[str, Any]] = {
    "mosi": {
        "name": "CMU-MOSI",
        "file": "mosi_data.pkl",
        "counts": {"train": 1284, "valid": 229, "test": 686},
        "feature_dims": {"text": 300, "audio": 5, "vision": 20},
    },
    "mosei": {
        "name": "CMU-MOSEI",
        "file": "mosei_senti_data.pkl",
        "counts": {"train": 16326, "valid": 1871, "test": 4659},
        "feature_dims": {"text": 300, "audio": 74, "vision": 35},
    },
}
OBTAIN = (
    "The word-aligned pickles are distributed by MultiBench (Affective Computing section "
    "of https://github.com/pliang279/MultiBench) and MulT "
    "(https://github.com/yaohungt/Multimodal-Transformer); the raw data come from the "
    "CMU-MultimodalSDK. Place the .pkl file in the folder."
)
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}
MODALITIES = ("text", "audio", "vision")


def first_real_step(sequences: np.ndarray) -> np.ndarray:
    """``[N]`` index of the first step with a non-zero feature (``T`` when there is none)."""
    real = (sequences != 0).any(axis=2)
    return np.where(real.any(axis=1), real.argmax(axis=1), sequences.shape[1])


def sample_ids(ids: Any, count: int) -> list[str] | None:
    """Readable segment ids (``video[start, end]``; MOSI stores bytes), or ``None``."""
    if ids is None or len(ids) != count:
        return None

    def text(value: Any) -> str:
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)

    return ["/".join(text(v) for v in np.atleast_1d(row)) for row in ids]


class AffectDataModule(ArrayDataModule):
    """Sentiment regression on word-aligned text, audio and vision feature sequences.

    Args:
        root: Folder holding the pickle.
        dataset: ``mosi`` or ``mosei``: file name, published counts and feature widths.
        file: Pickle name inside ``root``; ``None`` = the release's name.
        feature_dims: Features per step of each modality, checked at setup (the encoders'
            ``input_dim`` reads them); ``None`` = the release's widths.
        aligned: Word-aligned pickle (every modality starts at the first word); ``False``
            for the unaligned ones (each modality starts at its own first non-zero step).
        drop_empty_text: Drop segments without any word, as MultiBench does.
        check_counts: Compare split sizes with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ArrayDataModule` (batch size, workers,
            ``on_bad_sample``, ``train_subset``...).
    """

    regression = True
    label_range = (-3.0, 3.0)

    def __init__(
        self,
        root: str | Path,
        dataset: str = "mosi",
        file: str | None = None,
        feature_dims: Mapping[str, int] | None = None,
        aligned: bool = True,
        drop_empty_text: bool = True,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        if dataset not in RELEASES:
            raise ValueError(f"data.dataset must be one of {sorted(RELEASES)}, got {dataset!r}")
        loader_options.setdefault("modalities", list(MODALITIES))
        super().__init__(**loader_options)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(
                f"data.modalities has {sorted(unknown)}; "
                f"{RELEASES[dataset]['name']} provides {list(MODALITIES)}"
            )
        self.release = RELEASES[dataset]
        self.root = Path(root)
        self.path = self.root / (file or self.release["file"])
        self.feature_dims = dict(feature_dims or self.release["feature_dims"])
        self.aligned = aligned
        self.drop_empty_text = drop_empty_text
        self.count_check = check_counts

    @property
    def label_names(self) -> list[str]:
        """The target: one sentiment score."""
        return ["sentiment"]

    def _array(self, part: Mapping[str, Any], key: str, source: str) -> np.ndarray:
        if key not in part:
            raise ValueError(f"{self.path}: {source} has no {key!r} array (keys: {sorted(part)})")
        return np.asarray(part[key])

    def read_split(self, stage: str, part: Mapping[str, Any]) -> ArraySplit:
        """One split's arrays: shapes checked, ``-inf`` audio zeroed, padding located."""
        key = SPLIT_KEYS[stage]
        labels = self._array(part, "labels", key)
        arrays: dict[str, np.ndarray] = {}
        for modality in MODALITIES:  # all three: the text locates the aligned start
            # No copy when the release is float32 already (MOSEI's arrays are ~2 GB).
            array = self._array(part, modality, key).astype(np.float32, copy=False)
            width = self.feature_dims.get(modality)
            if array.ndim != 3 or (width is not None and array.shape[2] != width):
                raise ValueError(
                    f"{self.path}: {key}/{modality} should be [N, T, {width}], "
                    f"got {list(array.shape)} (data.feature_dims.{modality})"
                )
            if len(array) != len(labels):
                raise ValueError(
                    f"{self.path}: {key}/{modality} has {len(array)} samples but "
                    f"{key}/labels has {len(labels)}"
                )
            arrays[modality] = array
        if labels.size != len(labels):
            raise ValueError(
                f"{self.path}: {key}/labels should hold one score per sample "
                f"([N, 1, 1]), got {list(labels.shape)}"
            )
        # The COVAREP features hold -inf (log of 0); MulT and MultiBench read them as 0.
        arrays["audio"][arrays["audio"] == -np.inf] = 0.0
        ids = sample_ids(part.get("id"), len(labels))
        starts = {m: first_real_step(arrays["text" if self.aligned else m]) for m in MODALITIES}
        labels = labels.reshape(-1).astype(np.float32)
        empty = starts["text"] == arrays["text"].shape[1]
        kept = None
        if self.drop_empty_text and empty.any():
            kept = np.flatnonzero(~empty)
            log.info(
                "%s: dropped %d %s segments without words (as MultiBench does)",
                self.path.name,
                int(empty.sum()),
                key,
            )
            arrays = {m: a[kept] for m, a in arrays.items()}
            starts = {m: s[kept] for m, s in starts.items()}
            labels, ids = labels[kept], [ids[i] for i in kept] if ids is not None else None
        return ArraySplit(
            arrays={m: arrays[m] for m in self.modalities},
            labels=labels,
            sources={**{m: self.path for m in self.modalities}, "label": self.path},
            starts={m: starts[m] for m in self.modalities},
            ids=ids,
            rows=kept,
        )

    def read_splits(self) -> dict[str, ArraySplit]:
        """Unpickle the release; check split sizes against the published ones."""
        with require_file(self.path, self.release["name"], OBTAIN).open("rb") as handle:
            data = pickle.load(handle)  # the release format; see the module notes
        missing = [key for key in SPLIT_KEYS.values() if key not in data]
        if missing:
            raise ValueError(f"{self.path}: no {missing} split (keys: {sorted(data)})")
        found = {key: len(np.asarray(data[key].get("labels", []))) for key in SPLIT_KEYS.values()}
        check_counts(self.release["name"], found, self.release["counts"], self.count_check)
        return {stage: self.read_split(stage, data[key]) for stage, key in SPLIT_KEYS.items()}
