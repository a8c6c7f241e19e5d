"""Saving and restoring the global random number generators."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


def rng_states() -> dict[str, Any]:
    """The states of Python's, NumPy's and PyTorch's generators (CUDA's too when used)."""
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {
        "python": random.getstate(),
        # plain types and tensors only: checkpoints load with weights_only=True
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    """Restore generator states saved by :func:`rng_states`."""
    random.setstate(tuple(states["python"]))
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


@contextmanager
def rng_untouched() -> Iterator[None]:
    """Run a block without changing the global generators for the code after it.

    Work that is done in some runs and skipped in others (building a cache that later runs
    read) would otherwise shift every random draw after it, and the two kinds of run of
    the same config and seed would differ.
    """
    states = rng_states()
    try:
        yield
    finally:
        set_rng_states(states)
