"""CMU-MOSI and CMU-MOSEI sentiment, read from the feature pickles of MulT and MultiBench.

CMU-MOSI (Zadeh et al., IEEE Intelligent Systems 2016) and CMU-MOSEI (Zadeh et al., ACL 2018)
label opinion segments of YouTube videos with a sentiment score in [-3, 3]. Each release is
one pickle in the same layout::

    {"train" | "valid" | "test": {"text": [N, 50, 300],   GloVe word vectors
                                  "audio": [N, 50, Fa],   COVAREP
                                  "vision": [N, 50, Fv],  Facet
                                  "labels": [N, 1, 1],    sentiment score
                                  "id": [N, ...]}}

The releases (``data.release``) differ in file and feature widths:

- ``mult``: MulT's word-aligned pickles (Tsai et al., ACL 2019; ``src/dataset.py`` reads
  ``<name>_data.pkl``): ``mosi_data.pkl`` (text/audio/vision 300/5/20) and
  ``mosei_senti_data.pkl`` (300/74/35). MultiBench's examples load the same MOSEI file.
- ``multibench`` (MOSI only): MultiBench's own ``mosi_raw.pkl`` (Liang et al., NeurIPS 2021;
  made by ``datasets/affect/get_raw_data.py`` from GloVe, COVAREP and FACET 4.2, 300/74/35,
  as its examples' ``GRU(35, ...)``, ``GRU(74, ...)`` encoders read it), the README's file.

Both use the CMU-MultimodalSDK's standard folds. Sequences are zero-padded at the front.
MultiBench's loader (``datasets/affect/get_data.py``) sets ``-inf`` audio values to 0, drops
segments with no word (all-zero text), and starts every modality of a segment at its first
word (aligned data; each modality at its own first non-zero step for unaligned pickles).
This module does the same, and with ``clean_nonfinite`` (the default) also sets the other
non-finite feature values (NaN, ``+inf``, ``-inf`` outside the audio, float64 values beyond
float32's range) to 0, counting them per split and modality for the log and the run record
(``data_cleaned`` in ``results.json``) rather than stopping on them. Published splits: MOSI
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
from mmexp.data.arrays import CHUNK, ArraySplit
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

DEFAULT_RELEASE = "mult"
MOSI_COUNTS = {"train": 1284, "valid": 229, "test": 686}
_MULT = "https://github.com/yaohungt/Multimodal-Transformer (Datasets section)"
_MULTIBENCH = "the Affective Computing section of https://github.com/pliang279/MultiBench"
# Per data set and release: file, published counts, feature widths, where to get it.
RELEASES: dict[str, dict[str, dict[str, Any]]] = {
    "mosi": {
        "mult": {
            "name": "CMU-MOSI (MulT)",
            "file": "mosi_data.pkl",
            "counts": MOSI_COUNTS,
            "feature_dims": {"text": 300, "audio": 5, "vision": 20},
            "obtain": (
                f"MulT's word-aligned mosi_data.pkl is linked from {_MULT}. MultiBench's "
                f"own MOSI file is mosi_raw.pkl ({_MULTIBENCH}): set data.release=multibench "
                "for it."
            ),
        },
        "multibench": {
            "name": "CMU-MOSI (MultiBench)",
            "file": "mosi_raw.pkl",
            "counts": MOSI_COUNTS,
            "feature_dims": {"text": 300, "audio": 74, "vision": 35},
            "obtain": (
                f"MultiBench's mosi_raw.pkl is in the mosi folder linked from {_MULTIBENCH} "
                "(made by its datasets/affect/get_raw_data.py). MulT's mosi_data.pkl is "
                "data.release=mult."
            ),
        },
    },
    "mosei": {
        "mult": {
            "name": "CMU-MOSEI",
            "file": "mosei_senti_data.pkl",
            "counts": {"train": 16326, "valid": 1871, "test": 4659},
            "feature_dims": {"text": 300, "audio": 74, "vision": 35},
            "obtain": (
                f"The word-aligned mosei_senti_data.pkl is linked from {_MULT} and from the "
                f"mosei folder of {_MULTIBENCH}; MultiBench's examples load this file too."
            ),
        },
    },
}
SPLIT_KEYS = {"train": "train", "val": "valid", "test": "test"}
# Kinds of non-finite values, as counted and recorded.
NONFINITE = ("nan", "inf", "-inf")
MODALITIES = ("text", "audio", "vision")


def release_of(dataset: str, release: str | None = None) -> dict[str, Any]:
    """The entry of ``dataset``'s ``release`` in :data:`RELEASES` (``None``: MulT's).

    Raises:
        ValueError: An unknown data set or release, the known ones named.
    """
    if dataset not in RELEASES:
        raise ValueError(f"data.dataset must be one of {sorted(RELEASES)}, got {dataset!r}")
    releases = RELEASES[dataset]
    if (release or DEFAULT_RELEASE) not in releases:
        raise ValueError(
            f"data.release for {dataset} must be one of {sorted(releases)}, got {release!r}"
        )
    return releases[release or DEFAULT_RELEASE]


def feature_widths(dataset: str, release: str | None = None) -> dict[str, int]:
    """Features per step of each modality in a release: what ``data.feature_dims`` reads."""
    return dict(release_of(dataset, release)["feature_dims"])


def zero_nonfinite(array: np.ndarray, kinds: tuple[str, ...] = NONFINITE) -> dict[str, int]:
    """Set the values of ``kinds`` (of :data:`NONFINITE`) in ``array`` to 0, in place.

    A bounded chunk of rows at a time: MOSEI's text array alone is about 1 GB.

    Returns:
        The values zeroed per kind and ``samples``, the rows holding any; ``{}`` for none.
    """
    tests = {"nan": np.isnan, "inf": np.isposinf, "-inf": np.isneginf}
    counts = dict.fromkeys(kinds, 0)
    samples = 0
    for start in range(0, len(array), CHUNK):
        block = array[start : start + CHUNK]  # a view: zeroing it zeroes the array
        found = {kind: tests[kind](block) for kind in kinds}
        bad = np.logical_or.reduce(list(found.values()))
        if not bad.any():
            continue
        for kind, flags in found.items():
            counts[kind] += int(flags.sum())
        samples += int(bad.reshape(len(block), -1).any(axis=1).sum())
        block[bad] = 0.0
    return {**{k: n for k, n in counts.items() if n}, "samples": samples} if samples else {}


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
        dataset: ``mosi`` or ``mosei``.
        release: ``mult`` (MulT's aligned pickles) or, for MOSI, ``multibench``
            (MultiBench's ``mosi_raw.pkl``): file name, published counts, feature widths;
            ``None`` = ``mult``.
        file: Pickle name inside ``root``; ``None`` = the release's name.
        feature_dims: Features per step of each modality, checked at setup (the encoders'
            ``input_dim`` reads them); ``None`` = the release's widths.
        aligned: Word-aligned pickle (every modality starts at the first word); ``False``
            for the unaligned ones (each modality starts at its own first non-zero step).
        drop_empty_text: Drop segments without any word, as MultiBench does.
        clean_nonfinite: Set every NaN and infinite feature value to 0, counted, logged and
            kept in :attr:`cleaned_report`; ``False`` zeroes only the ``-inf`` audio values (as
            MulT and MultiBench do) and leaves the others to ``on_bad_sample``.
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
        release: str | None = None,
        file: str | None = None,
        feature_dims: Mapping[str, int] | None = None,
        aligned: bool = True,
        drop_empty_text: bool = True,
        clean_nonfinite: bool = True,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        self.release = release_of(dataset, release)
        self.releases = RELEASES[dataset]
        loader_options.setdefault("modalities", list(MODALITIES))
        super().__init__(**loader_options)
        unknown = set(self.modalities) - set(MODALITIES)
        if unknown:
            raise ValueError(
                f"data.modalities has {sorted(unknown)}; "
                f"{self.release['name']} provides {list(MODALITIES)}"
            )
        self.root = Path(root)
        self.path = self.root / (file or self.release["file"])
        self.feature_dims = dict(feature_dims or self.release["feature_dims"])
        self.aligned = aligned
        self.drop_empty_text = drop_empty_text
        self.clean_nonfinite = clean_nonfinite
        self.count_check = check_counts
        # {stage: {modality: counts}} of the values zeroed, filled when the pickle is read.
        self.cleaned: dict[str, dict[str, dict[str, int]]] = {}

    @property
    def cleaned_report(self) -> dict[str, Any]:
        """The non-finite feature values set to 0, for the run record (``data_cleaned``).

        ``counts`` per split and modality: values per kind (``nan``, ``inf``, ``-inf``) and
        ``samples``, the segments holding any, over the rows of the file (before wordless
        segments are dropped); empty when none were found.
        """
        zeroed = "NaN and +/-inf feature values" if self.clean_nonfinite else "-inf audio values"
        return {"file": str(self.path), "set_to_zero": zeroed, "counts": self.cleaned}

    @property
    def label_names(self) -> list[str]:
        """The target: one sentiment score."""
        return ["sentiment"]

    def _array(self, part: Mapping[str, Any], key: str, source: str) -> np.ndarray:
        if key not in part:
            raise ValueError(f"{self.path}: {source} has no {key!r} array (keys: {sorted(part)})")
        return np.asarray(part[key])

    def _release_hint(self, part: Mapping[str, Any]) -> str:
        """Names the release whose widths the pickle has, when it is another one."""
        found = {
            m: np.shape(part[m])[-1] for m in MODALITIES if m in part and np.ndim(part[m]) == 3
        }
        for name, entry in self.releases.items():
            if entry is not self.release and entry["feature_dims"] == found:
                return (
                    f"; these are the widths of {entry['name']} ({entry['file']}): "
                    f"set data.release={name}"
                )
        return ""

    def read_split(self, stage: str, part: Mapping[str, Any]) -> ArraySplit:
        """One split's arrays: shapes checked, non-finite values zeroed, padding located."""
        key = SPLIT_KEYS[stage]
        labels = self._array(part, "labels", key)
        arrays: dict[str, np.ndarray] = {}
        for modality in MODALITIES:  # all three: the text locates the aligned start
            # No copy when the release is float32 already (MOSEI's arrays are ~2 GB). Values
            # beyond float32's range become inf, which the cleaning counts: no warning here.
            with np.errstate(over="ignore"):
                array = self._array(part, modality, key).astype(np.float32, copy=False)
            width = self.feature_dims.get(modality)
            if array.ndim != 3 or (width is not None and array.shape[2] != width):
                raise ValueError(
                    f"{self.path}: {key}/{modality} should be [N, T, {width}], "
                    f"got {list(array.shape)} (data.feature_dims.{modality})"
                    + self._release_hint(part)
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
        self._clean(stage, arrays)
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

    def _clean(self, stage: str, arrays: dict[str, np.ndarray]) -> None:
        """Zero non-finite values before the padding is located; count and log them."""
        found: dict[str, dict[str, int]] = {}
        for modality, array in arrays.items():
            # The COVAREP features hold -inf (log of 0); MulT and MultiBench read them as 0.
            if self.clean_nonfinite:
                counts = zero_nonfinite(array)
            else:
                counts = zero_nonfinite(array, ("-inf",)) if modality == "audio" else {}
            if counts:
                found[modality] = counts
        if not found:
            return
        self.cleaned[stage] = found
        # -inf audio alone is what the references clean silently; anything else is news.
        expected = set(found) == {"audio"} and set(found["audio"]) <= {"-inf", "samples"}
        log.log(
            logging.INFO if expected else logging.WARNING,
            "%s: set to 0 in the %s split (%s): %s",
            self.path.name,
            SPLIT_KEYS[stage],
            "as MulT and MultiBench do" if expected else "data.clean_nonfinite",
            "; ".join(
                f"{modality} "
                + ", ".join(f"{n} {kind}" for kind, n in counts.items() if kind != "samples")
                + f" in {counts['samples']} segments"
                for modality, counts in found.items()
            ),
        )

    def read_splits(self) -> dict[str, ArraySplit]:
        """Unpickle the release; check split sizes against the published ones."""
        obtain = self.release["obtain"]
        with require_file(self.path, self.release["name"], obtain).open("rb") as handle:
            data = pickle.load(handle)  # the release format; see the module notes
        missing = [key for key in SPLIT_KEYS.values() if key not in data]
        if missing:
            raise ValueError(f"{self.path}: no {missing} split (keys: {sorted(data)})")
        found = {key: len(np.asarray(data[key].get("labels", []))) for key in SPLIT_KEYS.values()}
        self.cleaned = {}
        check_counts(self.release["name"], found, self.release["counts"], self.count_check)
        return {stage: self.read_split(stage, data[key]) for stage, key in SPLIT_KEYS.items()}
