"""Images with several captions each: training pairs, grouped evaluation, caption sampling.

Caption data sets (COCO Captions, Flickr30k) give every image about five captions. Training
draws image-caption pairs; evaluation encodes every image once and every caption once, so
that retrieval can rank all captions of the split (see
:class:`~mmexp.metrics.retrieval.RetrievalRecall`). Rows are image records
``{"id", "image", "captions", "label"}``.

Batches follow :mod:`mmexp.lit.contrastive`: a training batch is paired and its ``index``
holds each pair's image position in the split (two captions of one image share it); an
evaluation batch holds ``B`` images and all their captions with ``group`` (the image of each
caption) and ``member`` (each caption's position among the split's captions).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from mmexp.data.dataset import decode
from mmexp.data.manifest import Record, row_name
from mmexp.data.sampling import ShuffledEpochs
from mmexp.encoders.processors import ModalityProcessor

log = logging.getLogger(__name__)


class ImageCaptionRows(Dataset):
    """What both views share: decoding and processing, with errors naming file and row.

    Args:
        rows: Image records of one split, each with a non-empty ``captions`` list.
        root: Folder that image paths start from.
        processors: The encoders' ``image`` and ``text`` processors; ``None`` returns decoded
            values (for inspection and tests).
        source: The annotation file, named in error messages.
        skip_unreadable: Return ``None`` for an image that cannot be decoded (logged; the
            collator leaves it out and counts it) instead of raising.
    """

    def __init__(
        self,
        rows: Sequence[Record],
        root: Path,
        processors: Mapping[str, ModalityProcessor] | None,
        source: Path,
        skip_unreadable: bool = False,
    ) -> None:
        self.rows = list(rows)
        self.root = root
        self.processors = dict(processors) if processors is not None else None
        self.source = source
        self.skip_unreadable = skip_unreadable
        counts = torch.tensor([len(row["captions"]) for row in self.rows], dtype=torch.long)
        # Captions of image i are the pairs offsets[i] ... offsets[i + 1] - 1.
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])

    def _value(self, modality: str, raw: Any) -> Any:
        value = decode(modality, raw, self.root)
        return self.processors[modality](value) if self.processors is not None else value

    def _image(self, position: int) -> Any:
        """The processed image of ``position``, or ``None`` when unreadable and skipped."""
        row = self.rows[position]
        try:
            return self._value("image", row["image"])
        except (OSError, ValueError) as error:
            message = f"{self.source}: {row_name(row, position)}, image: {error}"
            if self.skip_unreadable:
                log.warning("data.on_bad_sample=skip: left out %s", message)
                return None
            raise type(error)(message) from error


class CaptionPairs(ImageCaptionRows):
    """One item per (image, caption) pair; ``index`` is the image's position in the split."""

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, pair: int) -> dict[str, Any] | None:
        position = int(torch.searchsorted(self.offsets, pair, right=True)) - 1
        image = self._image(position)
        if image is None:
            return None
        caption = self.rows[position]["captions"][pair - int(self.offsets[position])]
        return {"index": position, "label": 0, "image": image, "text": self._value("text", caption)}


class ImageCaptions(ImageCaptionRows):
    """One item per image, with all its captions, for grouped evaluation."""

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, position: int) -> dict[str, Any] | None:
        image = self._image(position)
        if image is None:
            return None
        captions = self.rows[position]["captions"]
        first = int(self.offsets[position])
        return {
            "index": position,
            "label": 0,
            "image": image,
            "text": [self._value("text", caption) for caption in captions],
            "member": list(range(first, first + len(captions))),
            # every caption of the image, also those left out of a trimmed retrieval
            # gallery: captioning scores against all references
            "references": list(self.rows[position].get("references", captions)),
        }


class GroupedCollator:
    """Collate images and all their captions; picklable for loader workers."""

    def __init__(self, processors: Mapping[str, ModalityProcessor]) -> None:
        self.processors = dict(processors)

    def __call__(self, samples: Sequence[dict[str, Any] | None]) -> dict[str, Any]:
        """Batch ``B`` images and their ``M`` captions.

        Returns ``image``, ``text`` (the ``M`` captions), ``index`` ``[B]``, ``group`` and
        ``member`` ``[M]``, ``label`` ``[B]``, ``references`` (each image's captions as
        text, for caption metrics) and ``num_skipped`` (unreadable images).
        """
        kept = [s for s in samples if s is not None]
        if not kept:
            raise RuntimeError(
                f"every image of a batch of {len(samples)} was unreadable; see "
                "the warnings above for the files"
            )
        return {
            "image": self.processors["image"].collate([s["image"] for s in kept]),
            "text": self.processors["text"].collate([t for s in kept for t in s["text"]]),
            "index": torch.tensor([s["index"] for s in kept], dtype=torch.long),
            "group": torch.tensor([s["index"] for s in kept for _ in s["text"]], dtype=torch.long),
            "member": torch.tensor([m for s in kept for m in s["member"]], dtype=torch.long),
            "label": torch.tensor([s["label"] for s in kept], dtype=torch.long),
            "references": [s["references"] for s in kept],
            "num_skipped": len(samples) - len(kept),
        }


class OneCaptionPerImage(ShuffledEpochs):
    """Each epoch, every image once in a random order, each with one of its captions.

    The draw depends only on ``seed`` and the epoch (Lightning calls :meth:`set_epoch`), so
    a run is reproducible, resumes with the same draws, and every rank draws alike before
    taking its shard. Within an epoch an image appears once, so a batch holds no two
    captions of one image; the only repeats are the few pairs that pad the last shard
    under DDP, which the losses mask by image id.

    Args:
        offsets: ``[N + 1]`` start of each image's captions among the pairs
            (:attr:`CaptionPairs.offsets`).
        seed: Seed of the draws.
        num_replicas: Number of ranks; defaults to the process group's.
        rank: This rank; defaults to the process group's.
    """

    def __init__(
        self,
        offsets: torch.Tensor,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        self.offsets = torch.as_tensor(offsets, dtype=torch.long)
        super().__init__(
            range(len(self.offsets) - 1), seed=seed, num_replicas=num_replicas, rank=rank
        )

    def draw(self) -> torch.Tensor:
        """This epoch's pairs on all ranks: one per image, images in random order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        counts = self.offsets[1:] - self.offsets[:-1]
        order = torch.randperm(len(counts), generator=generator)
        choice = (torch.rand(len(counts), generator=generator) * counts).long()
        return (self.offsets[:-1] + choice)[order]

    def order(self) -> list[int]:
        """This epoch's pairs (see :meth:`draw`)."""
        return self.draw().tolist()
