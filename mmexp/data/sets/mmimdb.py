"""MM-IMDb, read from its release layout: movie posters and plots, multi-label genres.

From Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR workshop 2017.
The release (``mmimdb.tar.gz``) holds ``split.json`` (``{"train": [ids], "dev": [...],
"test": [...]}``) and ``dataset/<id>.jpeg`` + ``dataset/<id>.json`` per movie, whose
``genres`` list and ``plot`` list (one or more summaries) are used. The task is the 23
genres of the paper, multi-label; results are reported as micro, macro, weighted and
samples F1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record
from mmexp.data.sets.published import check_counts, require_file

NAME = "MM-IMDb"
OBTAIN = (
    "It is distributed by its authors (http://lisi1.unal.edu.co/mmimdb/, "
    "mmimdb.tar.gz); extract it so that the folder holds split.json and dataset/."
)
PUBLISHED_COUNTS = {"train": 15552, "dev": 2608, "test": 7799}
# The 23 genres of Arevalo et al. (2017), in the paper's order (most to least frequent).
GENRES = [
    "Drama",
    "Comedy",
    "Romance",
    "Thriller",
    "Crime",
    "Action",
    "Adventure",
    "Horror",
    "Documentary",
    "Mystery",
    "Sci-Fi",
    "Fantasy",
    "Family",
    "Biography",
    "War",
    "History",
    "Music",
    "Animation",
    "Musical",
    "Western",
    "Sport",
    "Short",
    "Film-Noir",
]


class MMIMDbDataModule(ManifestDataModule):
    """Posters and plot summaries labelled with their genres (multi-hot).

    Args:
        root: Folder of the extracted release (``split.json``, ``dataset/``).
        check_counts: Compare split sizes with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.
    """

    def __init__(self, root: str | Path, check_counts: str = "warn", **loader_options: Any) -> None:
        loader_options.setdefault("modalities", ["image", "text"])
        super().__init__(
            root=root,
            columns={"image": "image", "text": "plot"},
            label_column="genres",
            multilabel=True,
            **loader_options,
        )
        self.count_check = check_counts
        self.split_files = {"train": "train", "val": "dev", "test": "test"}

    @property
    def meta(self) -> dict[str, Any]:
        """The 23 genres."""
        return {"label_names": GENRES}

    def source_of(self, stage: str) -> Path:
        """``split.json``, where each split's movie ids are listed."""
        return self.root / "split.json"

    def _movie(self, movie_id: str) -> Record:
        path = require_file(self.root / "dataset" / f"{movie_id}.json", NAME, OBTAIN)
        info = json.loads(path.read_text(encoding="utf-8"))
        plots = info.get("plot") or [""]
        # Genres outside the 23 (News, Reality-TV, ...) are not part of the task.
        genres = [g for g in info.get("genres", []) if g in GENRES]
        return {
            "id": movie_id,
            "image": f"dataset/{movie_id}.jpeg",
            "plot": plots[0] if isinstance(plots, list) else str(plots),
            "genres": genres,
        }

    def read_splits(self) -> dict[str, list[Record]]:
        """The movies of each split, with their first plot summary and their genres."""
        split = json.loads(require_file(self.source_of("train"), NAME, OBTAIN).read_text())
        missing = [name for name in self.split_files.values() if name not in split]
        if missing:
            raise ValueError(f"{self.source_of('train')}: no {missing} list")
        found = {name: len(split[name]) for name in self.split_files.values()}
        check_counts(NAME, found, PUBLISHED_COUNTS, self.count_check)
        return {
            stage: [self._movie(str(i)) for i in split[name]]
            for stage, name in self.split_files.items()
        }
