"""Tiny video files in the real containers (mp4, avi, flv), written with PyAV."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np

# container suffix -> (video codec, audio codec or None): FLV as CREMA-D's VideoFlash
# (Sorenson H.263 + AAC), MP4 and AVI with MPEG-4 part 2
SUFFIXES = ("mp4", "avi", "flv")
FORMATS = {"mp4": ("mpeg4", "aac"), "avi": ("mpeg4", None), "flv": ("flv", "aac")}


def frame_level(index: int) -> int:
    """The grey level frame ``index`` is filled with: 10 apart (up to frame 22, then again
    from 20), so that a decoded frame tells which it is."""
    return 20 + 10 * (index % 23)


def write_video(
    path: Path, num_frames: int = 12, fps: int = 10, size: int = 32, colour: int | None = None
) -> Path:
    """Frames of one grey level each (:func:`frame_level`), or all of ``colour``'s channel.

    ``colour`` (0, 1 or 2) draws every frame as a bright square of that RGB channel on grey,
    so that a classifier can tell videos apart by colour.
    """
    codec, audio_codec = FORMATS[path.suffix.lstrip(".")]
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        audio = None
        if audio_codec is not None:
            audio = container.add_stream(audio_codec, rate=16000)
            audio.layout = "mono"
        for index in range(num_frames):
            pixels = np.full((size, size, 3), frame_level(index), np.uint8)
            if colour is not None:
                pixels[:] = 90
                pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4, colour] = 250
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio is not None:
            samples = int(16000 * num_frames / fps)
            tone = (3000 * np.sin(np.arange(samples) / 5)).astype(np.int16)[None]
            chunk = av.AudioFrame.from_ndarray(tone, format="s16", layout="mono")
            chunk.sample_rate = 16000
            for packet in audio.encode(chunk):
                container.mux(packet)
            for packet in audio.encode():
                container.mux(packet)
    return path


def write_video_manifest(root: Path, per_split: dict[str, int]) -> None:
    """Clips in the three containers, red or blue by label, and a JSONL manifest."""
    rows = []
    for split, count in per_split.items():
        for i in range(count):
            label = ("red", "blue")[i % 2]
            path = f"clips/{split}{i}.{SUFFIXES[i % 3]}"
            write_video(root / path, num_frames=6 + i % 5, colour=0 if label == "red" else 2)
            rows.append(
                {
                    "id": f"{split}{i}",
                    "split": split,
                    "video": path,
                    "text": "a clip",
                    "label": label,
                }
            )
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
