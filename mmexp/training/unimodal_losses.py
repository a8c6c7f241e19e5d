"""Per-modality classifiers trained beside the fused head: auxiliary losses and G-Blending.

Both methods add a linear classifier on each modality's pooled encoder output and train it
on the label with the fused prediction, so that every encoder gets a gradient of its own
whatever the fused head leans on. They differ in the weights of the losses:

* :class:`UnimodalLosses` (``training=unimodal_aux``): the fused loss plus
  ``weight`` times each unimodal loss, fixed;
* :class:`GradientBlending` (``training=gradient_blending``; Wang, Tran and Feiszli, "What
  Makes Training Multi-modal Classification Networks Hard?", CVPR 2020): the weights of
  the fused and unimodal losses are re-estimated every ``super_epoch`` epochs from each
  head's overfitting-to-generalisation ratio on held-out data (the paper's online G-Blend,
  Eq. 7): ``w_k = (1 / Z) * dG_k / dO_k^2`` with ``dG_k`` the drop of head ``k``'s
  validation loss over the window and ``dO_k`` the change of its overfitting, validation
  minus training loss; ``Z`` makes the weights sum to 1. Training losses are the epoch's
  running means of the heads' losses (the paper evaluates them at the window's ends);
  a head whose validation loss rose (``dG_k <= 0``) gets weight 0, and ``dO_k`` is floored
  at ``min_overfitting`` so that a head that does not overfit does not take every weight.
  The first window starts after the first epoch (the heads' losses before any training
  say nothing of overfitting); until it closes the weights are uniform, as in the paper's
  first super-epoch. A validation every epoch is required (other trainer settings are
  refused by key).

The unimodal heads count only in training (and, for G-Blending, in the validation losses
they are weighed by); validation and test score the fused prediction. The weights are
logged as ``<prefix>/<head>/weight`` each epoch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput

FUSED = "fused"


class UnimodalLosses(nn.Module):
    """A linear classifier per modality, its loss weighed beside the fused loss.

    Args:
        weight: Weight of each unimodal loss (the fused loss has weight 1).

    Raises:
        ValueError: A negative ``weight``.
    """

    prefix = "unimodal_aux"

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"training unimodal loss weight must be >= 0, got {weight}")
        self.weight = weight
        self.heads = nn.ModuleDict()

    def build(self, widths: Mapping[str, int], num_classes: int) -> None:
        """Create one linear classifier per modality, ``width -> num_classes``."""
        for name, width in widths.items():
            self.heads[name] = nn.Linear(width, num_classes)

    @property
    def names(self) -> tuple[str, ...]:
        """The losses weighed: the fused head's, then each modality's."""
        return (FUSED, *self.heads)

    def weights(self) -> dict[str, float]:
        """The current weight of each loss in :attr:`names`."""
        return {FUSED: 1.0, **{name: self.weight for name in self.heads}}

    def losses(
        self,
        features: Mapping[str, EncoderOutput],
        labels: torch.Tensor,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """Each modality's classifier loss over the samples that have the modality.

        A modality absent from every sample of the batch gives a zero that keeps its
        head in the graph (so DDP sees every parameter used).
        """
        out = {}
        for name, head in self.heads.items():
            output = features[name]
            present = output.present_mask()
            logits = head(output.pooled)
            if present.any():
                out[name] = loss_fn(logits[present], labels[present])
            else:
                out[name] = logits.sum() * 0.0
        return out

    def total(self, fused: torch.Tensor, unimodal: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The weighed sum of the fused and unimodal losses."""
        weights = self.weights()
        loss = weights[FUSED] * fused
        for name, value in unimodal.items():
            loss = loss + weights[name] * value
        return loss

    @property
    def needs_validation_losses(self) -> bool:
        """Whether :meth:`observe` wants the validation losses too."""
        return False

    def observe(self, split: str, losses: Mapping[str, torch.Tensor], count: int) -> None:
        """Take a step's per-head losses (``split`` is ``train`` or ``val``)."""

    def end_epoch(self, epoch: int, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Close an epoch; ``reduce`` sums a tensor over the processes."""

    def check_trainer(self, trainer: Any) -> None:
        """Refuse trainer settings the method cannot work under (none here)."""


class GradientBlending(UnimodalLosses):
    """Online G-Blend: loss weights from each head's generalisation over overfitting.

    Args:
        super_epoch: Epochs per re-estimation window.
        min_overfitting: Floor of ``|dO_k|`` (loss units).

    Raises:
        ValueError: ``super_epoch`` below 1 or ``min_overfitting`` not positive.
    """

    prefix = "gblend"

    def __init__(self, super_epoch: int = 2, min_overfitting: float = 1e-3) -> None:
        super().__init__(weight=1.0)
        if super_epoch < 1:
            raise ValueError(f"training.super_epoch must be >= 1, got {super_epoch}")
        if min_overfitting <= 0:
            raise ValueError(f"training.min_overfitting must be > 0, got {min_overfitting}")
        self.super_epoch = super_epoch
        self.min_overfitting = min_overfitting
        self._weights: dict[str, float] | None = None
        self._sums: dict[str, dict[str, float]] = {"train": {}, "val": {}}
        self._counts = {"train": 0, "val": 0}
        self._window_start: dict[str, dict[str, float]] | None = None
        self._window_epochs = 0

    def get_extra_state(self) -> dict[str, object]:
        """The estimate and window in checkpoints, so that a resumed run goes on with them."""
        return {
            "weights": self._weights,
            "window_start": self._window_start,
            "window_epochs": self._window_epochs,
        }

    def set_extra_state(self, state: dict[str, object]) -> None:
        """Restore :meth:`get_extra_state`."""
        self._weights = state.get("weights")  # type: ignore[assignment]
        self._window_start = state.get("window_start")  # type: ignore[assignment]
        self._window_epochs = int(state.get("window_epochs", 0))  # type: ignore[arg-type]

    def weights(self) -> dict[str, float]:
        """The last estimate, uniform before the first window closes."""
        if self._weights is None:
            return {name: 1.0 / len(self.names) for name in self.names}
        return dict(self._weights)

    @property
    def needs_validation_losses(self) -> bool:
        """G-Blend weighs by validation losses."""
        return True

    def observe(self, split: str, losses: Mapping[str, torch.Tensor], count: int) -> None:
        """Add ``count`` samples' mean losses per head to the epoch's sums."""
        sums = self._sums[split]
        for name, value in losses.items():
            # kept on the device: no synchronisation per step
            sums[name] = sums.get(name, 0.0) + value.detach().float() * count
        self._counts[split] += count

    def end_epoch(self, epoch: int, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
        """Average the epoch's losses; re-estimate at the end of each window."""
        counts = dict(self._counts)
        sums = {split: dict(self._sums[split]) for split in self._sums}
        self._sums = {"train": {}, "val": {}}
        self._counts = {"train": 0, "val": 0}
        if not counts["train"] or not counts["val"]:
            return  # a validation run without training (mmexp-eval, trainer.validate)
        means = {}
        for split in ("train", "val"):
            values = [torch.as_tensor(sums[split].get(n, 0.0)).float().cpu() for n in self.names]
            reduced = reduce(torch.stack([*values, torch.tensor(float(counts[split]))]))
            means[split] = dict(zip(self.names, (reduced[:-1] / reduced[-1]).tolist(), strict=True))
        if self._window_start is None:
            self._window_start, self._window_epochs = means, 0
            return
        self._window_epochs += 1
        if self._window_epochs == self.super_epoch:
            self._weights = blending_weights(self._window_start, means, self.min_overfitting)
            self._window_start, self._window_epochs = means, 0

    def check_trainer(self, trainer: Any) -> None:
        """Refuse settings under which an epoch's validation is not one per training epoch.

        The windows count epochs whose training and validation losses both closed; a
        validation every few epochs, several per epoch or none would mix or lose them.

        Raises:
            ValueError: Naming the trainer key.
        """
        every = getattr(trainer, "check_val_every_n_epoch", 1)
        interval = getattr(trainer, "val_check_interval", 1.0)
        limit = getattr(trainer, "limit_val_batches", 1.0)
        if every != 1:
            raise ValueError(
                f"training=gradient_blending needs a validation every epoch; "
                f"trainer.check_val_every_n_epoch={every}"
            )
        if interval not in (1, 1.0):
            raise ValueError(
                f"training=gradient_blending estimates its weights once per epoch; "
                f"trainer.val_check_interval={interval} validates within epochs"
            )
        if limit == 0:
            raise ValueError(
                "training=gradient_blending weighs by validation losses; "
                "trainer.limit_val_batches=0 computes none"
            )


def blending_weights(
    start: Mapping[str, Mapping[str, float]],
    end: Mapping[str, Mapping[str, float]],
    min_overfitting: float = 1e-3,
) -> dict[str, float]:
    """G-Blend's weights from the heads' train and val losses at a window's two ends.

    Args:
        start: ``{"train": {head: loss}, "val": {head: loss}}`` at the window's start.
        end: The same at its end.
        min_overfitting: Floor of ``|dO|``.

    Returns:
        ``{head: weight}``, summing to 1; uniform when no head generalised (every
        ``dG <= 0``).
    """
    raw = {}
    for head in start["val"]:
        generalisation = start["val"][head] - end["val"][head]
        overfitting_start = start["val"][head] - start["train"][head]
        overfitting_end = end["val"][head] - end["train"][head]
        overfitting = max(abs(overfitting_end - overfitting_start), min_overfitting)
        raw[head] = max(generalisation, 0.0) / overfitting**2
    total = sum(raw.values())
    if total <= 0:
        return {head: 1.0 / len(raw) for head in raw}
    return {head: value / total for head, value in raw.items()}
