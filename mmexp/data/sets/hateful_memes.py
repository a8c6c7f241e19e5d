"""Hateful Memes, read from its release layout.

From Kiela et al., "The Hateful Memes Challenge: Detecting Hate Speech in Multimodal
Memes", NeurIPS 2020. The release holds ``img/<id>.png`` and one JSONL file per split, each line
``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}``. The standard protocol
trains on ``train``, selects on ``dev_seen`` and reports ``test_seen`` (and ``test_unseen``
from the Phase 2 release) with AUROC (the challenge metric, ``monitor=val/auroc``) and
accuracy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record, read_manifest
from mmexp.data.sets.published import check_counts, require_file

NAME = "Hateful Memes"
OBTAIN = (
    "The data set is distributed under its own licence by Meta AI (request it at "
    "https://hatefulmemeschallenge.com or use the Kaggle mirror); extract it so that "
    "the folder holds img/ and train.jsonl, dev_seen.jsonl, test_seen.jsonl."
)
PUBLISHED_COUNTS = {
    "train": 8500,
    "dev_seen": 500,
    "test_seen": 1000,
    "dev_unseen": 540,
    "test_unseen": 2000,
}
LABEL_NAMES = ["not_hateful", "hateful"]


class HatefulMemesDataModule(ManifestDataModule):
    """Memes (image + overlaid text) labelled hateful or not.

    Args:
        root: Folder of the extracted release.
        train_split: JSONL file (without extension) used for training.
        val_split: File used for validation and model selection.
        test_split: File reported as test (``test_seen`` or ``test_unseen``).
        check_counts: Compare split sizes with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule` (batch size, workers,
            ``on_bad_sample``, ``train_subset``...).
    """

    def __init__(
        self,
        root: str | Path,
        train_split: str = "train",
        val_split: str = "dev_seen",
        test_split: str = "test_seen",
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        loader_options.setdefault("modalities", ["image", "text"])
        super().__init__(
            root=root,
            columns={"image": "img", "text": "text"},
            label_column="label",
            **loader_options,
        )
        self.split_files = {"train": train_split, "val": val_split, "test": test_split}
        self.count_check = check_counts

    @property
    def meta(self) -> dict[str, Any]:
        """Class names of the task."""
        return {"label_names": LABEL_NAMES}

    def source_of(self, stage: str) -> Path:
        """The JSONL file of ``stage``."""
        return self.root / f"{self.split_files[stage]}.jsonl"

    def read_splits(self) -> dict[str, list[Record]]:
        """Read the three split files; check their sizes against the release."""
        splits = {
            stage: read_manifest(require_file(self.source_of(stage), NAME, OBTAIN))
            for stage in self.split_files
        }
        found = {self.split_files[stage]: len(rows) for stage, rows in splits.items()}
        check_counts(NAME, found, PUBLISHED_COUNTS, self.count_check)
        return splits
