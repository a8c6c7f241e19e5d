"""Learning-rate schedules that need the run length, which only the trainer knows."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine(
    optimizer: Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Linear warm-up then cosine decay, stepped every optimizer step.

    Args:
        optimizer: The optimizer whose learning rates are scheduled.
        total_steps: Optimizer steps of the whole run.
        warmup_fraction: Fraction of ``total_steps`` spent warming up linearly from zero.
        min_lr_ratio: Final learning rate as a fraction of the peak.

    Returns:
        A ``LambdaLR`` to be stepped once per optimizer step.
    """
    if total_steps <= 0:
        raise ValueError(f"warmup_cosine needs a positive total_steps, got {total_steps}")
    warmup = max(1, int(round(total_steps * warmup_fraction)))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
