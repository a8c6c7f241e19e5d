"""Which frames of a video a clip reads: uniform, random segment (TSN) or a fixed rate.

A sampler maps a video's frame count (and rate) to ``num_frames`` indices. In training the
random choices come from torch's generator, as the image augmentations' do, so that they
follow ``seed`` and Lightning's per-worker seeding (a rerun with the same seed reads the
same frames); evaluation is deterministic.

* ``uniform``: the centres of ``num_frames`` equal segments, in training and evaluation.
* ``segment`` (Wang et al., "Temporal Segment Networks", ECCV 2016): one frame per equal
  segment, at random within it in training, at its centre in evaluation.
* ``fps``: ``num_frames`` consecutive frames resampled to ``fps`` frames per second (the
  clip sampling of SlowFast / VideoMAE), starting at random in training and centred in
  evaluation; a video shorter than the clip repeats its last frame.
"""

from __future__ import annotations

import math

import torch

STRATEGIES = ("uniform", "segment", "fps")


class FrameSampler:
    """Choose the frames of one clip.

    Args:
        strategy: ``uniform``, ``segment`` or ``fps``.
        num_frames: Frames per clip.
        fps: Target rate of ``fps`` clips (frames per second).

    Raises:
        ValueError: An unknown strategy, ``num_frames`` below 1, or ``fps`` not positive
            for the ``fps`` strategy.
    """

    def __init__(self, strategy: str = "uniform", num_frames: int = 8, fps: float = 4.0) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"frame sampling {strategy!r}: expected one of {STRATEGIES}")
        if num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {num_frames}")
        if strategy == "fps" and not fps > 0:
            raise ValueError(f"frame sampling fps must be positive, got {fps}")
        self.strategy = strategy
        self.num_frames = num_frames
        self.fps = fps

    def __call__(self, total: int, source_fps: float, train: bool) -> list[int]:
        """The frame indices of a clip from a video of ``total`` frames at ``source_fps``."""
        if total < 1:
            raise ValueError(f"cannot sample frames from a video of {total} frames")
        if self.strategy == "fps":
            return self._fixed_rate(total, source_fps, train)
        width = total / self.num_frames
        if self.strategy == "segment" and train:
            offsets = torch.rand(self.num_frames).tolist()
        else:
            offsets = [0.5] * self.num_frames
        return [min(int((i + offsets[i]) * width), total - 1) for i in range(self.num_frames)]

    def _fixed_rate(self, total: int, source_fps: float, train: bool) -> list[int]:
        step = source_fps / self.fps
        span = (self.num_frames - 1) * step  # source frames the clip covers
        slack = max(total - 1 - span, 0.0)
        start = float(torch.rand(()).item()) * slack if train else slack / 2
        return [min(int(math.floor(start + i * step)), total - 1) for i in range(self.num_frames)]
