"""Gathering features across DDP ranks for losses and metrics over the global batch.

Contrastive losses need every rank's features as negatives. Two ways to gather them exist,
and open_clip exposes both, so mmexp does too:

* ``with_grad=True`` uses ``torch.distributed.nn.all_gather``, whose backward sends each
  rank the gradient that every other rank's loss puts on its features. A ``world_size``
  process run then computes exactly the gradient of one process on the concatenated batch.
* ``with_grad=False`` gathers plain tensors and puts the local, differentiable features back
  in their slot: cheaper, but each rank only sees the gradient of its own loss (the sum over
  ranks is ``1 / world_size`` of the single-process gradient without ``local_loss``).

Ranks may hold batches of different sizes: evaluation shards are unrepeated (see
:mod:`mmexp.data.sampling`), so with a split that does not divide evenly the last
validation batches differ by a row. The gather pads every rank's batch to the longest and
trims the padding off again (gloo and NCCL gather equal shapes only: gloo aborts the
process on a mismatch).
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


def batch_sizes(size: int, device: torch.device | str = "cpu", equal: bool = False) -> list[int]:
    """Every rank's batch size (``size`` on this rank), rank order; ``[size]`` alone.

    Args:
        size: This rank's batch size.
        device: Where the collective's buffer lives (the process group's device: CUDA
            under NCCL).
        equal: The caller knows every rank holds ``size`` rows (training batches: the
            training sampler deals every rank the same count), so no collective is run;
            reading its result would wait for the device in every step.
    """
    _, world_size = distributed_world()
    if world_size == 1 or equal:
        return [size] * world_size
    sizes = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(world_size)]
    dist.all_gather(sizes, torch.tensor([size], dtype=torch.long, device=device))
    return [int(s) for s in sizes]


def gather_with_local(
    tensor: torch.Tensor,
    with_grad: bool,
    keep_local_grad: bool = True,
    sizes: list[int] | None = None,
) -> torch.Tensor:
    """Concatenate ``tensor`` from every rank along dim 0, rank order.

    The ranks' batches may differ in size (dim 0); the other dimensions must agree.

    Args:
        tensor: This rank's ``[B, ...]`` features.
        with_grad: Let gradients flow back to the rank that produced each slice.
        keep_local_grad: Without ``with_grad``, put the differentiable ``tensor`` back in
            this rank's slice; ``False`` detaches the whole result.
        sizes: Every rank's batch size, from :func:`batch_sizes` (gathered here when
            ``None``; pass them to save the collective when gathering several tensors).

    Returns:
        ``[sum(sizes), ...]`` in rank order.
    """
    rank, world_size = distributed_world()
    if world_size == 1:
        return tensor
    sizes = batch_sizes(len(tensor), tensor.device) if sizes is None else sizes
    longest = max(sizes)
    # Zero rows, concatenated (differentiable): their gradient is dropped with them.
    padded = tensor
    if len(tensor) < longest:  # only then: the concatenation would copy every step
        padding = tensor.new_zeros((longest - len(tensor), *tensor.shape[1:]))
        padded = torch.cat([tensor, padding])
    if with_grad:
        parts = list(distributed_nn.all_gather(padded))
    else:
        parts = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(parts, padded.detach())
        if keep_local_grad:
            parts[rank] = padded
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)], dim=0)
