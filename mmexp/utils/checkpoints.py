"""Reading checkpoints written by ``mmexp-train``, safely and with clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check it carries an mmexp config.

    Args:
        path: The checkpoint file.
        key: The config key the path came from, named in errors.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file is not a readable checkpoint or has no mmexp config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no checkpoint file at {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise ValueError(f"{key}: {path} is not a readable checkpoint ({error})") from error
    if "mmexp_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{key}: {path} was not written by mmexp-train (no mmexp_config)")
    return checkpoint
