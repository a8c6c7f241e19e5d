"""A callback that counts the batches each stage ran, for tests of the trainer presets."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytorch_lightning as pl


class BatchCounter(pl.Callback):
    """Count training, validation (sanity check apart) and test batches; write them as JSON.

    Args:
        path: Where the counts go (``{"train": n, "val": n, "sanity": n, "test": n}``),
            rewritten after every stage.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.counts: Counter[str] = Counter()

    def _count(self, stage: str) -> None:
        self.counts[stage] += 1
        self.path.write_text(json.dumps(dict(self.counts)))

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:  # noqa: D102
        self._count("train")

    def on_validation_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:  # noqa: D102
        self._count("sanity" if trainer.sanity_checking else "val")

    def on_test_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:  # noqa: D102
        self._count("test")


def read_counts(path: Path) -> dict[str, int]:
    """The counts a :class:`BatchCounter` wrote (none: an empty dict)."""
    return json.loads(path.read_text()) if path.is_file() else {}
