"""Cross-modal retrieval recall@K over the whole evaluation gallery, DDP-aware.

Each rank accumulates its embeddings with their data-set indices; ``compute`` gathers all
ranks (torchmetrics' ``cat`` reduction) and drops the duplicates that a distributed
sampler adds to even out the shards, so the gallery is exactly the evaluation split
whatever the number of processes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def direction_names(modalities: Sequence[str]) -> tuple[str, str]:
    """Short names of both retrieval directions, e.g. ``("i2t", "t2i")`` for image, text."""
    a, b = modalities
    if a[0] != b[0]:  # initials unless two modalities share one
        a, b = a[0], b[0]
    return f"{a}2{b}", f"{b}2{a}"


def recall_at_k(similarity: torch.Tensor, ks: Sequence[int]) -> dict[int, torch.Tensor]:
    """Fraction of queries (rows) whose partner (same index column) ranks in the top ``k``.

    Ties are resolved pessimistically: a partner tied with other items counts as ranked
    after them, so a collapsed embedding cannot score well.
    """
    partner = similarity.diagonal().unsqueeze(1)
    rank = (similarity >= partner).sum(dim=1) - 1  # 0 = retrieved first
    return {k: (rank < k).float().mean() for k in ks}


class RetrievalRecall(Metric):
    """Recall@K in both directions between two modalities' paired embeddings.

    Args:
        modalities: The two modalities, query order of the first direction.
        ks: Cut-offs ``K``.

    ``compute`` returns ``{"r@K_<a>2<b>": ..., "r@K_<b>2<a>": ..., "rsum": ...}``; ``rsum``
    is the sum of all recalls (in percent), the usual single model-selection figure.
    """

    full_state_update = False

    def __init__(self, modalities: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> None:
        super().__init__()
        if len(modalities) != 2:
            raise ValueError(f"retrieval is between two modalities, got {list(modalities)}")
        self.directions = direction_names(modalities)
        self.ks = tuple(int(k) for k in ks)
        self.add_state("embeddings_a", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings_b", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, embeddings_a: torch.Tensor, embeddings_b: torch.Tensor,
               indices: torch.Tensor) -> None:
        """Add paired, normalised embeddings ``[B, D]`` and their data-set indices ``[B]``."""
        self.embeddings_a.append(embeddings_a.detach().float())
        self.embeddings_b.append(embeddings_b.detach().float())
        self.indices.append(indices.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        """Recalls over the de-duplicated gallery."""
        indices = dim_zero_cat(self.indices)
        order = torch.argsort(indices, stable=True)
        indices = indices[order]
        keep = torch.ones_like(indices, dtype=torch.bool)
        keep[1:] = indices[1:] != indices[:-1]
        a = dim_zero_cat(self.embeddings_a)[order][keep]
        b = dim_zero_cat(self.embeddings_b)[order][keep]
        similarity = a @ b.T
        values: dict[str, torch.Tensor] = {}
        for direction, matrix in zip(self.directions, (similarity, similarity.T), strict=True):
            for k, recall in recall_at_k(matrix, self.ks).items():
                values[f"r@{k}_{direction}"] = recall
        values["rsum"] = 100 * torch.stack(list(values.values())).sum()
        values["gallery_size"] = torch.tensor(float(len(indices[keep])))
        return values
