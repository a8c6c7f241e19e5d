"""Hateful Memes, read from its release layout.

From Kiela et al., "The Hateful Memes Challenge: Detecting Hate Speech in Multimodal
Memes", NeurIPS 2020. The release holds ``img/<id>.png`` and one JSONL file per split, each line
``{"id": 42953, "img": "img/42953.png", "label": 0, "text": "..."}``. Results are AUROC (the
challenge metric, ``monitor=val/auroc``) and accuracy. ``data.protocol`` names the files:

* ``seen`` (the default): train on ``train``, select on ``dev_seen``, report ``test_seen``;
  the splits of the paper's baseline tables (Kiela et al. 2020), which were Phase 1's
  ``dev`` and ``test`` before Phase 2 released them again under these names.
* ``unseen``: select on ``dev_unseen``, report ``test_unseen`` (Phase 2 release); the files
  MMF's data-set defaults read (``configs/datasets/hateful_memes/defaults.yaml``), so
  comparable with MMF's Phase 2 baselines, not with the paper's Phase 1 tables.
* ``phase1``: the Phase 1 release and its Kaggle mirror, ``train``, ``dev``, ``test``. Its
  test file has no labels: fit with it, and report on a labelled file (``data.test_split``).
  A copy without ``dev_seen.jsonl`` but with ``dev.jsonl`` is read this way under ``seen``
  too, and the switch is logged.

``data.train_split`` / ``val_split`` / ``test_split`` name a file of their own instead. The
challenge copies ship test files without labels; such a file is refused with a named error
when the test is run, and does not stop fitting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record, read_manifest
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

NAME = "Hateful Memes"
OBTAIN = (
    "The data set is distributed under its own licence by Meta AI (request it at "
    "https://hatefulmemeschallenge.com or use the Kaggle mirror); extract it so that "
    "the folder holds img/ and the Phase 2 files train.jsonl, dev_seen.jsonl, test_seen.jsonl "
    "(dev_unseen.jsonl, test_unseen.jsonl for data.protocol=unseen), or the Phase 1 files "
    "train.jsonl, dev.jsonl, test.jsonl (data.protocol=phase1)."
)
PROTOCOLS = {
    "seen": {"train": "train", "val": "dev_seen", "test": "test_seen"},
    "unseen": {"train": "train", "val": "dev_unseen", "test": "test_unseen"},
    "phase1": {"train": "train", "val": "dev", "test": "test"},
}
PUBLISHED_COUNTS = {
    "train": 8500,
    "dev_seen": 500,
    "test_seen": 1000,
    "dev_unseen": 540,
    "test_unseen": 2000,
    # Phase 1: the same memes as train, dev_seen and test_seen.
    "dev": 500,
    "test": 1000,
}
LABEL_NAMES = ["not_hateful", "hateful"]


class HatefulMemesDataModule(ManifestDataModule):
    """Memes (image + overlaid text) labelled hateful or not.

    Args:
        root: Folder of the extracted release.
        protocol: Files of the splits: ``seen``, ``unseen`` or ``phase1`` (module docstring).
        train_split: JSONL file (without extension) used for training; ``None``: the
            protocol's.
        val_split: File used for validation and model selection; ``None``: the protocol's.
        test_split: File reported as test; ``None``: the protocol's.
        check_counts: Compare split sizes with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule` (batch size, workers,
            ``on_bad_sample``, ``train_subset``...).

    Raises:
        ValueError: An unknown protocol.
    """

    def __init__(
        self,
        root: str | Path,
        protocol: str = "seen",
        train_split: str | None = None,
        val_split: str | None = None,
        test_split: str | None = None,
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
        if protocol not in PROTOCOLS:
            raise ValueError(f"data.protocol must be one of {list(PROTOCOLS)}, got {protocol!r}")
        self.protocol = self._detected(protocol)
        chosen = {"train": train_split, "val": val_split, "test": test_split}
        files = PROTOCOLS[self.protocol]
        self.split_files = {stage: chosen[stage] or files[stage] for stage in files}
        self.count_check = check_counts

    def _detected(self, protocol: str) -> str:
        """``phase1`` for a Phase 1 copy read under the default ``seen``, else ``protocol``."""
        if protocol != "seen" or self._root is None:
            return protocol
        if not (self.root / "dev_seen.jsonl").is_file() and (self.root / "dev.jsonl").is_file():
            # The same memes under their Phase 1 names, so the results stay comparable.
            log.warning(
                "%s: %s has dev.jsonl and no dev_seen.jsonl, a Phase 1 copy: reading it as "
                "data.protocol=phase1 (train, dev, test.jsonl)",
                NAME,
                self.root,
            )
            return "phase1"
        return protocol

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

    def screen(self, stage: str, rows: Sequence[Record]) -> Sequence[Record]:
        """The usable rows of ``stage``, screened when the stage is first used.

        Raises:
            ValueError: The stage's file has no labels at all (a challenge test file), which
                no ``on_bad_sample`` policy can make usable.
        """
        if rows and not any(self.label_column in row for row in rows):
            raise ValueError(self._unlabelled(stage))
        return super().screen(stage, rows)

    def _unlabelled(self, stage: str) -> str:
        source = self.source_of(stage)
        if stage != "test":
            return f"{source} has no labels; point data.{stage}_split at a labelled file"
        if self.protocol == "phase1":
            labelled = (
                "data.test_split=dev scores the dev file, or a Phase 2 copy has a labelled "
                "test_seen.jsonl (data.protocol=seen)"
            )
        else:
            labelled = (
                "use a copy whose test_seen.jsonl / test_unseen.jsonl has labels, or point "
                f"data.test_split at a labelled file (data.test_split={self.split_files['val']} "
                "scores the validation file)"
            )
        return (
            f"{source} has no labels (the challenge copies withhold the test labels), so the "
            f"test cannot be scored: {labelled}; or run with test=false to fit only"
        )
