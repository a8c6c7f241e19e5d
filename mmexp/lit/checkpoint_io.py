"""Checkpoint files written atomically and read safely.

Lightning's default writer truncates the target file and writes into it, so a run killed
or out of disk space during the save of ``last.ckpt`` loses the previous ``last.ckpt`` too.
:class:`AtomicCheckpointIO` writes a temporary file next to the target, flushes it to disk,
then renames it over the target: the rename is atomic on POSIX file systems, so the target
is always either the previous complete checkpoint or the new complete one.

Reading uses ``torch.load(weights_only=True)``: a checkpoint is data, and unpickling
arbitrary objects from a downloaded or shared file would run code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the previous file at its path is intact."""


class CheckpointReadError(ValueError):
    """A checkpoint file is missing, truncated or not a checkpoint."""


def atomic_save(checkpoint: dict[str, Any], path: str | Path) -> None:
    """Write ``checkpoint`` to ``path`` so that ``path`` never holds a partial file.

    Raises:
        CheckpointWriteError: The write failed (disk full, permissions...); the temporary
            file is removed and any previous file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    try:
        with open(temporary, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        kept = "the previous checkpoint there is intact" if path.exists() else "nothing saved"
        raise CheckpointWriteError(
            f"could not write checkpoint {path} ({error.strerror or error}); {kept}"
        ) from error


def safe_load(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``, naming the file when it cannot.

    Args:
        path: The checkpoint file.
        key: The config key the path came from, named in errors.
        mmap: Map the tensors from the file instead of reading them (reading the config
            and the weight names of a large checkpoint costs next to nothing).

    Raises:
        FileNotFoundError: No file at ``path``.
        CheckpointReadError: The file is damaged or holds objects other than tensors and
            plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no checkpoint file at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises several types for a damaged or foreign file
        raise CheckpointReadError(
            f"{key}: {path} is not a readable checkpoint (truncated, damaged, or holding "
            f"objects that weights_only loading refuses): {error}"
        ) from error


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO with atomic writes and ``weights_only`` reads."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write atomically (see :func:`atomic_save`)."""
        atomic_save(checkpoint, path)

    def load_checkpoint(
        self, path: Any, map_location: Any | None = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        """Read with ``weights_only=True`` (see :func:`safe_load`)."""
        return safe_load(path)


def newest_checkpoint(trainer: Any) -> Path | None:
    """The newest checkpoint file the trainer's ``ModelCheckpoint`` callbacks wrote.

    ``ModelCheckpoint`` records a file name before writing it, so a save that failed is
    named there although it never reached the disk: only existing files count.
    """
    from pytorch_lightning.callbacks import ModelCheckpoint

    named = [
        Path(path)
        for callback in trainer.callbacks
        if isinstance(callback, ModelCheckpoint)
        for path in (callback.last_model_path, callback.best_model_path, *callback.best_k_models)
        if path
    ]
    existing = [path for path in named if path.is_file()]
    return max(existing, key=lambda path: path.stat().st_mtime_ns, default=None)
