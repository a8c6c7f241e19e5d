"""What every perturbation shares: value kinds, level checks, content seeding, wrapping.

A perturbation runs on the value a data set hands its encoder's processor, after decoding
and before preprocessing: a PIL image, a string, a ``(waveform, sample_rate)`` pair, or an
array (array data sets' images, spectrograms and ``[T, F]`` feature sequences).

Randomness is a function of the seed, the perturbation's name and the value's content (a
SHA-256 of its bytes), so that a sample is perturbed the same way whatever the call order,
loader worker or process. The level is left out of the seed on purpose: every level reuses
the same draws (noise is scaled, dropout masks are nested), so a stronger level degrades the
same sample further and a curve over levels is not blurred by resampling.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from mmexp.encoders.processors import ModalityProcessor

VALUE_KINDS = ("image", "text", "audio", "array")


def value_kind(value: Any) -> str:
    """What kind of decoded value ``value`` is: ``image``, ``text``, ``audio`` or ``array``.

    Raises:
        ValueError: ``value`` is none of a PIL image, a string, a ``(waveform, rate)`` pair,
            a numpy array or a torch tensor.
    """
    if isinstance(value, Image.Image):
        return "image"
    if isinstance(value, str):
        return "text"
    if isinstance(value, np.ndarray | torch.Tensor):
        return "array"
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], np.ndarray | torch.Tensor)
        and isinstance(value[1], int | np.integer)
        and not isinstance(value[1], bool)
    ):
        return "audio"
    raise ValueError(f"cannot perturb a value of type {type(value).__name__}")


def to_numpy(value: Any) -> np.ndarray:
    """A numpy array or a torch tensor (on any device) as a numpy array."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def as_input_type(result: np.ndarray, value: Any) -> Any:
    """``result`` with the dtype and container (numpy or torch) of ``value``."""
    dtype = to_numpy(value).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        result = np.clip(np.rint(result), info.min, info.max)
    out = np.ascontiguousarray(result.astype(dtype, copy=False))
    if isinstance(value, torch.Tensor):
        return torch.from_numpy(out).to(value.device)
    return out


def _hash_array(hasher: Any, array: np.ndarray) -> None:
    array = np.ascontiguousarray(array)
    hasher.update(f"{array.dtype.str}{array.shape}".encode())
    hasher.update(array.tobytes())


class Perturbation:
    """Base of the perturbations: level and seed checks, seeding, kind checks.

    Subclasses set :attr:`name`, :attr:`modality_kinds` (which of ``image``, ``text``,
    ``audio``, ``sequence`` they apply to), :attr:`value_kinds` (which decoded values they
    take, see :func:`value_kind`) and implement :meth:`apply`.

    Args:
        level: Strength in ``[0, 1]``; 0 returns the input unchanged.
        seed: Non-negative seed; with the value's content it fixes the random draws.

    Raises:
        ValueError: ``level`` is outside ``[0, 1]`` or ``seed`` is negative.
    """

    name: ClassVar[str] = ""
    modality_kinds: ClassVar[tuple[str, ...]] = ()
    value_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, level: float, seed: int = 0) -> None:
        level = float(level)
        if not 0.0 <= level <= 1.0:  # also refuses NaN
            raise ValueError(f"perturbation {self.name!r}: level must be in [0, 1], got {level}")
        if int(seed) < 0:
            raise ValueError(f"perturbation {self.name!r}: seed must be >= 0, got {seed}")
        self.level = level
        self.seed = int(seed)

    def non_negative(self, option: str, value: float) -> float:
        """``value`` of the scale option ``option`` as a float, refused when negative."""
        if not float(value) >= 0.0:
            raise ValueError(f"perturbation {self.name!r}: {option} must be >= 0, got {value}")
        return float(value)

    @property
    def accepts_arrays(self) -> bool:
        """Whether it takes array values (array data sets' samples)."""
        return "array" in self.value_kinds

    def __call__(self, value: Any) -> Any:
        """Perturb one decoded value; the input is never modified in place.

        Raises:
            ValueError: The perturbation does not take this kind of value.
        """
        kind = value_kind(value)
        if kind not in self.value_kinds:
            raise ValueError(
                f"perturbation {self.name!r} takes {'/'.join(self.value_kinds)} values, "
                f"not {kind} values ({type(value).__name__})"
            )
        if self.level == 0.0:
            return value
        return self.apply(value, kind, self.rng(value))

    def rng(self, value: Any) -> np.random.Generator:
        """The generator for ``value``: seeded by the seed, the name and the content."""
        hasher = hashlib.sha256(self.name.encode() + b"\0")
        kind = value_kind(value)
        if kind == "image":
            hasher.update(f"{value.mode}{value.size}".encode())
            hasher.update(value.tobytes())
        elif kind == "text":
            hasher.update(value.encode("utf-8"))
        elif kind == "audio":
            _hash_array(hasher, to_numpy(value[0]).astype(np.float32))
            hasher.update(str(int(value[1])).encode())
        else:
            _hash_array(hasher, to_numpy(value))
        words = np.frombuffer(hasher.digest(), dtype="<u4")
        return np.random.default_rng([self.seed, *(int(w) for w in words)])

    def apply(self, value: Any, kind: str, rng: np.random.Generator) -> Any:
        """Perturb ``value`` of kind ``kind`` at :attr:`level` > 0 with draws from ``rng``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(level={self.level}, seed={self.seed})"


def check_applies(perturbation: Any, modality: str, kind: str) -> None:
    """Check that ``perturbation`` suits modality ``modality`` holding ``kind`` values.

    Array values are feature sequences for any modality, and also image or audio arrays for
    the ``image`` and ``audio`` modalities (digits, spectrograms).

    Args:
        perturbation: A perturbation, its class, or a ``functools.partial`` of its class
            (how Hydra's ``_partial_: true`` hands it over).
        modality: Modality name, e.g. ``image`` or ``vision``.
        kind: The modality's decoded values, as :func:`value_kind` names them.

    Raises:
        ValueError: It does not apply; the message names the perturbation and the modality.
    """
    if isinstance(perturbation, functools.partial):
        perturbation = perturbation.func
    name = perturbation.name
    if kind not in perturbation.value_kinds:
        raise ValueError(
            f"perturbation {name!r} takes {'/'.join(perturbation.value_kinds)} values, but "
            f"modality {modality!r} holds {kind} values"
        )
    if kind == "array":
        kinds = {"sequence", modality} if modality in ("image", "audio") else {"sequence"}
    else:
        kinds = {kind}
    if not kinds & set(perturbation.modality_kinds):
        raise ValueError(
            f"perturbation {name!r} applies to {'/'.join(perturbation.modality_kinds)} "
            f"modalities, not to modality {modality!r} ({kind} values)"
        )


class PerturbedProcessor:
    """An encoder's processor that perturbs each decoded value before preprocessing it.

    Args:
        processor: The encoder's :class:`~mmexp.encoders.processors.ModalityProcessor`.
        perturbation: Any callable on decoded values, typically a :class:`Perturbation`.
    """

    def __init__(self, processor: ModalityProcessor, perturbation: Any) -> None:
        self.processor = processor
        self.perturbation = perturbation

    @property
    def accepts_arrays(self) -> bool:
        """The wrapped processor's, so that array data modules accept the wrapper."""
        return bool(getattr(self.processor, "accepts_arrays", False))

    def __call__(self, raw: Any) -> Any:
        """Perturb one decoded value, then preprocess it."""
        return self.processor(self.perturbation(raw))

    def collate(self, items: Any) -> Any:
        """Stack preprocessed items as the wrapped processor does."""
        return self.processor.collate(items)

    def __repr__(self) -> str:
        return f"PerturbedProcessor({self.processor!r}, {self.perturbation!r})"
