"""COCO Captions and Flickr30k with the Karpathy splits, read from their release files.

From Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for Generating Image
Descriptions", CVPR 2015: ``dataset_coco.json`` / ``dataset_flickr30k.json`` hold
``{"images": [{"filename", "split", "sentences": [{"raw", ...}], ...}], "dataset": ...}``
with ``split`` one of ``train``, ``restval``, ``val``, ``test``. COCO images lie at
``<filepath>/<filename>`` (``train2014/``, ``val2014/``), Flickr30k images in
``flickr30k-images/`` (Kaggle's copies: ``flickr30k_images/``, found too). BLIP's and
LAVIS's per-split files are read with ``annotations=lavis`` (see
:mod:`~mmexp.data.sets.caption_files`). The standard protocol trains on ``train`` +
``restval`` (COCO: 113,287 images) and reports recall@1/5/10 both ways on the 5,000 (COCO
5k) or 1,000 (Flickr30k) test images.

Two evaluation galleries are in use, chosen by ``eval_captions``: ``5``, the first five
captions of each image (COCO 5k: 25,000; the protocol of VSE++, Faghri et al. 2018, and the
methods compared with it), or ``all`` (COCO 5k: 25,010, a few images have six or seven), as
ALBEF (Li et al. 2021) and BLIP (Li et al. 2022) rank them.

Training draws one caption per image per epoch (``train_captions=sample``, seeded, see
:class:`~mmexp.data.sets.captions.OneCaptionPerImage`) or iterates over every caption
(``all``; two captions of one image may then share a batch and the losses mask them by image
id). Evaluation encodes each image once with all its captions (``eval_batch_size`` counts
images). The data carry no classes: use ``objective=contrastive`` or ``objective=itm``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from torch.utils.data import DataLoader

from mmexp.data.datamodule import ManifestDataModule
from mmexp.data.dataset import MultimodalCollator
from mmexp.data.loaders import LoopProgress, ResumableLoader, stage_loader
from mmexp.data.manifest import Record, row_name
from mmexp.data.screening import SHOWN, BadSample
from mmexp.data.sets.caption_files import (
    LAVIS,
    image_folder,
    lavis_missing,
    lavis_paths,
    read_karpathy,
    read_lavis,
)
from mmexp.data.sets.captions import (
    CaptionPairs,
    GroupedCollator,
    ImageCaptionRows,
    ImageCaptions,
    OneCaptionPerImage,
)
from mmexp.data.sets.published import check_counts, require_file

log = logging.getLogger(__name__)

SPLITS_ZIP = (
    "Karpathy's splits are in caption_datasets.zip "
    "(https://cs.stanford.edu/people/karpathy/deepimagesent/caption_datasets.zip)"
)


class Release(NamedTuple):
    """How one data set is laid out and what its splits hold."""

    name: str
    annotations: str
    # The image folder and other names it has in common copies, the usual one first.
    image_dirs: tuple[str, ...]
    counts: dict[str, int]
    obtain: str
    # The Karpathy splits that BLIP's and LAVIS's training file merges.
    train_splits: tuple[str, ...]


RELEASES = {
    "coco": Release(
        "COCO Captions (Karpathy splits)",
        "dataset_coco.json",
        ("",),
        {"train": 113287, "val": 5000, "test": 5000},
        f"{SPLITS_ZIP}; the images are COCO 2014 train2014.zip and val2014.zip "
        "(https://cocodataset.org/#download). The folder must hold dataset_coco.json "
        "(or BLIP's coco_karpathy_*.json with data.annotations=lavis), train2014/ and "
        "val2014/.",
        ("train", "restval"),
    ),
    "flickr30k": Release(
        "Flickr30k (Karpathy splits)",
        "dataset_flickr30k.json",
        # Kaggle's copy unpacks to flickr30k_images/flickr30k_images/.
        ("flickr30k-images", "flickr30k_images/flickr30k_images", "flickr30k_images"),
        {"train": 29000, "val": 1014, "test": 1000},
        f"{SPLITS_ZIP}; the images are distributed on request by the University of Illinois "
        "(https://shannon.cs.illinois.edu/DenotationGraph/). The folder must hold "
        "dataset_flickr30k.json (or BLIP's flickr30k_*.json with data.annotations=lavis) "
        "and flickr30k-images/ (flickr30k_images/, as Kaggle names it, is found too).",
        ("train",),
    ),
}
TRAIN_CAPTIONS = ("sample", "all")


class KarpathyCaptionsDataModule(ManifestDataModule):
    """Images with their captions for contrastive training and group-aware retrieval.

    Args:
        root: Folder holding the annotation file and the image folders.
        dataset: ``coco`` or ``flickr30k``.
        annotations: Karpathy's annotation file inside ``root`` (defaults to the release's
            name), or ``lavis`` for BLIP's and LAVIS's per-split files.
        image_dir: Folder of the images inside ``root``; defaults to the release's (for
            Flickr30k the first of ``flickr30k-images`` and Kaggle's names that exists).
        train_splits: Karpathy splits trained on (``restval`` is the rest of COCO val2014).
        train_captions: ``sample`` (one caption per image per epoch) or ``all`` (every
            caption, every epoch).
        caption_seed: Seed of the caption draws (``null`` counts as 0).
        eval_captions: Captions kept per validation/test image, the first ones: ``5`` (the
            five-caption gallery of VSE++) or ``all`` (every caption, as ALBEF and BLIP
            rank; ``null`` too).
        check_counts: Compare image counts with the release: ``warn``, ``raise`` or ``off``.
        **loader_options: Passed to :class:`ManifestDataModule`.
    """

    def __init__(
        self,
        root: str | Path,
        dataset: str = "coco",
        annotations: str | None = None,
        image_dir: str | None = None,
        train_splits: Sequence[str] = ("train", "restval"),
        train_captions: str = "sample",
        caption_seed: int | None = 0,
        eval_captions: int | str | None = 5,
        check_counts: str = "warn",
        **loader_options: Any,
    ) -> None:
        if dataset not in RELEASES:
            raise ValueError(f"data.dataset must be one of {sorted(RELEASES)}, got {dataset!r}")
        if train_captions not in TRAIN_CAPTIONS:
            raise ValueError(
                f"data.train_captions must be one of {TRAIN_CAPTIONS}, got {train_captions!r}"
            )
        if not (
            eval_captions in (None, "all") or (type(eval_captions) is int and eval_captions > 0)
        ):
            raise ValueError(
                "data.eval_captions must be a count of captions per image (5: the "
                f"five-caption gallery) or all (every caption), got {eval_captions!r}"
            )
        modalities = list(loader_options.setdefault("modalities", ["image", "text"]))
        if modalities != ["image", "text"]:
            raise ValueError(
                f"caption data sets pair images with text: data.modalities must "
                f"be [image, text], got {modalities}"
            )
        super().__init__(
            root=root,
            columns={"image": "image", "text": "text"},
            label_column="label",
            **loader_options,
        )
        self.release_key = dataset
        self.release = RELEASES[dataset]
        self.annotations = annotations or self.release.annotations
        # Flickr30k has no restval split: naming it (the default) chooses nothing.
        chosen = {s for s in train_splits if s != "restval" or s in self.release.train_splits}
        if self.annotations == LAVIS and chosen != set(self.release.train_splits):
            raise ValueError(
                f"BLIP's and LAVIS's training file merges the {list(self.release.train_splits)} "
                f"splits, so data.train_splits={list(train_splits)} cannot be read from it; "
                "use Karpathy's annotation file to choose splits"
            )
        # None: found in read_splits, once the root can be looked at.
        self.image_dir = image_dir
        self.stage_of = {**{name: "train" for name in train_splits}, "val": "val", "test": "test"}
        self.train_captions = train_captions
        self.caption_seed = caption_seed or 0
        self.eval_captions = None if eval_captions == "all" else eval_captions
        self.count_check = check_counts

    @property
    def meta(self) -> dict[str, Any]:
        """One pseudo-class: the rows are matched pairs, not labelled samples."""
        return {"label_names": ["pair"]}

    def source_of(self, stage: str) -> Path:
        """The annotation file of ``stage``'s images (Karpathy's: the one of all splits)."""
        if self.annotations == LAVIS:
            return lavis_paths(self.root, self.release_key)["train" if stage == "train" else stage]
        return self.root / self.annotations

    def _record(self, entry: dict[str, Any], stage: str) -> Record:
        filename = entry.get("filename") or ""
        image = Path(self.image_dir, entry.get("filepath", ""), filename) if filename else ""
        captions = [str(s.get("raw", "")) for s in entry.get("sentences", [])]
        references = captions
        if stage != "train" and self.eval_captions is not None:
            captions = captions[: self.eval_captions]
        record = {"id": filename, "image": str(image), "captions": captions, "label": 0}
        if stage != "train":
            record["references"] = references
        return record

    def _entries(self) -> list[dict[str, Any]]:
        """Karpathy-style entries of every split, from whichever format is configured."""
        name = self.release.name
        if self.annotations == LAVIS:
            paths = lavis_paths(self.root, self.release_key)
            for split, path in paths.items():
                if not path.is_file():
                    raise lavis_missing(self.root, self.release_key, split)
            return read_lavis(paths, self.release.image_dirs)
        path = self.source_of("train")
        if not path.is_file() and lavis_paths(self.root, self.release_key)["train"].is_file():
            raise FileNotFoundError(
                f"{name}: missing {path}, but BLIP's/LAVIS's per-split files are there: "
                "set data.annotations=lavis to read them"
            )
        return read_karpathy(require_file(path, name, self.release.obtain), self.release_key)

    def _find_image_dir(self) -> str:
        """The configured image folder, or the release's under whichever name exists."""
        if self.image_dir is not None:
            return self.image_dir
        found = image_folder(self.root, self.release.image_dirs)
        if found != self.release.image_dirs[0]:
            log.info(
                "%s: images read from %s/ (not %s/)",
                self.release.name,
                found,
                self.release.image_dirs[0],
            )
        return found

    def read_splits(self) -> dict[str, list[Record]]:
        """The images of each stage with their captions; counts checked against the release."""
        entries = self._entries()
        self.image_dir = self._find_image_dir()
        splits: dict[str, list[Record]] = {"train": [], "val": [], "test": []}
        for entry in entries:
            stage = self.stage_of.get(entry.get("split"))
            if stage is not None:
                splits[stage].append(self._record(entry, stage))
        check_counts(
            self.release.name,
            {s: len(r) for s, r in splits.items()},
            self.release.counts,
            self.count_check,
        )
        if self.check_files:
            # A whole missing image folder is a download step left out, not bad samples.
            folders = {r["image"].rpartition("/")[0] for rows in splits.values() for r in rows}
            for folder in sorted(folders):
                if not (self.root / folder).is_dir():
                    raise FileNotFoundError(
                        f"{self.release.name}: missing folder "
                        f"{self.root / folder}. {self.release.obtain} "
                        "Point data.root at that folder."
                    )
        return splits

    def screen(self, stage: str, rows: Sequence[Record]) -> Sequence[Record]:
        """Images with a file and their non-empty captions, under ``on_bad_sample``."""
        images = [rows[i] for i in self.usable_positions(stage, rows, {"image": "image"})]
        captions = [
            {"id": f"{image['id']}#{k}", "text": text, "label": 0}
            for image in images
            for k, text in enumerate(image["captions"])
        ]
        usable = set(self.usable_positions(stage, captions, {"text": "text"}))
        kept: list[Record] = []
        bare: list[BadSample] = []
        pair = 0
        for position, image in enumerate(images):
            texts = [t for k, t in enumerate(image["captions"], start=pair) if k in usable]
            pair += len(image["captions"])
            if texts:
                kept.append({**image, "captions": texts, **_references(image, texts)})
            else:
                bare.append(
                    BadSample(
                        str(self.source_of(stage)),
                        stage,
                        row_name(image, position),
                        "no usable caption",
                    )
                )
        if bare and self.on_bad_sample == "raise":
            listed = "\n  ".join(str(b) for b in bare[:SHOWN])
            raise ValueError(
                f"{len(bare)} image(s) without captions in the {stage} split (set "
                f"data.on_bad_sample=skip to leave them out):\n  {listed}"
            )
        if bare:
            log.warning(
                "data.on_bad_sample=skip: left out %d %s images without captions, e.g. %s",
                len(bare),
                stage,
                bare[0],
            )
            self.bad_samples.extend(bare)
        return kept

    def dataset(self, stage: str, processed: bool = True) -> ImageCaptionRows:
        """Training pairs (``train``) or images with all their captions (``val``, ``test``)."""
        rows = self.stage_rows(stage)  # a training subset keeps each row whole
        processors = self.stage_processors(stage, processed)
        kind = CaptionPairs if stage == "train" else ImageCaptions
        return kind(
            rows,
            self.root,
            processors,
            self.source_of(stage),
            skip_unreadable=self.on_bad_sample == "skip",
        )

    def loader(self, stage: str) -> DataLoader:
        """The loader of ``stage``.

        Training: image-caption pairs, one caption per image per epoch or all of them.
        Evaluation: images, each with all its captions.
        """
        if stage not in self.datasets:
            self.setup()
        dataset = self.datasets[stage]
        options: dict[str, Any] = {
            "num_workers": self.num_workers,
            "pin_memory": self.pin_memory,
            "persistent_workers": self.persistent_workers,
        }
        if stage != "train":
            # Lightning's padding DistributedSampler under DDP, not the unpadded one of the
            # other data sets: contrastive evaluation gathers features across ranks, which
            # needs equal shards; the retrieval metric counts a repeated image once (by id).
            return DataLoader(
                dataset,
                batch_size=self.eval_batch_size,
                shuffle=False,
                collate_fn=GroupedCollator(self.processors["eval"]),
                **options,
            )
        collate = MultimodalCollator(self.processors["train"])
        if self.train_captions != "sample":
            return stage_loader(
                dataset,
                stage,
                self.batch_size,
                LoopProgress(self),
                collate_fn=collate,
                **options,
            )
        return ResumableLoader(
            dataset,
            OneCaptionPerImage(dataset.offsets, self.caption_seed),
            LoopProgress(self),
            batch_size=self.batch_size,
            collate_fn=collate,
            **options,
        )


def _references(image: Record, usable: list[str]) -> dict[str, list[str]]:
    """The image's references for caption metrics: all its non-empty captions.

    The usable captions of the gallery, then those the gallery left out (``eval_captions``
    keeps the first ones); an empty caption is never a reference.
    """
    if "references" not in image:
        return {}
    extra = image["references"][len(image["captions"]) :]
    return {"references": usable + [text for text in extra if str(text).strip()]}
