"""Speed options applied to a built model: ``torch.compile``, channels-last, checkpointing.

They are set under ``model`` (``model.compile``, ``model.compile_mode``,
``model.channels_last``, ``model.gradient_checkpointing``) and applied after the finetuning
protocol, because LoRA and linear probes change the module structure that gets compiled.
Mixed precision (``trainer.precision``), gradient accumulation
(``trainer.accumulate_grad_batches``) and the fused optimizer (``model.optimizer.fused``)
are Lightning and PyTorch options used as they are.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _to_channels_last(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    # Convolutions pick their NHWC kernels only when input and weights agree; converting
    # here keeps data loading and collation format-agnostic.
    return tuple(
        a.contiguous(memory_format=torch.channels_last)
        if isinstance(a, torch.Tensor) and a.dim() == 4
        else a
        for a in args
    )


def use_channels_last(encoder: nn.Module) -> None:
    """Store ``encoder``'s 4-D weights and convert its 4-D inputs to channels-last."""
    encoder.to(memory_format=torch.channels_last)
    encoder.register_forward_pre_hook(_to_channels_last)


def enable_gradient_checkpointing(encoders: Mapping[str, nn.Module]) -> list[str]:
    """Turn on activation checkpointing in every encoder that supports it.

    Returns:
        The modalities whose encoder now recomputes activations in the backward pass.

    Raises:
        ValueError: No encoder supports it (the option would do nothing).
    """
    enabled = [
        name
        for name, encoder in encoders.items()
        if getattr(encoder, "set_grad_checkpointing", lambda: False)()
    ]
    skipped = sorted(set(encoders) - set(enabled))
    if not enabled:
        raise ValueError(
            "model.gradient_checkpointing=true but none of the encoders "
            f"{sorted(encoders)} supports it (timm and Hugging Face backbones do)"
        )
    if skipped:
        log.info(
            "gradient checkpointing on %s; not supported by the encoders of %s", enabled, skipped
        )
    return enabled


def compile_module(module: nn.Module, mode: str | None) -> str:
    """Compile the part of ``module`` its training step runs, in place.

    A module with its own ``forward`` (the classifier: encoders, fusion and head) is
    compiled whole with ``nn.Module.compile``, which keeps parameter names unchanged in
    checkpoints; otherwise its ``encode`` (the towers of contrastive pretraining) is.

    Returns:
        ``"forward"`` or ``"encode"``: what was compiled.
    """
    if type(module).forward is not pl.LightningModule.forward:
        module.compile(mode=mode)
        return "forward"
    module.encode = torch.compile(module.encode, mode=mode)  # type: ignore[method-assign]
    return "encode"


def apply_speed_options(
    module: nn.Module,
    compile: bool = False,  # noqa: A002 - the config key users write
    compile_mode: str | None = None,
    channels_last: bool = False,
    gradient_checkpointing: bool = False,
) -> dict[str, Any]:
    """Apply the speed options of ``model`` to a built LightningModule, in place.

    Args:
        module: A module with ``encoders`` (a ``ModuleDict``), as every mmexp objective has.
        compile: Compile the module's forward with ``torch.compile`` (in place, so
            checkpoints keep their parameter names).
        compile_mode: ``torch.compile`` mode, e.g. ``"max-autotune"``.
        channels_last: Run image encoders in the channels-last memory format.
        gradient_checkpointing: Recompute encoder activations in the backward pass.

    Returns:
        What was applied, for the run record.

    Raises:
        ValueError: An unknown compile mode, or checkpointing no encoder supports.
    """
    if compile_mode not in COMPILE_MODES:
        raise ValueError(f"model.compile_mode must be one of {COMPILE_MODES}, got {compile_mode!r}")
    encoders: Mapping[str, nn.Module] = module.encoders  # type: ignore[assignment]
    applied: dict[str, Any] = {}
    if channels_last:
        images = [
            name
            for name, encoder in encoders.items()
            if getattr(encoder, "modality", name) == "image"
        ]
        for name in images:
            use_channels_last(encoders[name])
        applied["channels_last"] = images
    if gradient_checkpointing:
        applied["gradient_checkpointing"] = enable_gradient_checkpointing(encoders)
    if compile:
        applied["compile"] = compile_module(module, compile_mode)
    if applied:
        log.info("speed options: %s", applied)
    return applied


def speed_options(model_cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The speed keys of a ``model`` config node, with their defaults."""
    return {
        "compile": bool(model_cfg.get("compile", False)),
        "compile_mode": model_cfg.get("compile_mode"),
        "channels_last": bool(model_cfg.get("channels_last", False)),
        "gradient_checkpointing": bool(model_cfg.get("gradient_checkpointing", False)),
    }
