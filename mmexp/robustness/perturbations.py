"""Seeded image, audio and feature-sequence perturbations at a strength ``level`` in [0, 1].

After MultiBench's robustness suite (Liang et al., NeurIPS 2021): each modality is degraded
at increasing levels to draw a performance curve. Text perturbations are in
:mod:`mmexp.robustness.text_perturbations`; seeding, kind checks and
:class:`PerturbedProcessor` in :mod:`mmexp.robustness.perturbation_base`, re-exported here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from scipy import ndimage

from mmexp.robustness.perturbation_base import (
    VALUE_KINDS,
    Perturbation,
    PerturbedProcessor,
    as_input_type,
    check_applies,
    to_numpy,
    value_kind,
)

__all__ = [
    "VALUE_KINDS",
    "AudioClipping",
    "AudioNoise",
    "GaussianImageNoise",
    "ImageBlur",
    "ImageOcclusion",
    "Perturbation",
    "PerturbedProcessor",
    "SequenceGaussianNoise",
    "TimeStepDropout",
    "check_applies",
    "value_kind",
]


class _ImagePerturbation(Perturbation):
    """Image perturbations: PIL images (pixels 0..255) or channels-first ``[..., H, W]`` arrays.

    Args:
        level: Strength in ``[0, 1]``.
        seed: Seed of the random draws.
        array_range: ``(low, high)`` pixel range of array images, onto which options given
            in ``[0, 1]`` pixel units are mapped; ``None`` takes each array's min and max.
    """

    modality_kinds = ("image",)
    value_kinds = ("image", "array")

    def __init__(
        self, level: float, seed: int = 0, array_range: tuple[float, float] | None = (0.0, 1.0)
    ) -> None:
        super().__init__(level, seed)
        if array_range is not None and not float(array_range[0]) < float(array_range[1]):
            raise ValueError(f"perturbation {self.name!r}: array_range must be (low, high)")
        self.array_range = None if array_range is None else tuple(map(float, array_range))

    def pixels(self, value: Any, kind: str) -> tuple[np.ndarray, float, float]:
        """Float pixels (``[H, W(, C)]`` for PIL images) and their range."""
        if kind == "image":
            image = value if value.mode in ("RGB", "L") else value.convert("RGB")
            return np.asarray(image, dtype=np.float64), 0.0, 255.0
        array = to_numpy(value).astype(np.float64)
        low, high = self.array_range or (float(array.min()), float(array.max()))
        return array, low, high

    @staticmethod
    def back(pixels: np.ndarray, value: Any, kind: str) -> Any:
        """Pixels into the container of ``value``."""
        if kind == "image":
            return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))
        return as_input_type(pixels, value)


class GaussianImageNoise(_ImagePerturbation):
    """Additive Gaussian noise, clipped to the pixel range.

    ``level`` times ``scale`` is the noise's standard deviation, in units of the pixel range
    (0..255 for PIL images, ``array_range`` for arrays).
    """

    name = "gaussian_noise"

    def __init__(
        self,
        level: float,
        seed: int = 0,
        scale: float = 0.5,
        array_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(level, seed, array_range)
        self.scale = self.non_negative("scale", scale)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        pixels, low, high = self.pixels(value, kind)
        noise = rng.standard_normal(pixels.shape) * (self.level * self.scale * (high - low))
        return self.back(np.clip(pixels + noise, low, high), value, kind)


class ImageBlur(_ImagePerturbation):
    """Gaussian blur; its standard deviation grows linearly with ``level``.

    At ``level`` 1 the standard deviation is ``max_sigma`` times the shorter side, so that
    the blur is the same relative to the image whatever its resolution. PIL images go
    through ``ImageFilter.GaussianBlur`` (radius = standard deviation), arrays through
    ``scipy.ndimage.gaussian_filter`` over their last two axes. No randomness.
    """

    name = "blur"

    def __init__(
        self,
        level: float,
        seed: int = 0,
        max_sigma: float = 0.05,
        array_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(level, seed, array_range)
        self.max_sigma = self.non_negative("max_sigma", max_sigma)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        if kind == "image":
            image = value if value.mode in ("RGB", "L") else value.convert("RGB")
            sigma = self.level * self.max_sigma * min(image.size)
            return image.filter(ImageFilter.GaussianBlur(radius=sigma))
        array = to_numpy(value).astype(np.float64)
        if array.ndim < 2:
            raise ValueError(
                f"perturbation {self.name!r} needs an image array [..., H, W], "
                f"got shape {list(array.shape)}"
            )
        sigma = self.level * self.max_sigma * min(array.shape[-2:])
        return as_input_type(
            ndimage.gaussian_filter(array, [0] * (array.ndim - 2) + [sigma] * 2), value
        )


class ImageOcclusion(_ImagePerturbation):
    """A rectangle covering a ``level`` fraction of the image, filled with a constant.

    Its aspect ratio (height / width) is drawn log-uniformly in ``[1/2, 2]`` and its place
    uniformly; ``fill`` is in ``[0, 1]`` pixel-range units (0 is black).
    """

    name = "occlusion"

    def __init__(
        self,
        level: float,
        seed: int = 0,
        fill: float = 0.0,
        array_range: tuple[float, float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__(level, seed, array_range)
        self.fill = float(fill)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        pixels, low, high = self.pixels(value, kind)
        height, width = pixels.shape[:2] if kind == "image" else pixels.shape[-2:]
        ratio = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        corner = rng.random(2)
        area = self.level * height * width
        rows = int(np.clip(np.rint(np.sqrt(area * ratio)), 1, height))
        cols = int(np.clip(np.rint(area / rows), 0, width))
        if cols == width:  # too wide for the image: grow it in height instead
            rows = int(np.clip(np.rint(area / width), 1, height))
        top, left = int(corner[0] * (height - rows + 1)), int(corner[1] * (width - cols + 1))
        box = (slice(top, top + rows), slice(left, left + cols))
        pixels[box if kind == "image" else (Ellipsis, *box)] = low + self.fill * (high - low)
        return self.back(pixels, value, kind)


def _waveform(value: Any, kind: str) -> np.ndarray:
    return to_numpy(value[0] if kind == "audio" else value).astype(np.float64)


def _audio_back(samples: np.ndarray, value: Any, kind: str) -> Any:
    if kind == "audio":
        return samples.astype(np.float32), value[1]
    return as_input_type(samples, value)


class AudioNoise(Perturbation):
    """Additive white Gaussian noise of standard deviation ``level * scale * peak``.

    ``peak`` is the largest absolute sample, so a silent clip stays silent. Takes
    ``(waveform, rate)`` pairs and arrays (spectrograms).
    """

    name = "additive_noise"
    modality_kinds = ("audio",)
    value_kinds = ("audio", "array")

    def __init__(self, level: float, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(level, seed)
        self.scale = self.non_negative("scale", scale)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        samples = _waveform(value, kind)
        peak = float(np.abs(samples).max(initial=0.0))
        noise = rng.standard_normal(samples.shape) * (self.level * self.scale * peak)
        return _audio_back(samples + noise, value, kind)


class AudioClipping(Perturbation):
    """Hard clipping at ``(1 - level)`` of the peak absolute amplitude (1 is silence)."""

    name = "clipping"
    modality_kinds = ("audio",)
    value_kinds = ("audio", "array")

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        samples = _waveform(value, kind)
        bound = (1.0 - self.level) * float(np.abs(samples).max(initial=0.0))
        return _audio_back(np.clip(samples, -bound, bound), value, kind)


class TimeStepDropout(Perturbation):
    """Zeroes whole time steps (rows of a ``[T, F]`` sequence), each with probability ``level``.

    As MultiBench's structured drop; the dropped steps at a level are among those dropped
    at any higher level.
    """

    name = "time_dropout"
    modality_kinds = ("sequence",)
    value_kinds = ("array",)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        steps = to_numpy(value).astype(np.float64)
        steps[rng.random(len(steps)) < self.level] = 0.0
        return as_input_type(steps, value)


class SequenceGaussianNoise(Perturbation):
    """Gaussian noise of standard deviation ``level * scale`` times each feature's.

    A feature's standard deviation is over the time steps of the sequence itself (over all
    values for a 1-D one), so that noise follows each feature's own scale.
    """

    name = "gaussian_noise"
    modality_kinds = ("sequence",)
    value_kinds = ("array",)

    def __init__(self, level: float, seed: int = 0, scale: float = 1.0) -> None:
        super().__init__(level, seed)
        self.scale = self.non_negative("scale", scale)

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:  # noqa: D102
        steps = to_numpy(value).astype(np.float64)
        spread = steps.std(axis=0) if steps.ndim > 1 and len(steps) else steps.std()
        noise = rng.standard_normal(steps.shape) * (self.level * self.scale * spread)
        return as_input_type(steps + noise, value)
