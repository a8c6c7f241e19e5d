"""Cross-modal retrieval recall@K over the whole evaluation gallery, DDP- and group-aware.

Each rank accumulates its embeddings with their data-set ids; ``compute`` gathers all ranks
(torchmetrics' ``cat`` reduction) and drops the duplicates that a distributed sampler adds to
even out the shards, so the gallery is exactly the evaluation split whatever the number of
processes.

Paired data match row by row. Caption data sets (COCO, Flickr30k) have several captions per
image; the standard protocol (Karpathy & Fei-Fei, "Deep Visual-Semantic Alignments for
Generating Image Descriptions", CVPR 2015; Faghri et al., "VSE++", BMVC 2018) encodes every
image once and every caption once (5,000 images and 25,000 captions on the COCO 5k test
split). An image-to-text query is a hit when ANY of its captions ranks in the top K; a
text-to-image query when its own image does.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

# Query rows scored at a time: bounds memory to CHUNK x gallery similarities (the COCO 5k
# test split would otherwise hold a 5,000 x 25,000 matrix plus masks of the same size).
CHUNK = 1024


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


def best_positive_rank(similarity: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """Rank of each query's best-scored positive among the negatives (0 = first).

    Args:
        similarity: ``[Q, N]`` scores of the queries against the gallery.
        positive: ``[Q, N]`` boolean, ``True`` where a gallery item is a partner of the query.

    Ties are pessimistic, as in :func:`recall_at_k`: a negative tied with the best positive
    ranks before it. With one positive per query this equals :func:`recall_at_k`'s rank.
    """
    best = similarity.masked_fill(~positive, float("-inf")).max(dim=1, keepdim=True).values
    return ((similarity >= best) & ~positive).sum(dim=1)


def partner_rank(similarity: torch.Tensor, partner: torch.Tensor) -> torch.Tensor:
    """Rank of each query's single partner (column ``partner[q]``), ties pessimistic."""
    score = similarity.gather(1, partner[:, None])
    return (similarity >= score).sum(dim=1) - 1


def _unique(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Order that sorts ``ids`` with the first of each repeated id kept; the kept ids."""
    order = torch.argsort(ids, stable=True)
    ids = ids[order]
    keep = torch.ones_like(ids, dtype=torch.bool)
    keep[1:] = ids[1:] != ids[:-1]
    return order[keep], ids[keep]


class RetrievalRecall(Metric):
    """Recall@K in both directions between two modalities' embeddings.

    Args:
        modalities: The two modalities, query order of the first direction.
        ks: Cut-offs ``K``.

    ``compute`` returns ``{"r@K_<a>2<b>": ..., "r@K_<b>2<a>": ..., "rsum": ...,
    "gallery_size": ...}``; ``rsum`` is the sum of all recalls (in percent), the usual single
    model-selection figure, and ``gallery_size`` counts the first modality's items. Grouped
    updates (several second-modality items per first-modality item) add
    ``gallery_size_<b>``, the count of the second modality's items.
    """

    full_state_update = False

    def __init__(self, modalities: Sequence[str], ks: Sequence[int] = (1, 5, 10)) -> None:
        super().__init__()
        if len(modalities) != 2:
            raise ValueError(f"retrieval is between two modalities, got {list(modalities)}")
        self.modalities = tuple(modalities)
        self.directions = direction_names(modalities)
        self.ks = tuple(int(k) for k in ks)
        self.grouped = False
        self.add_state("embeddings_a", default=[], dist_reduce_fx="cat")
        self.add_state("embeddings_b", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")
        self.add_state("groups", default=[], dist_reduce_fx="cat")
        self.add_state("members", default=[], dist_reduce_fx="cat")

    def update(
        self,
        embeddings_a: torch.Tensor,
        embeddings_b: torch.Tensor,
        indices: torch.Tensor,
        groups: torch.Tensor | None = None,
        members: torch.Tensor | None = None,
    ) -> None:
        """Add normalised embeddings and the ids that say which items match.

        Args:
            embeddings_a: ``[Ba, D]`` first-modality embeddings (e.g. images).
            embeddings_b: ``[Bb, D]`` second-modality embeddings (e.g. captions).
            indices: ``[Ba]`` data-set ids of the first modality's items.
            groups: ``[Bb]`` for each second-modality row, the id (as in ``indices``) of the
                item it belongs to; ``None`` pairs the rows of both modalities one to one.
            members: ``[Bb]`` data-set ids of the second modality's items (to drop sampler
                repeats); required with ``groups``.
        """
        if groups is None:
            if len(embeddings_a) != len(embeddings_b):
                raise ValueError(
                    f"paired retrieval needs as many rows of each modality, got "
                    f"{len(embeddings_a)} and {len(embeddings_b)}; pass groups"
                )
            groups = members = indices
        elif members is None or len(groups) != len(embeddings_b) or len(members) != len(groups):
            raise ValueError(
                "grouped retrieval needs groups and members, one per row of the second modality"
            )
        else:
            self.grouped = True
        self.embeddings_a.append(embeddings_a.detach().float())
        self.embeddings_b.append(embeddings_b.detach().float())
        self.indices.append(indices.detach())
        self.groups.append(groups.detach())
        self.members.append(members.detach())

    def compute(self) -> dict[str, torch.Tensor]:
        """Recalls over the de-duplicated gallery."""
        keep_a, ids_a = _unique(dim_zero_cat(self.indices))
        keep_b, _ = _unique(dim_zero_cat(self.members))
        a = dim_zero_cat(self.embeddings_a)[keep_a]
        b = dim_zero_cat(self.embeddings_b)[keep_b]
        groups = dim_zero_cat(self.groups)[keep_b]
        # Position of each second-modality item's partner among the first modality's items.
        owner = torch.searchsorted(ids_a, groups).clamp(max=len(ids_a) - 1)
        if not torch.equal(ids_a[owner], groups):
            raise ValueError(
                "some items of the second modality belong to no item of the "
                "first modality in the gallery"
            )
        if (torch.bincount(owner, minlength=len(ids_a)) == 0).any():
            raise ValueError("some items of the first modality have no partner in the gallery")
        rank_a = torch.cat(
            [
                best_positive_rank(
                    a[start : start + CHUNK] @ b.T,
                    owner[None, :]
                    == torch.arange(start, min(start + CHUNK, len(a)), device=owner.device)[
                        :, None
                    ],
                )
                for start in range(0, len(a), CHUNK)
            ]
        )
        # One partner per second-modality query: its score is read directly, no mask needed.
        rank_b = torch.cat(
            [
                partner_rank(b[start : start + CHUNK] @ a.T, owner[start : start + CHUNK])
                for start in range(0, len(b), CHUNK)
            ]
        )
        values: dict[str, torch.Tensor] = {}
        for direction, rank in zip(self.directions, (rank_a, rank_b), strict=True):
            for k in self.ks:
                values[f"r@{k}_{direction}"] = (rank < k).float().mean()
        values["rsum"] = 100 * torch.stack(list(values.values())).sum()
        values["gallery_size"] = torch.tensor(float(len(a)))
        if self.grouped:
            values[f"gallery_size_{self.modalities[1]}"] = torch.tensor(float(len(b)))
        return values
