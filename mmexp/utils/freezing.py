"""Freezing parts of a model: the one mechanism every freezing in mmexp goes through.

An encoder's ``freeze`` setting, a finetuning protocol restricting a pretrained tower and a
linear probe freezing the fusion all call :func:`freeze`. A frozen part keeps its
parameters fixed *and* stays in eval mode while the rest of the model trains: frozen
weights must see the statistics they were trained with (BatchNorm does not update its
running averages, dropout does not perturb fixed features). Its ``live`` submodules (the
last blocks that still train) follow the training mode as usual.

:class:`KeepsFrozenInEval` holds the one ``train()`` override that restores this after every
``train()`` call; encoders and LightningModules inherit it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from torch import nn

#: Attribute a frozen module carries: the names of its submodules that still train.
FROZEN_MARK = "mmexp_frozen_live_parts"

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def freeze(module: nn.Module, live: Sequence[str] = ()) -> None:
    """Freeze ``module`` except its submodules ``live``, and keep the frozen rest in eval mode.

    Args:
        module: The part to freeze (a backbone, an encoder, a fusion).
        live: Names, relative to ``module``, of submodules that keep training.
    """
    module.requires_grad_(False)
    for name in live:
        module.get_submodule(name).requires_grad_(True)
    setattr(module, FROZEN_MARK, tuple(live))
    keep_frozen_in_eval(module, module.training)


def unfreeze(module: nn.Module) -> None:
    """Make every parameter of ``module`` train, its parts in ``module``'s training mode."""
    module.requires_grad_(True)
    for part in module.modules():
        if hasattr(part, FROZEN_MARK):
            delattr(part, FROZEN_MARK)
    module.train(module.training)


def is_frozen(module: nn.Module) -> bool:
    """Whether :func:`freeze` was applied to ``module`` itself."""
    return hasattr(module, FROZEN_MARK)


def keep_frozen_in_eval(root: nn.Module, mode: bool) -> None:
    """After ``root.train(mode)``: put every frozen part below ``root`` back in eval mode.

    Inner frozen parts come first, so that an outer freeze (a protocol freezing a whole
    encoder) wins over an inner one (its backbone's ``last_n`` blocks).
    """
    if not mode:
        return
    for part in reversed(list(root.modules())):
        live = getattr(part, FROZEN_MARK, None)
        if live is None:
            continue
        part.eval()
        for name in live:
            part.get_submodule(name).train(True)


class KeepsFrozenInEval(nn.Module):
    """The ``train()`` override that keeps frozen parts (see :func:`freeze`) in eval mode."""

    def train(self: ModuleT, mode: bool = True) -> ModuleT:
        """Set the training mode; frozen parts stay in eval mode, their live parts follow."""
        super().train(mode)  # type: ignore[misc]
        keep_frozen_in_eval(self, mode)
        return self
