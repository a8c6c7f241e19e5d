"""Data loaders of every data module: resumable training order, unpadded evaluation.

Lightning saves the state of a training loader that has ``state_dict`` / ``load_state_dict``
in each checkpoint and gives it back on resume. :class:`ResumableLoader` saves the epoch and
the global position of the next sample to train on, so a run resumed from a mid-epoch
checkpoint goes on with the batches it had not trained on, in the same order.
"""

from __future__ import annotations

from typing import Any, Protocol

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from mmexp.data.missing import MarkMissing, MissingModalities
from mmexp.data.sampling import ShuffledEpochs, stage_sampler
from mmexp.lit.lightning_compat import loop_epoch, loop_trained_batches


class TrainingProgress(Protocol):
    """Where the training loop is, as the loader needs it."""

    def epoch(self) -> int:
        """The epoch being trained (or about to be)."""

    def trained_batches(self) -> int:
        """Batches of that epoch this process has trained on."""


class ResumableLoader(DataLoader):
    """A training loader whose position within the epoch goes into checkpoints.

    Args:
        dataset: The training split.
        sampler: Its :class:`ShuffledEpochs` sampler.
        progress: The training loop's epoch and batches trained in it. The loader cannot
            count them itself: Lightning fetches one batch ahead of the step it runs, and
            on resume creates the epoch's iterator before it tells the sampler the epoch.
        **options: Passed to ``DataLoader``.
    """

    def __init__(
        self, dataset: Dataset, sampler: ShuffledEpochs, progress: TrainingProgress, **options: Any
    ) -> None:
        # The worker seeds come from this generator, reseeded per epoch below, so they do
        # not depend on whether the run was resumed (nor draw from the global generator,
        # whose state the resumed run restores).
        super().__init__(dataset, sampler=sampler, generator=torch.Generator(), **options)
        self.progress = progress

    def __iter__(self) -> Any:
        self.sampler.set_epoch(self.progress.epoch())
        self.generator.manual_seed(self.sampler.seed + self.sampler.epoch)
        return super().__iter__()

    def state_dict(self) -> dict[str, int]:
        """Epoch and global position of the next sample to train on."""
        sampler = self.sampler
        trained = min(self.progress.trained_batches() * self.batch_size, sampler.num_samples)
        return {
            "epoch": sampler.epoch,
            "position": trained * sampler.num_replicas,
            "seed": sampler.seed,
            "samples": len(sampler.dataset),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume the saved epoch at its saved position.

        Raises:
            ValueError: The checkpoint was taken on another training split or seed, whose
                order this run cannot reproduce.
        """
        sampler = self.sampler
        if state["samples"] != len(sampler.dataset) or state["seed"] != sampler.seed:
            raise ValueError(
                f"the checkpoint's training order ({state['samples']} samples, seed "
                f"{state['seed']}) is not this run's ({len(sampler.dataset)} samples, seed "
                f"{sampler.seed}): resume with the data and seed of the run that saved it"
            )
        sampler.resume_at(state["epoch"], state["position"])


def stage_loader(
    dataset: Dataset,
    stage: str,
    batch_size: int,
    progress: TrainingProgress,
    seed: int | None = None,
    **options: Any,
) -> DataLoader:
    """The loader of ``stage``: resumable shuffled epochs for training, else split order.

    Args:
        dataset: The split.
        stage: ``train``, ``val`` or ``test``.
        batch_size: Samples per batch and process.
        progress: The training loop's progress (see :class:`ResumableLoader`).
        seed: Seed of the training order (see :func:`~mmexp.data.sampling.stage_sampler`).
        **options: Passed to ``DataLoader`` (workers, pinning, collate function...).
    """
    if stage == "train" and isinstance(progress, LoopProgress) and progress.overfits():
        # Lightning replaces the sampler to repeat the same first batches every epoch
        # (debug=overfit), which the resumable loader cannot take: a plain one in split order.
        return DataLoader(dataset, batch_size=batch_size, shuffle=False, **options)
    sampler = stage_sampler(dataset, stage, seed)
    if isinstance(sampler, ShuffledEpochs):
        return ResumableLoader(
            dataset, sampler, progress, batch_size=batch_size, drop_last=False, **options
        )
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=False, **options
    )


class LoopProgress:
    """The :class:`TrainingProgress` of the fit loop of the trainer a data module is attached to.

    Before the data module is attached to a trainer, epoch 0 with no batches trained.
    """

    def __init__(self, datamodule: Any) -> None:
        self.datamodule = datamodule

    def _trainer(self) -> pl.Trainer | None:
        return getattr(self.datamodule, "trainer", None)

    def epoch(self) -> int:
        """The epoch Lightning gives the sampler (also right while resuming)."""
        trainer = self._trainer()
        return loop_epoch(trainer) if trainer is not None else 0

    def trained_batches(self) -> int:
        """Training steps done in this epoch, the step being checkpointed included.

        See :func:`~mmexp.lit.lightning_compat.loop_trained_batches`.
        """
        trainer = self._trainer()
        return loop_trained_batches(trainer) if trainer is not None else 0

    def overfits(self) -> bool:
        """Whether the trainer overfits a few batches (``trainer.overfit_batches``)."""
        trainer = self._trainer()
        return trainer is not None and bool(trainer.overfit_batches)


class SplitLoaders(pl.LightningDataModule):
    """A data module's three loaders, built alike from its split data sets.

    Subclasses fill ``self.datasets`` in :meth:`setup` and name their batch assembly in
    :meth:`collator`; batch sizes and loader options are the usual attributes
    (``batch_size``, ``eval_batch_size``, ``num_workers``, ``pin_memory``,
    ``persistent_workers``).
    """

    datasets: dict[str, Dataset]
    #: Modalities missing per sample (``data.missing``), installed by the builders.
    missing: MissingModalities | None = None

    def collator(self, stage: str) -> Any:
        """The collate function of ``stage``'s loader."""
        raise NotImplementedError

    def marked(self, stage: str, collate: Any) -> Any:
        """``collate``, adding each sample's present modalities where ``data.missing`` applies."""
        if self.missing is None or not self.missing.applies_to(stage):
            return collate
        return MarkMissing(collate, self.missing, stage, self.modalities)  # type: ignore[attr-defined]

    def loader(self, stage: str) -> DataLoader:
        """The loader of ``stage`` (see :func:`stage_loader`)."""
        if stage not in self.datasets:
            self.setup()
        return stage_loader(
            self.datasets[stage],
            stage,
            self.batch_size if stage == "train" else self.eval_batch_size,
            LoopProgress(self),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=self.marked(stage, self.collator(stage)),
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches: a new seeded order each epoch."""
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        """Validation batches in split order."""
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test batches in split order."""
        return self.loader("test")
