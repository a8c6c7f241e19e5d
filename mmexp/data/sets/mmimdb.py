"""MM-IMDb, read from its release layout: movie posters and plots, multi-label genres.

From Arevalo et al., "Gated Multimodal Units for Information Fusion", ICLR workshop 2017.
The release (``mmimdb.tar.gz``) holds ``split.json`` (``{"train": [ids], "dev": [...],
"test": [...]}``) and ``dataset/<id>.jpeg`` + ``dataset/<id>.json`` per movie, whose
``genres`` list and ``plot`` list (one or more summaries) are used. The task is the 23
genres of the paper, multi-label; results are reported as micro, macro, weighted and
samples F1.

Two published protocols read the same release differently, and ``protocol`` names them:

- ``gmu`` (Arevalo et al. 2017, ``make_dataset.py`` of gmu-mmimdb): every movie of
  ``split.json``, its longest plot summary as the text.
- ``mmbt`` (Kiela et al., "Supervised Multimodal Bitransformers", 2019, ``scripts/mmimdb.py``
  of mmbt): the longest plot too, but movies tagged News are dropped from every split, dev
  and test movies with a genre no training movie has are dropped, and so are movies with an
  empty plot. Split sizes then fall a little below the release's.

``plot=first`` takes the first summary instead, which neither paper does; its scores are not
comparable with theirs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

NAME = "MM-IMDb"
OBTAIN = (
    "It is distributed by its authors (http://lisi1.unal.edu.co/mmimdb/, "
    "mmimdb.tar.gz); extract it so that the folder holds split.json and dataset/."
)
PUBLISHED_COUNTS = {"train": 15552, "dev": 2608, "test": 7799}
PROTOCOLS = ("gmu", "mmbt")
PLOTS = ("longest", "first")
# MMBT's script skips movies carrying this genre before anything else.
MMBT_DROPPED_GENRE = "News"
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
        protocol: ``gmu`` (every movie of the split) or ``mmbt`` (movies tagged News, dev and
            test movies with a genre unseen in training, and empty plots dropped).
        plot: Which plot summary is the text: ``longest`` (both papers) or ``first``.
        check_counts: Compare the sizes of the split file's lists with the release: ``warn``,
            ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        protocol: str = "gmu",
        plot: str = "longest",
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"data.protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if plot not in PLOTS:
            raise ValueError(f"data.plot must be one of {PLOTS}, got {plot!r}")
        loader_options.setdefault("modalities", ["image", "text"])
        super().__init__(
            root=root,
            columns={"image": "image", "text": "plot"},
            label_column="genres",
            multilabel=True,
            **loader_options,
        )
        self.protocol = protocol
        self.plot = plot
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
        plots = [str(p) for p in plots] if isinstance(plots, list) else [str(plots)]
        # Both papers take the longest summary (numpy argmax of the lengths: the first of
        # equally long ones, as max() picks too).
        text = max(plots, key=len) if self.plot == "longest" else plots[0]
        all_genres = [str(g) for g in info.get("genres", [])]
        return {
            "id": movie_id,
            "image": f"dataset/{movie_id}.jpeg",
            "plot": text,
            # Genres outside the 23 (News, Reality-TV, ...) are not part of the task.
            "genres": [g for g in all_genres if g in GENRES],
            "all_genres": all_genres,
        }

    def _mmbt_filter(self, splits: dict[str, list[Record]]) -> dict[str, list[Record]]:
        """Drop the movies MMBT's script leaves out, logging how many per split."""
        kept: dict[str, list[Record]] = {}
        seen: set[str] = set()
        # The training split goes first: its genres decide which dev/test movies stay.
        for stage in ("train", "val", "test"):
            rows = [
                r
                for r in splits[stage]
                if MMBT_DROPPED_GENRE not in r["all_genres"]
                and r["plot"]
                and (stage == "train" or set(r["all_genres"]) <= seen)
            ]
            if stage == "train":
                seen = {g for r in rows for g in r["all_genres"]}
            if len(rows) != len(splits[stage]):
                log.info(
                    "data.protocol=mmbt: left out %d of %d %s movies (tagged %s, a genre "
                    "unseen in training, or no plot)",
                    len(splits[stage]) - len(rows),
                    len(splits[stage]),
                    stage,
                    MMBT_DROPPED_GENRE,
                )
            kept[stage] = rows
        return kept

    def read_splits(self) -> dict[str, list[Record]]:
        """The movies of each split, with the protocol's plot summary and their genres."""
        split = json.loads(require_file(self.source_of("train"), NAME, OBTAIN).read_text())
        missing = [name for name in self.split_files.values() if name not in split]
        if missing:
            raise ValueError(f"{self.source_of('train')}: no {missing} list")
        found = {name: len(split[name]) for name in self.split_files.values()}
        check_counts(NAME, found, PUBLISHED_COUNTS, self.count_check)
        splits = {
            stage: [self._movie(str(i)) for i in split[name]]
            for stage, name in self.split_files.items()
        }
        return self._mmbt_filter(splits) if self.protocol == "mmbt" else splits
