"""Content hashes of byte strings and named tensors (cache keys, weight checks)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import torch


def hash_parts(*parts: bytes) -> str:
    """Hex digest of a sequence of byte strings (each length-prefixed: no ambiguity)."""
    digest = hashlib.blake2b(digest_size=16)
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The values of ``tensor`` as bytes, whatever its device and memory layout."""
    # Flattened first: a 0-dim tensor (BatchNorm's num_batches_tracked) has no byte view.
    value = tensor.detach().cpu().contiguous().reshape(-1)
    return value.view(torch.uint8).numpy().tobytes() if value.numel() else b""


def tensors_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """Hash of named tensors: names, dtypes, shapes and values, in name order."""
    parts = []
    for name, tensor in sorted(tensors.items()):
        parts += [f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode(), tensor_bytes(tensor)]
    return hash_parts(*parts)
