"""Checkpoints without the frozen encoder weights (``model.save_frozen_weights=false``).

A fusion ablation over frozen pretrained towers writes the same tens of millions of tower
weights into every checkpoint of every run (best and last, each epoch), while only the
fusion and head train: most of each run's time and disk goes into copies of weights its
config already names. With ``model.save_frozen_weights=false`` a checkpoint leaves out
every encoder parameter that does not train, and records, per encoder, the names left out
and a digest of their values. Whoever loads it (resume, testing the best checkpoint,
``mmexp-eval``, finetuning from it) builds the encoders from the run's config, as it does
anyway, takes the left-out weights from them and checks the digest: a tower built from
another source (other pretrained weights, another ``checkpoint_path``, another seed for a
random one) is refused with the encoder named, never used silently.

Buffers (normalisation statistics, position ids) are small and always kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from mmexp.utils.digest import tensors_digest

FROZEN_WEIGHTS_KEY = "mmexp_frozen_weights"
OPTION = "model.save_frozen_weights"


class FrozenWeightsMismatchError(RuntimeError):
    """Weights left out of a checkpoint cannot be taken from the encoders built to load it."""


def frozen_encoder_parameters(module: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Per modality, the encoder parameters that do not train, by their state-dict names."""
    encoders: Mapping[str, nn.Module] = getattr(module, "encoders", None) or {}
    found = {}
    for modality, encoder in encoders.items():
        frozen = {
            f"encoders.{modality}.{name}": param.detach()
            for name, param in encoder.named_parameters()
            if not param.requires_grad
        }
        if frozen:
            found[modality] = frozen
    return found


def _digest(module: nn.Module, modality: str, tensors: Mapping[str, torch.Tensor]) -> str:
    # Frozen weights do not change, so their digest is computed once per run: keyed by the
    # tensors' storage and in-place version counters, which any change would move.
    signature = tuple((name, t.data_ptr(), t._version) for name, t in tensors.items())
    cache: dict[str, tuple[Any, str]] = module.__dict__.setdefault("_frozen_digests", {})
    if modality not in cache or cache[modality][0] != signature:
        cache[modality] = (signature, tensors_digest(tensors))
    return cache[modality][1]


def drop_frozen_weights(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Leave the frozen encoder weights out of ``checkpoint`` if ``module`` is set to.

    Does nothing unless ``module.save_frozen_weights`` is false (the module's constructor
    argument, from ``model.save_frozen_weights``).
    """
    if getattr(module, "save_frozen_weights", True):
        return
    state = checkpoint["state_dict"]
    record = {}
    for modality, tensors in frozen_encoder_parameters(module).items():
        kept = {name: tensor for name, tensor in tensors.items() if name in state}
        for name in kept:
            del state[name]
        record[modality] = {"keys": sorted(kept), "digest": _digest(module, modality, kept)}
    checkpoint[FROZEN_WEIGHTS_KEY] = record


def left_out_towers(checkpoint: Mapping[str, Any]) -> list[str]:
    """Modalities whose frozen weights ``checkpoint`` does not hold."""
    return sorted(checkpoint.get(FROZEN_WEIGHTS_KEY) or {})


def restore_frozen_weights(
    state: dict[str, torch.Tensor],
    record: Mapping[str, Any] | None,
    available: Mapping[str, torch.Tensor],
    origin: str,
    modalities: Iterable[str] | None = None,
) -> None:
    """Put the weights a checkpoint left out back into its ``state``, checked by digest.

    Args:
        state: The checkpoint's state dict, completed in place.
        record: The checkpoint's :data:`FROZEN_WEIGHTS_KEY` entry (``None``: nothing left out).
        available: State-dict entries of the model built to load it, same names.
        origin: What is being loaded, for messages (a path).
        modalities: Restore only these towers (all that were left out by default).

    Raises:
        FrozenWeightsMismatchError: A left-out weight is missing from ``available``, or
            the values there are not the ones the run trained with.
    """
    record = record or {}
    for modality in modalities if modalities is not None else record:
        if modality not in record:
            continue
        keys, expected = record[modality]["keys"], record[modality]["digest"]
        missing = [key for key in keys if key not in available]
        hint = (
            f"{origin} was saved with {OPTION}=false, so its frozen {modality} encoder "
            f"weights come from model.encoders.{modality} as configured for that run"
        )
        if missing:
            raise FrozenWeightsMismatchError(
                f"{hint}, but the encoder built from it has no {missing[:3]} "
                f"({len(missing)} missing)"
            )
        values = {key: available[key] for key in keys}
        if tensors_digest(values) != expected:
            raise FrozenWeightsMismatchError(
                f"{hint}, but the encoder built from it has other weights (its pretrained "
                "weights, checkpoint_path or, for a random one, seed differ from the run's). "
                f"Build it from the same source, or save checkpoints with {OPTION}=true"
            )
        state.update(values)
