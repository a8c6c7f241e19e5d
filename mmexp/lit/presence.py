"""Encoding a batch in which samples lack modalities, and dropping modalities in training.

A batch marks absent modalities in ``batch["present"]`` (``{modality: [B] bool}``,
:mod:`mmexp.data.missing`). An encoder then runs on the samples that have its modality only,
and its output is scattered back to the whole batch with ``present=False`` and no real token
in the other rows; a modality no sample has is not encoded at all. The absent rows hold
zeros, which the fusion strategies never read (they mask on ``present``): no zero image or
empty string is ever encoded as if it were data.

:class:`ModalityDropout` is ModDrop (Neverova et al., "ModDrop: Adaptive Multi-modal Gesture
Recognition", IEEE TPAMI 2016): during training each sample drops each of its modalities at
random, so that the model learns to predict from any subset of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.fusion.layers import presence_matrix


def select_rows(value: Any, rows: torch.Tensor, batch_size: int) -> Any:
    """The samples ``rows`` of one modality's collated batch.

    Tensors and lists whose first dimension is the batch are indexed; mappings (token ids and
    mask, waveform and lengths, cached features) keep their type with each value selected;
    anything else (a sample rate) is shared by every sample and kept.
    """
    if isinstance(value, torch.Tensor):
        return value[rows] if value.dim() and value.shape[0] == batch_size else value
    if isinstance(value, Mapping):
        selected = {key: select_rows(item, rows, batch_size) for key, item in value.items()}
        return type(value)(selected) if isinstance(value, dict) else selected
    if isinstance(value, list | tuple) and len(value) == batch_size:
        return type(value)(value[i] for i in rows.tolist())
    return value


def absent_output(
    batch_size: int, width: int, device: torch.device, dtype: torch.dtype
) -> EncoderOutput:
    """A modality no sample of the batch has: one masked placeholder token, zeros."""
    return EncoderOutput(
        tokens=torch.zeros(batch_size, 1, width, device=device, dtype=dtype),
        mask=torch.zeros(batch_size, 1, dtype=torch.bool, device=device),
        pooled=torch.zeros(batch_size, width, device=device, dtype=dtype),
        present=torch.zeros(batch_size, dtype=torch.bool, device=device),
    )


def scatter_output(output: EncoderOutput, rows: torch.Tensor, batch_size: int) -> EncoderOutput:
    """``output`` of the samples ``rows`` placed in a batch of ``batch_size``; others absent."""
    tokens = output.tokens.new_zeros(batch_size, *output.tokens.shape[1:])
    tokens[rows] = output.tokens
    mask = output.mask.new_zeros(batch_size, output.mask.shape[1])
    mask[rows] = output.mask
    pooled = output.pooled.new_zeros(batch_size, output.pooled.shape[1])
    pooled[rows] = output.pooled
    present = torch.zeros(batch_size, dtype=torch.bool, device=output.pooled.device)
    present[rows] = output.present_mask()
    return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled, present=present)


def mark_absent(output: EncoderOutput, keep: torch.Tensor) -> EncoderOutput:
    """``output`` with the samples where ``keep`` is ``False`` marked absent."""
    keep = keep.to(output.pooled.device)
    return EncoderOutput(
        tokens=output.tokens,
        mask=output.mask & keep[:, None],
        pooled=output.pooled,
        present=output.present_mask() & keep,
    )


def _reference(encoder: ModalityEncoder) -> torch.Tensor | None:
    return next(iter(encoder.parameters()), None)


def encode_present(
    encoder: ModalityEncoder, inputs: Any, present: torch.Tensor | None, batch_size: int
) -> EncoderOutput:
    """Run ``encoder`` on the samples that have its modality only.

    Args:
        encoder: The modality's encoder.
        inputs: The modality's collated batch (or cached features).
        present: ``[B]`` bool, ``None`` when every sample has the modality.
        batch_size: ``B``.
    """
    if present is None or bool(present.all()):
        return encoder(inputs)
    rows = present.nonzero().squeeze(1)
    if len(rows) == 0:
        weight = _reference(encoder)
        device = present.device if weight is None else weight.device
        dtype = torch.get_default_dtype() if weight is None else weight.dtype
        return absent_output(batch_size, encoder.out_dim, device, dtype)
    output = encoder(select_rows(inputs, rows.to(_device_of(inputs, rows)), batch_size))
    return scatter_output(output, rows.to(output.pooled.device), batch_size)


def _device_of(inputs: Any, default: torch.Tensor) -> torch.device:
    """The device the modality's batch is on (rows index it there)."""
    if isinstance(inputs, torch.Tensor):
        return inputs.device
    if isinstance(inputs, Mapping):
        for item in inputs.values():
            if isinstance(item, torch.Tensor):
                return item.device
    return default.device


class ModalityDropout:
    """ModDrop: drop each modality of each training sample at random (Neverova et al. 2016).

    A sample that would lose every modality it has keeps one of them, drawn uniformly, so
    that no training sample is left with nothing to predict from. Draws come from torch's
    generator, which the run seed fixes.

    Args:
        rate: Drop probability of every modality, or one per modality (others 0).

    Raises:
        ValueError: A rate outside ``[0, 1]``.
    """

    def __init__(self, rate: float | Mapping[str, float]) -> None:
        rates = dict(rate) if isinstance(rate, Mapping) else None
        self.default = 0.0 if rates is not None else float(rate)  # type: ignore[arg-type]
        self.rates = {str(m): float(r) for m, r in (rates or {}).items()}
        for name, value in {"": self.default, **self.rates}.items():
            if not 0.0 <= value <= 1.0:
                key = f"model.modality_dropout{'.' + name if name else ''}"
                raise ValueError(f"{key}={value} is outside [0, 1]")

    def check(self, modalities: Sequence[str]) -> None:
        """Refuse rates for modalities the model does not encode.

        Raises:
            ValueError: An unknown modality, or a single-modality model.
        """
        unknown = sorted(set(self.rates) - set(modalities))
        if unknown:
            raise ValueError(
                f"model.modality_dropout names {unknown}, which data.modalities="
                f"{list(modalities)} does not load"
            )
        if len(modalities) < 2 and (self.default or any(self.rates.values())):
            raise ValueError(
                f"model.modality_dropout with data.modalities={list(modalities)}: dropping "
                "the only modality leaves nothing to predict from"
            )

    def rate(self, modality: str) -> float:
        """The drop probability of ``modality``."""
        return self.rates.get(modality, self.default)

    def __call__(
        self, present: Mapping[str, torch.Tensor], modalities: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        """The presence after dropping; ``present`` gives the batch size and device."""
        kept = presence_matrix(present, modalities)
        rates = torch.tensor([self.rate(m) for m in modalities], device=kept.device)
        dropped = torch.rand(kept.shape, device=kept.device) < rates
        after = kept & ~dropped
        emptied = (~after.any(dim=1)) & kept.any(dim=1)
        if emptied.any():
            # Restore one of the modalities each emptied sample had, uniformly among them.
            scores = torch.rand(kept.shape, device=kept.device).masked_fill(~kept, -1.0)
            chosen = torch.nn.functional.one_hot(scores.argmax(dim=1), len(modalities)).bool()
            after = after | (chosen & emptied[:, None])
        return {m: after[:, i] for i, m in enumerate(modalities)}
