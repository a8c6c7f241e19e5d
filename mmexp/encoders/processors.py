"""Preprocessing owned by the encoders and run by the data loaders.

A processor has two steps so that the cheap per-sample work runs in the loader workers and
the batch-level work (padding, tokenization of a whole batch) runs once per batch:

* ``processor(raw) -> item``: one decoded sample value (PIL image, string, waveform).
* ``processor.collate(items) -> batch``: a list of items into tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ModalityProcessor(Protocol):
    """What the data module needs from an encoder's preprocessing."""

    def __call__(self, raw: Any) -> Any:
        """Preprocess one decoded sample value."""
        ...

    def collate(self, items: Sequence[Any]) -> Any:
        """Stack preprocessed items of one batch."""
        ...


class ImageProcessor:
    """Resize, optional light augmentation, tensor conversion and normalisation.

    Args:
        size: Output side length in pixels (square images).
        mean: Per-channel mean used for normalisation.
        std: Per-channel standard deviation used for normalisation.
        augment: Apply small random translations (train split only). Colour and flips are
            never altered because they carry labels in many multimodal tasks (the caption
            names the colour and the side).
    """

    def __init__(
        self,
        size: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: bool = False,
    ) -> None:
        steps: list[Any] = [v2.PILToTensor(), v2.Resize((size, size), antialias=True)]
        if augment:
            steps.append(v2.RandomAffine(degrees=0.0, translate=(0.06, 0.06)))
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]
        self.transform = v2.Compose(steps)

    def __call__(self, raw: Image.Image) -> torch.Tensor:
        """Turn one RGB PIL image into a normalised ``[3, H, W]`` tensor."""
        return self.transform(raw.convert("RGB"))

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack images into ``[B, 3, H, W]``."""
        return torch.stack(list(items))


class TransformImageProcessor:
    """A model's own image transform per image and a stack per batch; picklable for workers.

    Args:
        transform: Callable from an RGB PIL image to a ``[3, H, W]`` tensor (a timm or
            open_clip transform).
    """

    def __init__(self, transform: Any) -> None:
        self.transform = transform

    def __call__(self, raw: Image.Image) -> torch.Tensor:
        """Transform one image (converted to RGB: grey or RGBA files are common)."""
        return self.transform(raw.convert("RGB"))

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack images into ``[B, 3, H, W]``."""
        return torch.stack(list(items))


class TextProcessor:
    """Tokenize a batch of strings with a Hugging Face tokenizer.

    Args:
        tokenizer: Any ``transformers`` tokenizer (``PreTrainedTokenizerBase``).
        max_length: Longest sequence kept, in tokens; longer texts are truncated.
    """

    # Pad to the longest text of the batch; a subclass pads to max_length instead.
    padding: bool | str = True

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, raw: str) -> str:
        """Return the text unchanged: tokenization is cheaper on a whole batch."""
        return raw

    def collate(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize and pad (to the longest text of the batch, or see :attr:`padding`)."""
        encoded = self.tokenizer(
            list(items),
            padding=self.padding,
            truncation=True,
            max_length=self.max_length,
            # Some tokenizers (SigLIP's) leave the mask out unless asked for it.
            return_attention_mask=True,
            return_tensors="pt",
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"].bool(),
        }


class MaxLengthTextProcessor(TextProcessor):
    """A :class:`TextProcessor` that pads every text to ``max_length`` tokens.

    For models trained on fixed-length sequences whose pooled token is a fixed position
    (SigLIP reads the last one, padding or not).
    """

    padding = "max_length"


class WaveformProcessor:
    """Crop and pad raw mono waveforms; features are computed on the device by the encoder.

    Args:
        sample_rate: Rate the encoder expects, in Hz.
        max_seconds: Longer clips are cropped to this duration.
    """

    def __init__(self, sample_rate: int, max_seconds: float) -> None:
        self.sample_rate = sample_rate
        self.max_samples = int(round(sample_rate * max_seconds))

    def __call__(self, raw: tuple[np.ndarray, int]) -> torch.Tensor:
        """Check the rate and crop one ``(waveform, sample_rate)`` pair."""
        waveform, rate = raw
        if rate != self.sample_rate:
            raise ValueError(
                f"audio has sample rate {rate} Hz but the encoder expects {self.sample_rate} Hz; "
                "resample the files or set the encoder's sample_rate"
            )
        return torch.as_tensor(np.asarray(waveform, dtype=np.float32)[: self.max_samples])

    def collate(self, items: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero-pad to the longest clip and keep the true lengths for masking."""
        lengths = torch.tensor([len(item) for item in items], dtype=torch.long)
        batch = torch.zeros(len(items), int(lengths.max()))
        for row, item in enumerate(items):
            batch[row, : len(item)] = item
        return {"waveform": batch, "lengths": lengths}
