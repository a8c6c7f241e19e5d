"""AVE (Audio-Visual Event), read from its release layout: 4,143 videos of 28 events.

Tian, Shi, Li, Duan and Xu, "Audio-Visual Event Localization in Unconstrained Videos"
(ECCV 2018). The release holds ``AVE/<VideoID>.mp4`` (10-second clips with their sound),
``Annotations.txt`` and the split files ``trainSet.txt``, ``valSet.txt`` and
``testSet.txt``, each line ``Category&VideoID&Quality&StartTime&EndTime`` after a header
line. As in the modality-imbalance papers that classify AVE clips (Peng et al. 2022 and
their followers), a clip's label is its event category and both modalities come from the
one mp4: ``audio`` is its sound track, ``video`` its frames. The event's start and end
second are kept in the rows (``start_s``, ``end_s``) for localisation work; they do not
change the label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record
from mmexp.data.sets.published import check_counts, require_file

NAME = "AVE"
OBTAIN = (
    "It is distributed by its authors (https://github.com/YapengTian/AVE-ECCV18, the "
    "AVE_Dataset archive); the folder must hold AVE/*.mp4 and trainSet.txt, valSet.txt "
    "and testSet.txt."
)
SPLIT_FILES = {"train": "trainSet.txt", "val": "valSet.txt", "test": "testSet.txt"}
PUBLISHED_COUNTS = {"train": 3339, "val": 402, "test": 402}
NUM_EVENTS = 28
FIELDS = ("category", "video_id", "quality", "start", "end")


def read_split_file(path: Path) -> list[Record]:
    """The rows of one split file, header skipped.

    Raises:
        ValueError: A line without the release's five ``&``-separated fields, or with
            start and end seconds that are not numbers; the message names file and line.
    """
    rows: list[Record] = []
    lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip() or (number == 1 and line.startswith("Category&")):
            continue
        fields = line.strip().split("&")
        if len(fields) != len(FIELDS):
            raise ValueError(
                f"{path}, line {number}: {len(fields)} field(s), expected {'&'.join(FIELDS)}"
            )
        category, video_id, quality, start, end = fields
        try:
            start_s, end_s = float(start), float(end)
        except ValueError:
            raise ValueError(
                f"{path}, line {number}: start and end seconds {start!r}, {end!r} are not numbers"
            ) from None
        rows.append(
            {
                "id": video_id,
                "audio": f"AVE/{video_id}.mp4",
                "video": f"AVE/{video_id}.mp4",
                "label": category,
                "quality": quality,
                "start_s": start_s,
                "end_s": end_s,
            }
        )
    return rows


class AVEDataModule(ManifestDataModule):
    """AVE clips: the sound (``audio``) and frames (``video``) of each mp4, 28 events.

    Args:
        root: Folder of the release (``AVE/``, the split files).
        check_counts: Compare the split sizes with the release: ``warn``, ``raise``, ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.
    """

    def __init__(self, root: str | Path, check_counts: str = "warn", **loader_options: Any) -> None:
        loader_options.setdefault("modalities", ["audio", "video"])
        super().__init__(
            root=root,
            columns={"audio": "audio", "video": "video"},
            label_column="label",
            **loader_options,
        )
        self.count_check = check_counts

    @property
    def meta(self) -> dict[str, Any]:
        """The event categories of the training split, sorted (the release's 28)."""
        return {"label_names": sorted({r["label"] for r in self._raw_splits["train"]})}

    def source_of(self, stage: str) -> Path:
        """The split file of ``stage``."""
        return self.root / SPLIT_FILES[stage]

    def read_splits(self) -> dict[str, list[Record]]:
        """The three split files, checked against the release."""
        if self.check_files and not (self.root / "AVE").is_dir():
            raise FileNotFoundError(
                f"{NAME}: missing folder {self.root / 'AVE'}. {OBTAIN} Point data.root at it."
            )
        splits = {
            stage: read_split_file(require_file(self.root / name, NAME, OBTAIN))
            for stage, name in SPLIT_FILES.items()
        }
        found = {stage: len(rows) for stage, rows in splits.items()}
        check_counts(NAME, found, PUBLISHED_COUNTS, self.count_check)
        events = {r["label"] for rows in splits.values() for r in rows}
        if self.count_check != "off" and len(events) != NUM_EVENTS:
            check_counts(NAME, {"events": len(events)}, {"events": NUM_EVENTS}, self.count_check)
        return splits
