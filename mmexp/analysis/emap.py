"""EMAP: how much of a model's performance needs cross-modal interactions.

Hessel and Lee, "Does my multimodal model learn cross-modal interactions? It's harder to
tell than you might think!", EMNLP 2020. The empirical multimodally-additive projection of
a model ``f`` on an evaluation set ``{(t_i, v_i)}`` is

    f̂(t_i, v_i) = mean_j f(t_i, v_j) + mean_j f(t_j, v_i) − mean_{j,k} f(t_j, v_k),

the best approximation of ``f`` by a sum ``g(t) + h(v)`` under the product of the two
empirical marginals. An additive model equals its projection; a pure interaction term whose
factors average to zero over the set vanishes from it. If the projection scores as well as
``f``, the evaluation gives no evidence that ``f`` uses interactions.

The projection is taken on logits, as in the paper. Every one of the ``N²`` cross-pairs is
scored, ``batch_size`` pairs per call of ``predict``, and only running sums over rows and
columns of the pair table are kept, so memory is ``O(N·C)`` whatever ``N``.

More than two modalities: the paper defines the two-modality case. With ``M > 2`` the
caller names two ``groups`` of modalities and the projection is additive across the groups;
the modalities of one group stay paired as in the data, so interactions inside a group are
kept. The full ``M``-way additive projection would score ``N^M`` combinations and is not
offered.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmexp.analysis.rows import (
    Features,
    Predict,
    check_batch_size,
    num_samples,
    predict_rows,
    select_rows,
)


def resolve_groups(
    modalities: Sequence[str], groups: Sequence[Sequence[str]] | None
) -> tuple[list[str], list[str]]:
    """The two groups of modalities the projection is additive across.

    Args:
        modalities: The modalities of the features.
        groups: Two disjoint, non-empty groups covering ``modalities``; ``None`` for the
            two-modality case, where each modality is its own group.

    Raises:
        ValueError: Fewer than two modalities, more than two without ``groups``, or
            ``groups`` that do not split the modalities in two.
    """
    names = list(modalities)
    if groups is None:
        if len(names) == 2:
            return [names[0]], [names[1]]
        if len(names) < 2:
            raise ValueError(f"EMAP needs two modalities, got {names}")
        raise ValueError(
            f"EMAP is defined for two modalities, got {names}; with more, pass groups=[[...], "
            "[...]] to project additively across two groups (the full additive projection "
            f"over {len(names)} modalities would need N^{len(names)} evaluations)"
        )
    parts = [list(group) for group in groups]
    flat = [name for group in parts for name in group]
    if len(parts) != 2 or not all(parts) or sorted(flat) != sorted(names):
        raise ValueError(
            f"groups must split the modalities {names} into two disjoint non-empty groups, "
            f"got {parts}"
        )
    return parts[0], parts[1]


def sample_indices(total: int, max_samples: int | None, seed: int) -> torch.Tensor:
    """The evaluation rows kept: all, or ``max_samples`` of them drawn with ``seed``, sorted.

    Raises:
        ValueError: ``max_samples`` is not positive.
    """
    if max_samples is None or max_samples >= total:
        return torch.arange(total)
    if max_samples <= 0:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=generator)[:max_samples].sort().values


def check_complete(features: Features) -> None:
    """Raise unless every sample has every modality.

    A cross-pair of a sample lacking one group with a sample lacking the other would have
    no modality at all, which no model scores.
    """
    for name, out in features.items():
        missing = (~out.present_mask()).nonzero().flatten()
        if missing.numel():
            raise ValueError(
                f"EMAP needs every modality of every sample; {name!r} is absent from samples "
                f"{missing.tolist()[:5]} (drop incomplete samples first)"
            )


def emap_logits(
    features: Features,
    predict: Predict,
    batch_size: int,
    max_samples: int | None = None,
    seed: int = 0,
    groups: Sequence[Sequence[str]] | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The EMAP projection of ``predict`` on the evaluation set ``features``.

    Args:
        features: Encoder outputs of the whole set, one row per sample (see
            :func:`~mmexp.analysis.rows.concat_features`).
        predict: Maps a feature dict to logits ``[B, C]``, e.g. a classifier's
            ``predict_from_features`` in eval mode.
        batch_size: Cross-pairs scored per call of ``predict``.
        max_samples: Project on a random subset of this many samples (the cost is quadratic
            in the set size); ``None`` keeps all.
        seed: Seed of that subset.
        groups: For more than two modalities, the two groups the projection is additive
            across (see the module doc).

    Returns:
        The projected logits ``[N, C]`` of the ``N`` samples kept, and a JSON-ready dict:
        ``n``, ``total`` (samples before subsampling), ``indices`` (the rows kept, in the
        order of the logits), ``seed``, ``max_samples``, ``groups``, ``pairs`` and
        ``batch_size``.

    Raises:
        ValueError: See :func:`resolve_groups` and :func:`check_complete`; a non-positive
            ``batch_size``; ``predict`` returns other than ``[B, C]``.
    """
    check_batch_size(batch_size)
    first, second = resolve_groups(list(features), groups)
    check_complete(features)
    total = num_samples(features)
    if total == 0:
        raise ValueError("EMAP needs at least one sample")
    indices = sample_indices(total, max_samples, seed)
    kept = {m: select_rows(out, indices) for m, out in features.items()}
    n = len(indices)
    device = next(iter(kept.values())).tokens.device
    rows = cols = None
    dtype = torch.float32
    with torch.no_grad():
        for start in range(0, n * n, batch_size):
            # Only this chunk's pair indices exist at a time: N² of them may not fit.
            pairs = torch.arange(start, min(start + batch_size, n * n), device=device)
            # Pair p scores the first group of sample i with the second group of sample j.
            i, j = pairs // n, pairs % n
            batch = {m: select_rows(kept[m], i if m in first else j) for m in kept}
            logits = predict(batch)
            if logits.ndim != 2 or logits.shape[0] != len(pairs):
                raise ValueError(
                    f"predict must return logits [B, C]; got shape {tuple(logits.shape)} "
                    f"for B={len(pairs)}"
                )
            if rows is None or cols is None:
                dtype = logits.dtype
                # Sums of up to N² terms: float64 keeps them exact enough for large sets.
                rows = torch.zeros(n, logits.shape[1], dtype=torch.float64, device=logits.device)
                cols = torch.zeros_like(rows)
            rows.index_add_(0, i.to(rows.device), logits.double())
            cols.index_add_(0, j.to(cols.device), logits.double())
    assert rows is not None and cols is not None
    grand = rows.sum(dim=0) / (n * n)
    projected = (rows / n + cols / n - grand).to(dtype)
    info = {
        "n": n,
        "total": total,
        "indices": indices.tolist(),
        "seed": seed,
        "max_samples": max_samples,
        "groups": [first, second],
        "pairs": n * n,
        "batch_size": batch_size,
    }
    return projected, info


def emap_report(
    features: Features,
    predict: Predict,
    labels: torch.Tensor,
    batch_size: int,
    max_samples: int | None = None,
    seed: int = 0,
    groups: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Accuracy of the model and of its EMAP projection on the same samples, JSON-ready.

    Args:
        features: See :func:`emap_logits`.
        predict: See :func:`emap_logits`.
        labels: ``[total]`` class indices of every sample of ``features``.
        batch_size: See :func:`emap_logits`; also the batch size of the model's own scoring.
        max_samples: See :func:`emap_logits`.
        seed: See :func:`emap_logits`.
        groups: See :func:`emap_logits`.

    Returns:
        ``accuracy`` (the model), ``emap_accuracy`` (the projection), ``gap`` (their
        difference: the accuracy the evaluation attributes to interactions at most),
        ``agreement`` (share of samples where both predict the same class), and the info
        of :func:`emap_logits`.
    """
    projected, info = emap_logits(features, predict, batch_size, max_samples, seed, groups)
    indices = torch.tensor(info["indices"], dtype=torch.long)
    original = predict_rows(features, predict, indices, batch_size)
    target = labels.to(original.device)[indices.to(original.device)]
    predicted, emap_predicted = original.argmax(dim=1), projected.argmax(dim=1)
    accuracy = float((predicted == target).float().mean())
    emap_accuracy = float((emap_predicted == target).float().mean())
    return {
        "accuracy": accuracy,
        "emap_accuracy": emap_accuracy,
        "gap": accuracy - emap_accuracy,
        "agreement": float((predicted == emap_predicted).float().mean()),
        **info,
    }
