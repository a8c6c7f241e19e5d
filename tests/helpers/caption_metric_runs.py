"""A tiny caption corpus and the per-rank part of the distributed caption-metric test."""

from __future__ import annotations

from typing import Any

from mmexp.metrics.caption_accumulator import CaptionMetrics

# Java-free-fast metrics: METEOR's start (about 8 s) would only slow the DDP test down.
FAST = ("bleu", "rouge_l", "cider")

REFERENCES = {
    0: ["A man riding a wave on top of a surfboard.", "A surfer rides a large wave."],
    1: ["Two dogs play in the grass.", "Dogs are playing on a green lawn."],
    2: ["A red bus drives down the street.", "A double-decker bus on a city road."],
    3: ["A cat sleeps on a sofa.", "A cat curled up on a couch, asleep."],
    4: ["A plate of food with broccoli.", "Broccoli and rice on a white plate."],
}
PREDICTIONS = {
    0: "a man riding a wave on a surfboard",
    1: "two dogs playing in the grass",
    2: "a bus driving down a street",
    3: "a cat laying on a couch",
    4: "a plate of rice and broccoli",
}


def shard(rank: int, world_size: int) -> list[int]:
    """The ids a DistributedSampler (no shuffle) gives ``rank``: padded with the first ones."""
    ids = list(REFERENCES)
    padded = ids + ids[: -len(ids) % world_size]
    return padded[rank::world_size]


def feed(metric: CaptionMetrics, ids: list[int], batch: int = 2) -> None:
    """Update ``metric`` with ``ids``' captions, ``batch`` images at a time."""
    for start in range(0, len(ids), batch):
        part = ids[start : start + batch]
        metric.update(part, [PREDICTIONS[i] for i in part], [REFERENCES[i] for i in part])


def sharded_scores(rank: int, world_size: int) -> dict[str, Any]:
    """Scores from this rank's shard, and the error of a corpus only rank 1 gets wrong."""
    metric = CaptionMetrics(prefix="val/", metrics=FAST)
    feed(metric, shard(rank, world_size))
    scores = metric.compute()
    metric.reset()
    feed(metric, shard(rank, world_size))
    if rank == 1:  # an image of rank 0's shard again, with one of its references only
        metric.update([0], [PREDICTIONS[0]], [REFERENCES[0][:1]])
    try:
        metric.compute()
        error = None
    except ValueError as raised:
        error = str(raised)
    return {"scores": dict(scores), "error": error}
