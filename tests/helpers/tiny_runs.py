"""Tiny shapes runs for the missing-modality and robustness tests: small towers, one epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.helpers.configs import FAST_OVERRIDES, compose_config

# FAST_OVERRIDES with fewer training samples and towers a few times narrower: a run takes
# seconds. The 80 test samples stay, for the rates the robustness conditions draw on them.
TINY_OVERRIDES = [
    *FAST_OVERRIDES,
    "data.num_train=96",
    "data.num_val=32",
    "trainer.max_epochs=1",
    "model.width=32",
    "model.head.hidden_dims=[32]",
    "model.encoders.image.channels=[8,16]",
    "model.encoders.text.width=32",
    "model.encoders.text.depth=1",
    "model.encoders.text.heads=2",
    "model.encoders.text.max_length=48",
]


def train_tiny(folder: Path, data_dir: Path, *overrides: str) -> dict[str, Any]:
    """Train a tiny run into ``folder`` in this process; its run record."""
    from mmexp.train import train

    return train(compose_config("train", [*TINY_OVERRIDES, *overrides], folder, data_dir))
