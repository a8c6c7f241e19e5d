"""Samplers that make runs independent of the number of processes and resumable mid-epoch.

Training: one permutation of the split per epoch, seeded by the run seed and the epoch,
dealt round-robin to the processes. The global batch ``k`` (the union of every process's
batch ``k``) is then the same set of samples on 1 or N processes, so a DDP run with the same
global batch follows the single-process run. The sampler also knows where in the epoch a
checkpoint was taken (:meth:`ShuffledEpochs.resume_at`), so a resumed run sees the rest of
the epoch in the same order instead of starting it over.

Evaluation: every sample scored exactly once. Lightning gives validation and test loaders a
``DistributedSampler``, which pads the split to a multiple of the number of processes by
repeating samples, so a metric over the padded split counts those samples twice (a
2-process run on 81 samples scores 82). Evaluation loaders therefore get Lightning's
``UnrepeatedDistributedSampler`` instead: processes may hold one sample more or less than
each other, which evaluation (no gradient all-reduce) allows, and torchmetrics sums over
all of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import Dataset, DistributedSampler, Sampler

from mmexp.losses.distributed import distributed_world


class ShuffledEpochs(DistributedSampler):
    """Each epoch a seeded permutation of all samples, dealt round-robin to the ranks.

    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of replacing it,
    and calls :meth:`set_epoch` every epoch. The order depends only on ``seed`` and the
    epoch, never on the number of ranks, so global batch ``k`` holds the same samples on one
    process as on N (the last global batch is padded with samples from the start of the
    epoch, as ``DistributedSampler`` does, when the ranks would otherwise get unequal
    counts: DDP needs every rank to take the same number of steps).

    Args:
        dataset: The training split (only its length is read).
        seed: Seed of the permutations.
        num_replicas: Number of ranks; defaults to the process group's.
        rank: This rank; defaults to the process group's.
    """

    def __init__(
        self, dataset: Any, seed: int = 0, num_replicas: int | None = None, rank: int | None = None
    ) -> None:
        default_rank, default_world = distributed_world()
        super().__init__(
            dataset,
            shuffle=True,
            seed=seed,
            drop_last=False,
            num_replicas=default_world if num_replicas is None else num_replicas,
            rank=default_rank if rank is None else rank,
        )
        # Global position (samples of the epoch's order already trained on) to start from
        # in epoch ``_resume_epoch``; set from a checkpoint by resume_at().
        self._resume_epoch = -1
        self._resume_position = 0

    def order(self) -> list[int]:
        """This epoch's order of all samples, the same on every rank."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(len(self.dataset), generator=generator).tolist()

    def resume_at(self, epoch: int, position: int) -> None:
        """Start epoch ``epoch`` at global position ``position`` of its order.

        Any process count can resume: positions count samples of the global order, which
        does not depend on the number of ranks.
        """
        self._resume_epoch, self._resume_position = epoch, position

    def start(self) -> int:
        """Global position this epoch starts at (0 unless resumed into it)."""
        return self._resume_position if self.epoch == self._resume_epoch else 0

    def __iter__(self) -> Iterator[int]:
        order = self.order()
        # Pad to a multiple of the ranks by repeating the start, then skip what the resumed
        # run already trained on: the remaining samples keep their rank and step.
        order = (order * math.ceil(self.total_size / len(order)))[: self.total_size]
        return iter(order[self.start() + self.rank : self.total_size : self.num_replicas])

    def __len__(self) -> int:
        # The whole epoch's count, also after resuming into it: Lightning counts the
        # batches it already ran into the epoch's progress.
        return self.num_samples


def stage_sampler(dataset: Dataset, stage: str, seed: int | None = None) -> Sampler | None:
    """The sampler of the loader of ``stage`` (``train``, ``val`` or ``test``).

    Args:
        dataset: The split.
        stage: ``train``, ``val`` or ``test``.
        seed: Seed of the training order; defaults to the process's initial seed, which
            ``seed_everything`` sets alike on every rank.
    """
    if stage == "train":
        seed = torch.initial_seed() % 2**31 if seed is None else seed
        return ShuffledEpochs(dataset, seed=seed)
    return evaluation_sampler(dataset)


def evaluation_sampler(dataset: Dataset) -> Sampler | None:
    """The sampler of an evaluation loader: unrepeated shards under DDP, else ``None``.

    Loaders are built after the process group starts, so this sees the run's world size;
    a loader built before (a sanity read outside the trainer) gets the plain order.
    """
    if distributed_world()[1] == 1:
        return None
    return UnrepeatedDistributedSampler(dataset, shuffle=False)
