"""Audio preprocessing for pretrained encoders: resampling and Hugging Face feature extractors."""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd
from typing import Any

import numpy as np
import torch


def resample(waveform: np.ndarray, orig: int, target: int) -> np.ndarray:
    """Resample a mono waveform from ``orig`` Hz to ``target`` Hz.

    Polyphase filtering (``scipy.signal.resample_poly``) is exact in length
    (``ceil(n * target / orig)``) and, unlike FFT resampling, does not assume the clip is
    periodic, so it adds no wrap-around artefacts at the edges.

    Args:
        waveform: ``[N]`` samples.
        orig: Rate of ``waveform``.
        target: Rate wanted.

    Returns:
        ``float32`` samples at ``target`` Hz (``waveform`` itself when the rates match).
    """
    if orig <= 0 or target <= 0:
        raise ValueError(f"sample rates must be positive, got {orig} -> {target}")
    waveform = np.asarray(waveform, dtype=np.float32)
    if orig == target:
        return waveform
    from scipy.signal import resample_poly

    factor = gcd(orig, target)
    return resample_poly(waveform, target // factor, orig // factor).astype(np.float32)


class HFAudioProcessor:
    """Resample and crop per sample; run a Hugging Face feature extractor per batch.

    Args:
        feature_extractor: A ``transformers`` audio feature extractor (wav2vec2, AST,
            Whisper, ...); its ``sampling_rate`` is the rate clips are resampled to.
        max_seconds: Longer clips are cropped to this duration (``None``: keep all).
    """

    def __init__(self, feature_extractor: Any, max_seconds: float | None = None) -> None:
        self.feature_extractor = feature_extractor
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.max_samples = None if max_seconds is None else int(self.sample_rate * max_seconds)
        # Whisper's encoder only accepts its fixed 30 s window, which the extractor pads to
        # by default; the other extractors pad to the longest clip of the batch.
        self.padding: dict[str, Any] = (
            {} if type(feature_extractor).__name__.startswith("Whisper") else {"padding": True}
        )

    def __call__(self, raw: tuple[np.ndarray, int]) -> np.ndarray:
        """Resample one ``(waveform, sample_rate)`` pair to the extractor's rate and crop it."""
        waveform, rate = raw
        waveform = resample(waveform, int(rate), self.sample_rate)
        return waveform if self.max_samples is None else waveform[: self.max_samples]

    def collate(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """Featurize a batch; ``lengths`` (samples per clip) lets the encoder mask frames."""
        features = self.feature_extractor(
            list(items),
            sampling_rate=self.sample_rate,
            return_tensors="pt",
            **self.padding,
        )
        batch = {name: torch.as_tensor(value) for name, value in features.items()}
        batch["lengths"] = torch.tensor([len(item) for item in items], dtype=torch.long)
        return batch
