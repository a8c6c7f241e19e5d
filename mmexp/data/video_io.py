"""Video files: their frame count and rate, and the frames at given indices (PyAV).

Decoding is the costly part of a video pipeline, so a data set's ``decode`` step only
probes the file (:func:`probe_video`: container metadata, no frame decoded) and the
encoder's processor asks for the frames its sampler chose (:func:`read_frames`).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

#: Frames a container's stored count may exceed the decodable ones by (see read_frames).
COUNT_SLACK = 2


@dataclass(frozen=True)
class VideoFile:
    """A readable video file.

    Attributes:
        path: The file.
        num_frames: Frames in its first video stream.
        fps: Their average rate, frames per second.
    """

    path: Path
    num_frames: int
    fps: float


def probe_video(path: str | Path) -> VideoFile:
    """Open ``path`` and read its frame count and rate.

    Containers that do not store a frame count (FLV, some AVI) are counted by demuxing
    their packets, which reads the file but decodes nothing. Results are kept per process
    (keyed by path, size and modification time), so each epoch does not probe again.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It cannot be opened as a video, has no video stream or no frames.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing video file {path}")
    stat = path.stat()
    return _probe(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=65536)
def _probe(name: str, size: int, mtime_ns: int) -> VideoFile:
    path = Path(name)
    try:
        with av.open(name) as container:
            if not container.streams.video:
                raise ValueError(f"video file {path} has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            count = int(stream.frames or 0)
            if count <= 0:
                count = sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError as error:
        raise ValueError(f"corrupt video file {path}: {error}") from None
    if count <= 0 or not rate:
        raise ValueError(f"video file {path} has no frames")
    return VideoFile(path, count, float(rate))


def read_frames(video: VideoFile, indices: Sequence[int]) -> np.ndarray:
    """The frames at ``indices`` (any order, repeats allowed) as ``[T, H, W, 3]`` uint8 RGB.

    Frames are decoded in order from the start up to the last index wanted (only the
    wanted ones are converted to RGB), so a clip's cost grows with its last frame. A
    container whose stored frame count exceeds what it decodes by at most
    :data:`COUNT_SLACK` frames (edit lists, some MP4s) gives its last decoded frame for
    those indices.

    Raises:
        IndexError: An index outside ``[0, num_frames)``.
        ValueError: The file stops decoding before a wanted frame (truncated or corrupt).
    """
    if not len(indices):
        raise ValueError(f"no frames asked of {video.path}")
    wanted = sorted(set(int(i) for i in indices))
    if wanted[0] < 0 or wanted[-1] >= video.num_frames:
        raise IndexError(
            f"frame indices {wanted[0]}..{wanted[-1]} outside the {video.num_frames} frames "
            f"of {video.path}"
        )
    frames: dict[int, np.ndarray] = {}
    targets = set(wanted)
    try:
        with av.open(str(video.path)) as container:
            stream = container.streams.video[0]
            decoded = 0
            last: np.ndarray | None = None
            for position, frame in enumerate(container.decode(stream)):
                decoded = position + 1
                if position in targets or position >= video.num_frames - COUNT_SLACK - 1:
                    last = frame.to_ndarray(format="rgb24")
                if position in targets:
                    frames[position] = last  # type: ignore[assignment]
                if position >= wanted[-1]:
                    break
    except av.FFmpegError as error:
        raise ValueError(f"corrupt video file {video.path}: {error}") from None
    missing = [i for i in wanted if i not in frames]
    if missing and last is not None and decoded >= video.num_frames - COUNT_SLACK:
        frames.update(dict.fromkeys(missing, last))
        missing = []
    if missing:
        raise ValueError(
            f"video file {video.path} decoded {len(frames)} of the frames asked; frame "
            f"{missing[0]} is missing (truncated or corrupt file)"
        )
    return np.stack([frames[int(i)] for i in indices])


def read_audio_track(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream of a media file (mp4, flv, mp3, ...) as mono float32.

    Data sets released as video files only (AVE, Kinetics) take their audio from here;
    channels are averaged, and the rate is the stream's own.

    Returns:
        ``(waveform, sample_rate)``, values in ``[-1, 1]``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: It cannot be decoded or has no audio stream; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing audio file {path}")
    chunks: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"media file {path} has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate)
            # one format for every codec: planar float, one row per channel, averaged
            # (FFmpeg's own mono downmix weighs each channel by 1/sqrt(2), not 1/2)
            resampler = av.AudioResampler(format="fltp", rate=rate)
            for frame in container.decode(stream):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray().mean(axis=0))
            for converted in resampler.resample(None):
                chunks.append(converted.to_ndarray().mean(axis=0))
    except av.FFmpegError as error:
        raise ValueError(f"corrupt media file {path}: {error}") from None
    if not chunks:
        raise ValueError(f"media file {path} has an empty audio stream")
    waveform = np.clip(np.concatenate(chunks).astype(np.float32), -1.0, 1.0)
    return waveform, rate
