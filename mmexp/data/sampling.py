"""Samplers that make runs independent of the number of processes.

Training: one permutation of the split per epoch, seeded by the run seed and the epoch,
dealt round-robin to the processes. The global batch ``k`` (the union of every process's
batch ``k``) is then the same set of samples on 1 or N processes, so a DDP run with the same
global batch follows the single-process run. Not the default yet (see training_sampler).

Evaluation: every sample scored exactly once. Lightning gives validation and test loaders a
``DistributedSampler``, which pads the split to a multiple of the number of processes by
repeating samples, so a metric over the padded split counts those samples twice (a
2-process run on 81 samples scores 82). Evaluation loaders therefore get Lightning's
``UnrepeatedDistributedSampler`` instead: processes may hold one sample more or less than
each other, which evaluation (no gradient all-reduce) allows, and torchmetrics sums over
all of them.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler, Sampler


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def training_sampler(dataset: Dataset) -> DistributedSampler:
    """Seeded per-epoch permutation, this process's share of it (all of it alone).

    Not used by default yet: it changes the single-process training order, which moves the
    figures of the learning tests; the DDP-equals-one-process test needs it.

    The seed is the run's (``seed_everything`` sets the initial seed on every process);
    Lightning calls ``set_epoch`` at each epoch, which reshuffles.
    """
    world, rank = (dist.get_world_size(), dist.get_rank()) if _distributed() else (1, 0)
    return DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                              seed=torch.initial_seed() % 2**31)


def stage_sampler(dataset: Dataset, stage: str) -> Sampler | None:
    """The sampler of the loader of ``stage`` (``train``, ``val`` or ``test``)."""
    # Training keeps PyTorch's shuffling (Lightning swaps in its DistributedSampler under
    # DDP); training_sampler is not the default yet, see its docstring.
    return None if stage == "train" else evaluation_sampler(dataset)


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """The sampler of an evaluation loader: unrepeated shards under DDP, else ``None``.

    Loaders are built after the process group starts, so this sees the run's world size;
    a loader built before (a sanity read outside the trainer) gets the plain order.
    """
    if not _distributed():
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
