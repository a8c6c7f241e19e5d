"""Per-rank part of the distributed retrieval-metric test (importable for spawn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmexp.metrics.retrieval import RetrievalRecall

GALLERY = 7
# Captions per image of the grouped gallery: uneven, as after skipping bad captions.
CAPTIONS = [3, 1, 2, 3, 2]


def gallery() -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy paired embeddings: partners are similar but not always the nearest."""
    generator = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(GALLERY, 6, generator=generator), dim=-1)
    b = F.normalize(a + 0.8 * torch.randn(GALLERY, 6, generator=generator), dim=-1)
    return a, b


def grouped_gallery() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, their captions (noisy copies) and the image of each caption."""
    generator = torch.Generator().manual_seed(3)
    images = F.normalize(torch.randn(len(CAPTIONS), 6, generator=generator), dim=-1)
    owner = torch.repeat_interleave(torch.arange(len(CAPTIONS)), torch.tensor(CAPTIONS))
    captions = F.normalize(
        images[owner] + 0.9 * torch.randn(len(owner), 6, generator=generator), dim=-1
    )
    return images, captions, owner


def grouped_update(
    metric: RetrievalRecall,
    images: torch.Tensor,
    captions: torch.Tensor,
    owner: torch.Tensor,
    shard: torch.Tensor,
) -> None:
    """Feed ``shard``'s images, each with all its captions, two images per batch."""
    for part in shard.split(2):
        rows = torch.cat([torch.nonzero(owner == i).flatten() for i in part])
        metric.update(images[part], captions[rows], part, owner[rows], rows)


def _shard(size: int, rank: int, world_size: int) -> torch.Tensor:
    padded = list(range(size)) + list(range(-size % world_size))  # repeats the first
    return torch.tensor(padded[rank::world_size])


def sharded_recall(rank: int, world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Each rank sees the indices a DistributedSampler would give it, padding included."""
    a, b = gallery()
    metric = RetrievalRecall(["image", "text"], ks=(1, 3))
    for part in _shard(GALLERY, rank, world_size).split(2):  # several batches
        metric.update(a[part], b[part], part)
    grouped = RetrievalRecall(["image", "text"], ks=(1, 3))
    grouped_update(grouped, *grouped_gallery(), _shard(len(CAPTIONS), rank, world_size))
    return {"paired": metric.compute(), "grouped": grouped.compute()}
