"""Gathering features across DDP ranks for losses and metrics over the global batch.

Contrastive losses need every rank's features as negatives. Two ways to gather them exist,
and open_clip exposes both, so mmexp does too:

* ``with_grad=True`` uses ``torch.distributed.nn.all_gather``, whose backward sends each
  rank the gradient that every other rank's loss puts on its features. A ``world_size``
  process run then computes exactly the gradient of one process on the concatenated batch.
* ``with_grad=False`` gathers plain tensors and puts the local, differentiable features back
  in their slot: cheaper, but each rank only sees the gradient of its own loss (the sum over
  ranks is ``1 / world_size`` of the single-process gradient without ``local_loss``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.distributed import nn as distributed_nn


def distributed_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_with_local(
    tensor: torch.Tensor, with_grad: bool, keep_local_grad: bool = True
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, rank order.

    Every rank must pass a tensor of the same shape (the per-rank batch size).

    Args:
        tensor: This rank's ``[B, ...]`` features.
        with_grad: Let gradients flow back to the rank that produced each slice.
        keep_local_grad: Without ``with_grad``, put the differentiable ``tensor`` back in
            this rank's slice; ``False`` detaches the whole result.

    Returns:
        ``[world_size * B, ...]`` in rank order.
    """
    rank, world_size = distributed_world()
    if world_size == 1:
        return tensor
    if with_grad:
        return torch.cat(distributed_nn.all_gather(tensor), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(parts, tensor.detach())
    if keep_local_grad:
        parts[rank] = tensor
    return torch.cat(parts, dim=0)
