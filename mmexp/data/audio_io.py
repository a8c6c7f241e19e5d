"""WAV reading and writing with the standard library, so no audio backend is needed."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import BinaryIO

import numpy as np

# PCM sample width in bytes -> (little-endian dtype, offset, full scale). 8-bit WAV is
# unsigned around 128; 16/32-bit are signed. 24-bit is unpacked separately.
_PCM = {1: ("u1", 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2.0**31)}


def write_wav(path: str | Path, waveform: np.ndarray, sample_rate: int) -> None:
    """Write mono audio in ``[-1, 1]`` as a 16-bit PCM WAV file.

    Samples are scaled by 32768 (the scale :func:`read_wav` divides by) and clipped to the
    int16 range, so a round trip is exact to within one quantisation step of 1/32768.
    """
    samples = np.clip(np.asarray(waveform, dtype=np.float64).reshape(-1), -1.0, 1.0)
    pcm = np.clip(np.rint(samples * 32768.0), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(int(sample_rate))
        handle.writeframes(pcm.tobytes())


def read_wav(path: str | Path | BinaryIO, name: str | None = None) -> tuple[np.ndarray, int]:
    """Read an 8/16/24/32-bit PCM WAV file as mono float32 in ``[-1, 1)``.

    Multi-channel audio is averaged to mono.

    Args:
        path: The ``.wav`` file, or a binary file object holding one.
        name: How to call it in errors (defaults to ``path``).

    Returns:
        ``(waveform, sample_rate)``.

    Raises:
        ValueError: The file is missing, corrupt, or not integer PCM of a supported width;
            the message names the file.
    """
    label = name or path
    try:
        source = path if hasattr(path, "read") else str(path)
        with wave.open(source, "rb") as handle:  # type: ignore[arg-type]
            width, channels = handle.getsampwidth(), handle.getnchannels()
            rate, frames = handle.getframerate(), handle.readframes(handle.getnframes())
    except (wave.Error, EOFError, OSError) as error:
        raise ValueError(f"cannot read WAV file {label}: {error}") from None
    if width == 3:
        raw = np.frombuffer(frames[: len(frames) - len(frames) % 3], dtype=np.uint8)
        # Little-endian 24-bit: place the three bytes in the top of an int32 to keep the sign.
        wide = raw.reshape(-1, 3).astype(np.int32)
        samples = ((wide[:, 0] << 8) | (wide[:, 1] << 16) | (wide[:, 2] << 24)).astype(np.float32)
        offset, scale = 0.0, 2.0**31
    elif width in _PCM:
        dtype, offset, scale = _PCM[width]
        usable = len(frames) - len(frames) % width
        samples = np.frombuffer(frames[:usable], dtype=dtype).astype(np.float64)
    else:
        raise ValueError(f"cannot read WAV file {label}: unsupported sample width {8 * width} bits")
    if channels < 1 or len(samples) % channels:
        raise ValueError(f"cannot read WAV file {label}: truncated data for {channels} channels")
    waveform = (samples - offset) / scale
    return waveform.reshape(-1, channels).mean(axis=1).astype(np.float32), rate
