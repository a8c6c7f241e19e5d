"""The encoder outputs a fusion strategy is called with, read by a forward pre-hook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from mmexp.encoders.base import EncoderOutput


class FusionInputs:
    """Keep the first input of a fusion module's forward after each :meth:`listen`.

    Training methods that act on the step's encoder outputs (OGM-GE's confidences) read
    them here rather than encoding the batch a second time. Only the first call after
    :meth:`listen` is kept, so the extra fusion passes a method makes itself (scoring a
    modality alone) do not replace it.
    """

    def __init__(self) -> None:
        self._hook: Any = None
        self._listening = False
        self._seen: Mapping[str, EncoderOutput] | None = None

    def attach(self, fusion: torch.nn.Module) -> None:
        """Hook ``fusion`` (once)."""
        if self._hook is None:
            self._hook = fusion.register_forward_pre_hook(self._keep)

    def detach(self) -> None:
        """Remove the hook."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def listen(self) -> None:
        """Keep the next input."""
        self._listening = self._hook is not None
        self._seen = None

    def take(self) -> Mapping[str, EncoderOutput] | None:
        """The input kept since :meth:`listen`, or ``None``; stops listening."""
        seen, self._seen, self._listening = self._seen, None, False
        return seen

    def _keep(self, module: Any, args: tuple[Any, ...]) -> None:
        if self._listening and args:
            self._seen = args[0]
            self._listening = False
