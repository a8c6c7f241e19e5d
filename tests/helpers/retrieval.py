"""Retrieval recall computed the slow, obvious way, to check the metric against."""

from __future__ import annotations


def brute_force_grouped(images, captions, owner, k: int) -> tuple[float, float]:
    """Image query: hit if ANY of its captions is in the top k; caption query: its image."""
    image_hits = 0
    for query in range(len(images)):
        scores = sorted(
            ((float(images[query] @ captions[j]), j) for j in range(len(captions))), reverse=True
        )
        image_hits += any(owner[j] == query for _, j in scores[:k])
    caption_hits = 0
    for query in range(len(captions)):
        scores = sorted(
            ((float(captions[query] @ images[i]), i) for i in range(len(images))), reverse=True
        )
        caption_hits += owner[query] in [i for _, i in scores[:k]]
    return image_hits / len(images), caption_hits / len(captions)
