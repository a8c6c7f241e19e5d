"""Training-step values held on the device and handed to their metrics in batches.

A torchmetrics update costs tens to hundreds of microseconds of Python per call whatever
the batch size (argument checks, state bookkeeping, AUROC's softmax): at a few
milliseconds per step that is a sizeable share of the step. :class:`StepBuffer` keeps
each step's detached tensors in a list instead and gives them to the metrics concatenated,
every ``every_n_steps`` steps, at the end of the epoch and before a checkpoint stores the
metric states. The metrics see every row of the epoch, so the epoch's figures are the same
as with one update per step (sums in another order: rounding differences only).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


class StepBuffer:
    """Per-step tensors and weights, concatenated on :meth:`flush`.

    Args:
        every_n_steps: Steps held before the consumer is called; ``None`` holds them until
            an explicit flush (epoch end, checkpoint).
        consumer: Called with one concatenated tensor per position given to :meth:`add`,
            then a ``[steps]`` tensor of the weights (on the device of the first tensor).

    Raises:
        ValueError: ``every_n_steps`` is not a positive integer or ``None``.
    """

    def __init__(
        self,
        every_n_steps: int | None,
        consumer: Callable[..., None],
    ) -> None:
        valid = isinstance(every_n_steps, int) and not isinstance(every_n_steps, bool)
        if every_n_steps is not None and not (valid and every_n_steps >= 1):
            raise ValueError(
                "model.train_metrics_every_n_steps must be a positive integer or null, "
                f"got {every_n_steps!r}"
            )
        self.every_n_steps = every_n_steps
        self.consumer = consumer
        self._rows: list[tuple[torch.Tensor, ...]] = []
        self._weights: list[float] = []

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, *tensors: torch.Tensor, weight: float = 1.0) -> None:
        """Hold one step's tensors (detached); flush once ``every_n_steps`` are held."""
        self._rows.append(tuple(t.detach() for t in tensors))
        self._weights.append(weight)
        if self.every_n_steps is not None and len(self._rows) >= self.every_n_steps:
            self.flush()

    def flush(self) -> None:
        """Give the held steps to the consumer, concatenated along the first dimension."""
        if not self._rows:
            return
        rows, weights = self._rows, self._weights
        self._rows, self._weights = [], []
        columns = [torch.cat(column) for column in zip(*rows, strict=True)]
        device = columns[0].device if columns else None
        self.consumer(*columns, torch.tensor(weights, device=device))

    def clear(self) -> None:
        """Drop the held steps (a new epoch, or states restored from a checkpoint)."""
        self._rows, self._weights = [], []
