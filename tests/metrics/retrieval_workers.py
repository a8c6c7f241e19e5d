"""Per-rank part of the distributed retrieval-metric test (importable for spawn)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmexp.metrics.retrieval import RetrievalRecall

GALLERY = 7


def gallery() -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy paired embeddings: partners are similar but not always the nearest."""
    generator = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(GALLERY, 6, generator=generator), dim=-1)
    b = F.normalize(a + 0.8 * torch.randn(GALLERY, 6, generator=generator), dim=-1)
    return a, b


def sharded_recall(rank: int, world_size: int) -> dict[str, torch.Tensor]:
    """Each rank sees the indices a DistributedSampler would give it, padding included."""
    a, b = gallery()
    padded = list(range(GALLERY)) + list(range(-GALLERY % world_size))  # repeats the first
    shard = torch.tensor(padded[rank::world_size])
    metric = RetrievalRecall(["image", "text"], ks=(1, 3))
    for part in shard.split(2):  # several batches
        metric.update(a[part], b[part], part)
    return metric.compute()
