"""UPMC Food-101, read from its release layout: recipe-page photos and titles, 101 dishes.

From Wang et al., "Recipe Recognition with Large Multimodal Food Dataset", ICME workshops
2015. The release (and its Kaggle mirror) holds ``images/{train,test}/<class>/<file>.jpg``
and ``texts/{train,test}_titles.csv``, rows ``filename,text,label`` without a header. The
release has no validation split: as in MMBT (Kiela et al., "Supervised Multimodal
Bitransformers for Classifying Images and Text", 2019), 5,000 training rows are held out,
drawn per class in proportion to its size; here the draw is seeded (``val_seed``), so every
run holds out the same rows. Results are reported as accuracy on the test split.

The test split is every row of ``test_titles.csv`` (22,716), the test set of the
missing-modality papers that read these CSVs (Lee et al., "Multimodal Prompting with
Missing Modalities for Visual Recognition", CVPR 2023, whose ``split.json`` holds out 6,846
training rows instead of 5,000). It is not MMBT's test set: MMBT's ``scripts/food_101.py``
keeps only the images that have a per-page text file, in the test split as in the train
split, so its splits are subsets of these and its scores are not directly comparable.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.manifest import Record
from mmexp.data.screening import SHOWN, BadSample
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

NAME = "UPMC Food-101"
OBTAIN = (
    "It is distributed by its authors (http://visiir.lip6.fr) and mirrored on Kaggle "
    "(https://www.kaggle.com/datasets/gianmarco96/upmcfood101); extract it so that the "
    "folder holds images/train/, images/test/ and texts/{train,test}_titles.csv."
)
# Images of the release's splits (train: 67,988; test: 22,716), the rows the CSVs describe.
# MMBT's splits come from the original per-page text files instead, which lack some pages:
# 60,101 train + 5,000 dev, and a test split smaller than these 22,716 rows, since its
# script skips images without a text file in both splits.
PUBLISHED_COUNTS = {"train_titles": 67988, "test_titles": 22716}
# The 101 dishes (the classes of Food-101, Bossard et al. 2014), folder names, sorted.
CLASSES = [
    "apple_pie",
    "baby_back_ribs",
    "baklava",
    "beef_carpaccio",
    "beef_tartare",
    "beet_salad",
    "beignets",
    "bibimbap",
    "bread_pudding",
    "breakfast_burrito",
    "bruschetta",
    "caesar_salad",
    "cannoli",
    "caprese_salad",
    "carrot_cake",
    "ceviche",
    "cheese_plate",
    "cheesecake",
    "chicken_curry",
    "chicken_quesadilla",
    "chicken_wings",
    "chocolate_cake",
    "chocolate_mousse",
    "churros",
    "clam_chowder",
    "club_sandwich",
    "crab_cakes",
    "creme_brulee",
    "croque_madame",
    "cup_cakes",
    "deviled_eggs",
    "donuts",
    "dumplings",
    "edamame",
    "eggs_benedict",
    "escargots",
    "falafel",
    "filet_mignon",
    "fish_and_chips",
    "foie_gras",
    "french_fries",
    "french_onion_soup",
    "french_toast",
    "fried_calamari",
    "fried_rice",
    "frozen_yogurt",
    "garlic_bread",
    "gnocchi",
    "greek_salad",
    "grilled_cheese_sandwich",
    "grilled_salmon",
    "guacamole",
    "gyoza",
    "hamburger",
    "hot_and_sour_soup",
    "hot_dog",
    "huevos_rancheros",
    "hummus",
    "ice_cream",
    "lasagna",
    "lobster_bisque",
    "lobster_roll_sandwich",
    "macaroni_and_cheese",
    "macarons",
    "miso_soup",
    "mussels",
    "nachos",
    "omelette",
    "onion_rings",
    "oysters",
    "pad_thai",
    "paella",
    "pancakes",
    "panna_cotta",
    "peking_duck",
    "pho",
    "pizza",
    "pork_chop",
    "poutine",
    "prime_rib",
    "pulled_pork_sandwich",
    "ramen",
    "ravioli",
    "red_velvet_cake",
    "risotto",
    "samosa",
    "sashimi",
    "scallops",
    "seaweed_salad",
    "shrimp_and_grits",
    "spaghetti_bolognese",
    "spaghetti_carbonara",
    "spring_rolls",
    "steak",
    "strawberry_shortcake",
    "sushi",
    "tacos",
    "takoyaki",
    "tiramisu",
    "tuna_tartare",
    "waffles",
]


def stratified_holdout(labels: Sequence[str], size: int, seed: int) -> list[int]:
    """Positions of ``size`` rows drawn per label in proportion to its count.

    Quotas are the proportional shares rounded down, the remainder going to the labels with
    the largest fractional parts (ties: label order), so they sum to ``size`` exactly.

    Raises:
        ValueError: ``size`` is not between 1 and ``len(labels) - 1``.
    """
    if not 0 < size < len(labels):
        raise ValueError(
            f"data.val_size must be between 1 and {len(labels) - 1} (the training "
            f"rows less one), got {size}"
        )
    members: dict[str, list[int]] = defaultdict(list)
    for position, label in enumerate(labels):
        members[label].append(position)
    names = sorted(members)
    shares = [size * len(members[name]) / len(labels) for name in names]
    quotas = [int(share) for share in shares]
    by_remainder = sorted(range(len(names)), key=lambda i: (-(shares[i] - quotas[i]), names[i]))
    for i in by_remainder[: size - sum(quotas)]:
        quotas[i] += 1
    generator = torch.Generator().manual_seed(seed)
    chosen: list[int] = []
    for name, quota in zip(names, quotas, strict=True):
        order = torch.randperm(len(members[name]), generator=generator)[:quota]
        chosen += [members[name][i] for i in order.tolist()]
    return sorted(chosen)


class Food101DataModule(ManifestDataModule):
    """Recipe photos and page titles labelled with one of 101 dishes.

    Args:
        root: Folder of the extracted release (``images/``, ``texts/``).
        val_size: Training rows held out for validation (MMBT: 5,000).
        val_seed: Seed of the held-out draw (fixed across training seeds, so that seeds vary
            the model and not the split).
        check_counts: Compare the CSV sizes with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        val_size: int = 5000,
        val_seed: int = 0,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        loader_options.setdefault("modalities", ["image", "text"])
        super().__init__(
            root=root,
            columns={"image": "image", "text": "text"},
            label_column="label",
            **loader_options,
        )
        self.val_size = val_size
        self.val_seed = val_seed
        self.count_check = check_counts

    @property
    def meta(self) -> dict[str, Any]:
        """The 101 dishes."""
        return {"label_names": CLASSES}

    def source_of(self, stage: str) -> Path:
        """The CSV of ``stage`` (validation rows come from the training CSV)."""
        return self.root / "texts" / f"{'test' if stage == 'test' else 'train'}_titles.csv"

    def _read(self, stage: str) -> list[Record]:
        path = require_file(self.source_of(stage), NAME, OBTAIN)
        if self.check_files and not (self.root / "images" / stage).is_dir():
            raise FileNotFoundError(
                f"{NAME}: missing folder {self.root / 'images' / stage}. "
                f"{OBTAIN} Point data.root at the extracted folder."
            )
        rows: list[Record] = []
        malformed: list[BadSample] = []
        # errors="replace": a stray byte in a web-page title should not stop the run.
        with path.open(encoding="utf-8", errors="replace", newline="") as handle:
            reader = csv.reader(handle)
            for fields in reader:
                if not fields:
                    continue
                if len(fields) < 3:
                    malformed.append(
                        BadSample(
                            str(path),
                            stage,
                            f"line {reader.line_num}",
                            f"{len(fields)} field(s), expected filename,text,label",
                        )
                    )
                    continue
                filename, label = fields[0].strip(), fields[-1].strip()
                # A title with unquoted commas spans several fields: join them back.
                rows.append(
                    {
                        "id": filename,
                        "image": f"images/{stage}/{label}/{filename}",
                        "text": ",".join(fields[1:-1]),
                        "label": label,
                    }
                )
        self._reject(malformed, stage)
        return rows

    def _reject(self, bad: list[BadSample], stage: str) -> None:
        """Apply ``on_bad_sample`` to CSV lines that are not rows at all."""
        if bad and self.on_bad_sample == "raise":
            listed = "\n  ".join(str(b) for b in bad[:SHOWN])
            raise ValueError(
                f"{len(bad)} malformed line(s) in the {stage} split (set "
                f"data.on_bad_sample=skip to leave them out):\n  {listed}"
            )
        if bad:
            log.warning(
                "data.on_bad_sample=skip: left out %d malformed %s line(s), e.g. %s",
                len(bad),
                stage,
                bad[0],
            )
            self.bad_samples.extend(bad)

    def read_splits(self) -> dict[str, list[Record]]:
        """Both CSVs, with validation rows held out of the training CSV."""
        train, test = self._read("train"), self._read("test")
        check_counts(
            NAME,
            {"train_titles": len(train), "test_titles": len(test)},
            PUBLISHED_COUNTS,
            self.count_check,
        )
        held_out = set(
            stratified_holdout([r["label"] for r in train], self.val_size, self.val_seed)
        )
        return {
            "train": [r for i, r in enumerate(train) if i not in held_out],
            "val": [train[i] for i in sorted(held_out)],
            "test": test,
        }
