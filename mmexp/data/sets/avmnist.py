"""AV-MNIST, read from MultiBench's array release or from the MFAS copy of the same arrays.

From Vielzeuf et al., "CentralNet: a Multilayer Approach for Multimodal Fusion", ECCV
workshops 2018, as packaged by MultiBench (Liang et al., NeurIPS 2021 datasets track): MNIST
digits paired with spectrograms of spoken digits (Free Spoken Digit Dataset) of the same
class. The release (``avmnist.tar.gz``) holds::

    image/train_data.npy   [60000, 784]      28x28 digits, flattened, values 0..255
    audio/train_data.npy   [60000, 112, 112] spectrograms, values 0..255
    train_labels.npy       [60000]           digit 0..9
    image/test_data.npy, audio/test_data.npy, test_labels.npy (10000 samples)

MultiBench's loader (``datasets/avmnist/get_data.py``) divides both modalities by 255,
reshapes the digits to 28x28, adds a channel axis and validates on the last 5,000 training
samples: 55,000 / 5,000 / 10,000, ten classes, accuracy. The copy MFAS reads (Pérez-Rúa et
al., CVPR 2019, ``datasets/avmnist.py``) has the same files with the digits in ``images/``
instead of ``image/``; either folder is accepted and the one read is logged.
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mmexp.data.array_datamodule import ArrayDataModule
from mmexp.data.arrays import ArraySplit
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

NAME = "AV-MNIST"
OBTAIN = (
    "It is distributed as avmnist.tar.gz by MultiBench (see the AV-MNIST section of "
    "https://github.com/pliang279/MultiBench); extract it so that the folder holds "
    "image/ (images/ in the copy MFAS reads), audio/, train_labels.npy and test_labels.npy."
)
# Folder of the digits: MultiBench's name first, then the MFAS copy's.
IMAGE_DIRS = {"image": "MultiBench's layout", "images": "MFAS's layout"}
PUBLISHED_COUNTS = {"train": 55000, "val": 5000, "test": 10000}
IMAGE_SIDE = 28
SPECTROGRAM_SIDE = 112
LABEL_NAMES = [str(digit) for digit in range(10)]


def load_array(path: Path) -> np.ndarray:
    """A ``.npy`` file memory-mapped (read when indexed), failing with where to get it."""
    try:
        return np.load(require_file(path, NAME, OBTAIN), mmap_mode="r")
    except ValueError as error:  # pickled object arrays cannot be mapped; not this release
        raise ValueError(f"{path}: not a numeric .npy array ({error})") from None


class AVMNISTDataModule(ArrayDataModule):
    """Digits as 28x28 images and as 112x112 spectrograms, ten classes.

    Args:
        root: Folder of the extracted release.
        val_size: Last training samples used for validation (5000 in MultiBench).
        normalize: Divide both modalities by 255, as MultiBench's loader does.
        check_counts: Compare split sizes with MultiBench's: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ArrayDataModule` (batch size, workers,
            ``on_bad_sample``, ``train_subset``...).
    """

    def __init__(
        self,
        root: str | Path,
        val_size: int = 5000,
        normalize: bool = True,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        loader_options.setdefault("modalities", ["image", "audio"])
        super().__init__(**loader_options)
        unknown = set(self.modalities) - {"image", "audio"}
        if unknown:
            raise ValueError(
                f"data.modalities has {sorted(unknown)}; AV-MNIST provides image and audio"
            )
        if val_size < 1:
            raise ValueError(f"data.val_size must be >= 1, got {val_size}")
        self.root = Path(root)
        self.val_size = val_size
        self.normalize = normalize
        self.count_check = check_counts

    @property
    def label_names(self) -> list[str]:
        """The ten digits."""
        return LABEL_NAMES

    @cached_property
    def image_dir(self) -> Path:
        """The folder of the digits: ``image/`` (MultiBench) or ``images/`` (MFAS), logged.

        Raises:
            FileNotFoundError: Neither folder exists, both named.
        """
        for name, layout in IMAGE_DIRS.items():
            folder = self.root / name
            if folder.is_dir():
                log.info("%s: digits read from %s (%s)", NAME, folder, layout)
                return folder
        tried = " or ".join(
            f"{self.root / name}/ ({layout})" for name, layout in IMAGE_DIRS.items()
        )
        raise FileNotFoundError(
            f"{NAME}: missing {tried}. {OBTAIN} Point data.root at the extracted folder."
        )

    def paths(self, part: str) -> dict[str, Path]:
        """The files of ``part`` (``train`` or ``test``) per modality and for the labels."""
        return {
            "image": self.image_dir / f"{part}_data.npy",
            "audio": self.root / "audio" / f"{part}_data.npy",
            "label": self.root / f"{part}_labels.npy",
        }

    def read_part(self, part: str) -> ArraySplit:
        """The arrays of one file set, shapes checked against the release."""
        paths = self.paths(part)
        image, audio, labels = (load_array(paths[key]) for key in ("image", "audio", "label"))
        side = IMAGE_SIDE
        if image.ndim == 2 and image.shape[1] == side * side:
            image = image.reshape(len(image), side, side)  # a view: the file stays mapped
        if image.ndim != 3 or image.shape[1:] != (side, side):
            raise ValueError(
                f"{paths['image']}: expected digits of shape [N, {side * side}] "
                f"or [N, {side}, {side}], got {list(image.shape)}"
            )
        if audio.shape[1:] != (SPECTROGRAM_SIDE, SPECTROGRAM_SIDE) or audio.ndim != 3:
            raise ValueError(
                f"{paths['audio']}: expected spectrograms of shape [N, "
                f"{SPECTROGRAM_SIDE}, {SPECTROGRAM_SIDE}], got {list(audio.shape)}"
            )
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1:
            raise ValueError(
                f"{paths['label']}: expected labels of shape [N], got {list(labels.shape)}"
            )
        counts = {
            key: len(array)
            for key, array in (("image", image), ("audio", audio), ("label", labels))
        }
        if len(set(counts.values())) > 1:
            raise ValueError(
                f"{NAME} {part} files disagree on the number of samples: "
                + ", ".join(f"{paths[k]}: {n}" for k, n in counts.items())
            )
        scales = {"image": 1 / 255, "audio": 1 / 255} if self.normalize else {}
        return ArraySplit(
            arrays={"image": image, "audio": audio},
            labels=np.asarray(labels),
            sources=paths,
            scales=scales,
        )

    def read_splits(self) -> dict[str, ArraySplit]:
        """Train and validation from the training files (last ``val_size`` for validation)."""
        train, test = self.read_part("train"), self.read_part("test")
        if self.val_size >= len(train):
            raise ValueError(
                f"data.val_size={self.val_size} leaves no training samples in "
                f"{train.sources['label']} ({len(train)} samples)"
            )
        cut = len(train) - self.val_size

        def part(start: int, stop: int) -> ArraySplit:
            arrays = {key: array[start:stop] for key, array in train.arrays.items()}
            return ArraySplit(
                arrays,
                train.labels[start:stop],
                train.sources,
                scales=train.scales,
                rows=np.arange(start, stop),
            )

        splits = {"train": part(0, cut), "val": part(cut, len(train)), "test": test}
        check_counts(
            NAME,
            {stage: len(split) for stage, split in splits.items()},
            PUBLISHED_COUNTS,
            self.count_check,
        )
        return splits
