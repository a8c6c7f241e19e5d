"""A map-style data set over manifest rows that decodes files and applies processors."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from mmexp.data.audio_io import read_wav
from mmexp.data.manifest import Record, row_name
from mmexp.data.video_io import probe_video, read_audio_track
from mmexp.encoders.processors import ModalityProcessor

log = logging.getLogger(__name__)

# How a manifest value becomes a decoded sample: file modalities hold a path relative to the
# data root, text holds the string itself.
FILE_MODALITIES = ("image", "audio", "video")


def decode_image(path: Path) -> Image.Image:
    """Open an image file fully (so that a truncated file fails here, not in a transform)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGB")


def decode_encoded(modality: str, value: Mapping[str, Any]) -> Any:
    """Decode a file modality stored inline, as Hugging Face ``datasets`` keep them.

    ``value`` is ``{"bytes": ..., "path": ...}`` (an undecoded ``Image`` / ``Audio``
    feature) or, for audio, ``{"array": ..., "sampling_rate": ...}``.
    """
    if modality == "video":
        raise ValueError(
            f"video {value.get('path') or '<inline bytes>'} is stored inline; video is read "
            "from files (a path relative to the data root), so that only the sampled frames "
            "are decoded"
        )
    if modality == "audio" and "array" in value:
        return np.asarray(value["array"], dtype=np.float32), int(value["sampling_rate"])
    name = value.get("path") or "<inline bytes>"
    if value.get("bytes") is None:
        raise ValueError(f"{modality} {name} has no bytes")
    if modality == "image":
        try:
            with Image.open(io.BytesIO(value["bytes"])) as image:
                image.load()
                return image.convert("RGB")
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"corrupt image {name}: {error}") from None
    return read_wav(io.BytesIO(value["bytes"]), name=name)


def decode(modality: str, value: Any, root: Path) -> Any:
    """Decode one manifest value of ``modality``: text, a file path or inline bytes.

    Raises:
        FileNotFoundError: A referenced file does not exist.
        ValueError: The file cannot be decoded, the text is empty or the modality unknown.
    """
    if modality == "text":
        text = str(value)
        if not text.strip():
            raise ValueError("empty text")
        return text
    if modality not in FILE_MODALITIES:
        known = ", ".join(("text", *FILE_MODALITIES))
        raise ValueError(f"unknown modality {modality!r}; known: {known}")
    if isinstance(value, Mapping):
        return decode_encoded(modality, value)
    path = root / str(value)
    if not path.is_file():
        raise FileNotFoundError(f"missing {modality} file {path}")
    if modality == "image":
        try:
            return decode_image(path)
        except (UnidentifiedImageError, OSError) as error:
            raise ValueError(f"corrupt image file {path}: {error}") from None
    if modality == "video":
        return probe_video(path)
    if path.suffix.lower() != ".wav":
        # the audio track of a media file (a video's sound, an mp3), decoded with PyAV
        return read_audio_track(path)
    return read_wav(path)


class ManifestDataset(Dataset):
    """Samples of one split: decoded modalities, the label index and the row index.

    Args:
        rows: Manifest rows of this split.
        labels: Label index of each row.
        root: Folder that relative file paths in the manifest start from.
        columns: Manifest column of each modality, keyed by modality name.
        processors: Per-modality preprocessing (the encoders' own); ``None`` returns the
            decoded values, which is what data inspection and tests want.
        source: The manifest file, named in error messages.
        skip_unreadable: Return ``None`` (logged with file and row) for a sample whose file
            cannot be decoded, instead of raising; the collator leaves it out and counts it.
        contents: Content id of each row (:func:`content_ids`), returned as ``content``.
        references_column: Column of each row's reference captions, returned as
            ``references`` (a list of non-empty strings); ``None``: none.
        extras: Integer values per row returned under their own keys (the answer type of a
            question, ``ManifestDataModule``'s ``index_columns``).
    """

    def __init__(
        self,
        rows: Sequence[Record],
        labels: Sequence[int],
        root: Path,
        columns: Mapping[str, str],
        processors: Mapping[str, ModalityProcessor] | None,
        source: Path,
        skip_unreadable: bool = False,
        contents: Sequence[int] | None = None,
        references_column: str | None = None,
        extras: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        self.rows = list(rows)
        self.references_column = references_column
        self.extras = {key: list(values) for key, values in (extras or {}).items()}
        self.contents = list(contents) if contents is not None else None
        self.skip_unreadable = skip_unreadable
        self.labels = list(labels)
        self.root = root
        self.columns = dict(columns)
        self.processors = dict(processors) if processors is not None else None
        self.source = source

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        row = self.rows[index]
        sample: dict[str, Any] = {"index": index, "label": self.labels[index]}
        if self.contents is not None:
            sample["content"] = self.contents[index]
        for key, values in self.extras.items():
            sample[key] = values[index]
        for modality, column in self.columns.items():
            try:
                value = decode(modality, row[column], self.root)
                if self.processors is not None:
                    value = self.processors[modality](value)
            except (OSError, ValueError) as error:
                message = f"{self.source}: {row_name(row, index)}, {modality}: {error}"
                if self.skip_unreadable:
                    log.warning("data.on_bad_sample=skip: left out %s", message)
                    return None
                raise type(error)(message) from error
            sample[modality] = value
        if self.references_column is not None:
            sample["references"] = self._references(row, index)
        return sample

    def _references(self, row: Record, index: int) -> list[str]:
        """The row's reference captions, checked: an empty one would score as a match."""
        value = row.get(self.references_column)
        if not isinstance(value, list) or not value:
            raise ValueError(
                f"{self.source}: {row_name(row, index)} has no list of reference captions "
                f"in column {self.references_column!r} (data.references_column)"
            )
        for text in value:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"{self.source}: {row_name(row, index)} has an empty reference caption "
                    f"in column {self.references_column!r}: {value!r}"
                )
        return list(value)


def content_ids(
    rows: Sequence[Record], column: str, source: Path, modalities: Sequence[str] = ()
) -> list[int]:
    """A stable integer per distinct value of ``column``: equal values, equal ids.

    Values are compared as canonical JSON (sorted keys), so a dictionary of attributes works
    as well as a string; the id is the first 63 bits of its SHA-1, the same in every process.
    A dictionary keyed by modality (shapes' ``attributes``) is compared on the loaded
    ``modalities`` only: image-text pairs that differ only in their audio show the same.

    Raises:
        KeyError: A row lacks the column (named with the manifest and the row).
    """
    ids = []
    for index, row in enumerate(rows):
        if column not in row:
            raise KeyError(
                f"{source}: {row_name(row, index)} has no {column!r} column (data.content_column)"
            )
        value = row[column]
        if isinstance(value, dict) and modalities and set(modalities) <= set(value):
            value = {m: value[m] for m in modalities}
        text = json.dumps(value, sort_keys=True)
        ids.append(int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "little") >> 1)
    return ids


class MultimodalCollator:
    """Collate samples with each modality's processor; picklable for loader workers."""

    def __init__(self, processors: Mapping[str, ModalityProcessor]) -> None:
        self.processors = dict(processors)

    def __call__(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        """Return ``{modality: batch, "label": [B], "index": [B], "num_skipped": int}``.

        ``None`` samples (unreadable, skipped by the data set) are left out and counted.
        """
        kept = [s for s in samples if s is not None]
        if not kept:
            raise RuntimeError(
                f"every sample of a batch of {len(samples)} was unreadable; "
                "see the warnings above for the files"
            )
        skipped = len(samples) - len(kept)
        samples = kept
        batch: dict[str, Any] = {
            name: processor.collate([s[name] for s in samples])
            for name, processor in self.processors.items()
        }
        batch["label"] = self.collate_labels([s["label"] for s in samples])
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        if "content" in samples[0]:
            batch["content"] = torch.tensor([s["content"] for s in samples], dtype=torch.long)
        if "references" in samples[0]:
            batch["references"] = [s["references"] for s in samples]
        # content ids and any per-row integers of the data set (ManifestDataset's extras)
        for key in samples[0].keys() - batch.keys() - {"index", "label"}:
            batch[key] = torch.tensor([s[key] for s in samples], dtype=torch.long)
        batch["num_skipped"] = skipped
        return batch

    def collate_labels(self, labels: Sequence[Any]) -> torch.Tensor:
        """The ``label`` entry of a batch: class indices (or multi-hot rows) as ``long``."""
        return torch.tensor(labels, dtype=torch.long)
