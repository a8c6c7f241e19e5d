"""Collect generated captions over an evaluation loop and score them once, DDP-aware.

Caption metrics are corpus-level (BLEU's counts, CIDEr's idf over the split's references)
and need the toolkit's Java programs, so they cannot be averaged over batches or ranks like
torchmetrics states. :class:`CaptionMetrics` keeps the strings; ``compute`` gathers every
rank's (``torch.distributed.all_gather_object``), drops the repeats a distributed sampler
adds to even out the shards, scores once on rank 0 and broadcasts the scores (or the error)
so that every rank logs the same values and no rank waits on a failed one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Literal

import torch
import torch.distributed as dist

from mmexp.metrics.caption_tokenize import find_java
from mmexp.metrics.captioning import (
    DEFAULT_METRICS,
    JAVA_METRICS,
    CaptionScores,
    JavaNotFoundError,
    caption_scores,
    java_missing_message,
    wanted_metrics,
)

Item = tuple[Hashable, str, tuple[str, ...]]


def _sort_key(image_id: Hashable) -> tuple[str, Any]:
    # Ids of one type sort naturally; the type name first keeps mixed ids comparable.
    return type(image_id).__name__, image_id


def unique_items(items: Iterable[Item]) -> list[Item]:
    """One item per image id (the first), sorted by id.

    A repeat with other references is an error: it means the loader yields one caption per
    sample, and each image would be scored against one of its references only.
    """
    kept: dict[Hashable, Item] = {}
    for item in items:
        first = kept.setdefault(item[0], item)
        if first[2] != item[2]:
            raise ValueError(
                f"image {item[0]!r} came twice with different references: evaluate each image "
                "once with all its reference captions"
            )
    return [kept[i] for i in sorted(kept, key=_sort_key)]


class CaptionMetrics:
    """Accumulates (image id, prediction, references) and computes :func:`caption_scores`.

    Args:
        prefix: Put before every name, e.g. ``"val/"`` gives ``val/bleu4``.
        metrics: As in :func:`~mmexp.metrics.captioning.caption_scores`.
        spice: Add SPICE.
        on_missing_java: As in :func:`~mmexp.metrics.captioning.caption_scores`; with
            ``"raise"`` a missing Java runtime raises here, before any training.
        process_group: The group to gather over (default: the whole world).

    ``compute`` returns the same :class:`~mmexp.metrics.captioning.CaptionScores` on every
    rank; call it on all ranks (it is a collective when ``torch.distributed`` is initialised).
    The values are already equal everywhere, so they are logged without ``sync_dist``::

        def on_validation_epoch_start(self):
            self.captions.reset()

        def validation_step(self, batch, batch_idx):
            self.captions.update(batch["id"], self.generate(batch), batch["captions"])

        def on_validation_epoch_end(self):
            self.log_dict(self.captions.compute())
    """

    def __init__(
        self,
        prefix: str = "",
        metrics: Iterable[str] = DEFAULT_METRICS,
        spice: bool = False,
        on_missing_java: Literal["raise", "partial"] = "raise",
        process_group: dist.ProcessGroup | None = None,
    ) -> None:
        self.prefix = prefix
        self.metrics = wanted_metrics(metrics, spice)
        self.on_missing_java = on_missing_java
        self.process_group = process_group
        needs = [m for m in self.metrics if m in JAVA_METRICS]
        if on_missing_java == "raise" and needs and find_java() is None:
            raise JavaNotFoundError(java_missing_message(needs))
        self.items: list[Item] = []

    def reset(self) -> None:
        """Forget the collected captions (at the start of each evaluation loop)."""
        self.items = []

    def update(
        self,
        image_ids: Sequence[Hashable] | torch.Tensor,
        predictions: Sequence[str],
        references: Sequence[Sequence[str]],
    ) -> None:
        """Add a batch: each image's id, generated caption and reference captions."""
        if isinstance(image_ids, torch.Tensor):
            image_ids = image_ids.tolist()
        if not len(image_ids) == len(predictions) == len(references):
            raise ValueError(
                f"got {len(image_ids)} ids, {len(predictions)} predictions and "
                f"{len(references)} reference lists; one of each per image"
            )
        for image_id, prediction, refs in zip(image_ids, predictions, references, strict=True):
            if isinstance(refs, str):
                raise TypeError(f"the references of image {image_id!r} must be a list")
            self.items.append((image_id, prediction, tuple(refs)))

    def _distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()

    def compute(self) -> CaptionScores:
        """Scores over every rank's captions, each image once, named with the prefix."""
        items = self.items
        rank = 0
        if self._distributed():
            group = self.process_group
            gathered: list[list[Item] | None] = [None] * dist.get_world_size(group)
            dist.all_gather_object(gathered, items, group=group)
            items = [item for part in gathered for item in part or []]
            rank = dist.get_rank(group)
        outcome: list[Any] = [None, None]  # scores, error
        if rank == 0:
            try:
                unique = unique_items(items)
                outcome[0] = caption_scores(
                    {i: p for i, p, _ in unique},
                    {i: list(r) for i, _, r in unique},
                    metrics=self.metrics,
                    on_missing_java=self.on_missing_java,
                )
            except Exception as error:  # re-raised on every rank below
                outcome[1] = error
        if self._distributed():
            source = dist.get_global_rank(self.process_group, 0) if self.process_group else 0
            dist.broadcast_object_list(outcome, src=source, group=self.process_group)
        scores, error = outcome
        if error is not None:
            raise error
        named = CaptionScores({f"{self.prefix}{k}": v for k, v in scores.items()})
        named.missing = scores.missing
        return named
