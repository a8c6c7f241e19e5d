"""The test samples themselves, for the analyses that need the model's inputs.

The analysis set holds encoder outputs. Attention maps and saliency draw their figures on
the images the model saw, with the sample's text and labels, and saliency differentiates
through the image encoder: :class:`RawSamples` loads and collates any test samples again,
with the test loader's own data set and collate function (``data.missing`` lifted, as for
the encoded set). The analyses that only recombine encoder outputs never touch it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RawSamples:
    """Test samples by their index in the test split, collated as the test loader does.

    Attributes:
        dataset: The test split (processed as for testing).
        collate: The test loader's collate function.
        label_names: Class names in index order, when the data module has them.
    """

    dataset: Any
    collate: Callable[[list[Any]], dict[str, Any]]
    label_names: list[str] | None = None

    @classmethod
    def of_loader(cls, loader: Any, label_names: Sequence[str] | None = None) -> RawSamples:
        """The samples of a test loader (its data set and collate function)."""
        names = [str(name) for name in label_names] if label_names is not None else None
        return cls(loader.dataset, loader.collate_fn, names)

    def load(self, indices: Sequence[int]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The samples at ``indices``, one by one and collated into a batch.

        Raises:
            ValueError: A sample cannot be read (``data.on_bad_sample=skip`` left it out).
        """
        items = [self.dataset[int(index)] for index in indices]
        unreadable = [int(i) for i, item in zip(indices, items, strict=True) if item is None]
        if unreadable:
            raise ValueError(f"test samples {unreadable} cannot be read")
        return items, self.collate(items)

    def label_name(self, label: int) -> str:
        """The name of class ``label`` (its number when there are no names)."""
        if self.label_names is not None and 0 <= label < len(self.label_names):
            return self.label_names[label]
        return str(label)


def pick_rows(count: int, num_samples: int, seed: int) -> torch.Tensor:
    """Sorted rows of a seeded draw of ``num_samples`` of ``count`` rows (all if fewer).

    Raises:
        ValueError: ``num_samples`` is below 1.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be at least 1, got {num_samples}")
    if num_samples >= count:
        return torch.arange(count)
    chosen = np.random.default_rng(seed).choice(count, size=num_samples, replace=False)
    return torch.as_tensor(np.sort(chosen))


def describe_outcome(output: torch.Tensor, label: torch.Tensor, samples: RawSamples) -> dict:
    """The predicted and the true label of one sample, as names (JSON-ready).

    Single-label classification: the top class; multi-label: the labels with a positive
    logit; one output (regression): the values.
    """
    output, label = output.detach().float().cpu(), label.detach().cpu()
    if output.dim() == 0 or output.numel() == 1:
        return {"predicted": round(float(output.flatten()[0]), 4), "true": float(label)}
    if label.dim() == 1:  # multi-hot targets
        names = [samples.label_name(int(i)) for i in (output > 0).nonzero().flatten()]
        true = [samples.label_name(int(i)) for i in (label > 0).nonzero().flatten()]
        return {"predicted": ", ".join(names) or "none", "true": ", ".join(true) or "none"}
    return {
        "predicted": samples.label_name(int(output.argmax())),
        "true": samples.label_name(int(label)),
    }


def sample_text(item: dict[str, Any], modality: str, tokenizer: Any | None) -> str | None:
    """The text of a loaded sample: the string itself, or its token ids decoded."""
    value = item.get(modality)
    if isinstance(value, str):
        return value
    ids = value.get("input_ids") if isinstance(value, dict) else None
    if ids is None or tokenizer is None:
        return None
    return str(tokenizer.decode(torch.as_tensor(ids).flatten(), skip_special_tokens=True))


def token_labels(
    ids: torch.Tensor | None, count: int, tokenizer: Any | None, limit: int = 12
) -> list[str]:
    """A short label for each of ``count`` encoder tokens made from the real ``ids``.

    An encoder may merge several ids into one token (the byte-level text encoder merges
    ``downsample`` bytes); the window is taken as the largest ``s`` with
    ``ceil(len(ids) / s) == count``. Without ids or a tokenizer: ``#<position>``.
    """
    if ids is None or tokenizer is None or count < 1 or len(ids) < count:
        return [f"#{j}" for j in range(count)]
    size = len(ids)
    stride = max((s for s in range(1, size + 1) if math.ceil(size / s) == count), default=0)
    if not stride:
        return [f"#{j}" for j in range(count)]
    labels = []
    for j in range(count):
        window = ids[j * stride : (j + 1) * stride]
        text = str(tokenizer.decode(window, skip_special_tokens=True)).strip()
        labels.append(f"#{j} {text[:limit]!r}" if text else f"#{j}")
    return labels


def skipped(reason: str) -> dict[str, Any]:
    """The result of an analysis that does not apply to the model."""
    return {"skipped": True, "reason": reason}


def pixel_images(batch: dict[str, Any], modality: str) -> torch.Tensor | None:
    """The ``[B, 3, H, W]`` images of a collated batch, ``None`` when they are not pixels."""
    value = batch.get(modality)
    if isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[1] == 3:
        return value
    return None


def text_tokenizer(module: Any, modality: str) -> Any | None:
    """The tokenizer of the text encoder's preprocessing, if it has one."""
    return getattr(module.encoders[modality].processor(False), "tokenizer", None)
