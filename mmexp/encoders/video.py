"""Video as a sequence of frames: any image encoder per frame, then temporal pooling.

:class:`FrameVideoEncoder` runs an image encoder (the small CNN, any timm model, an
open_clip or Hugging Face CLIP tower) on every sampled frame and pools the per-frame
vectors over time: their mean (TSN's average consensus), or a temporal Transformer over
them with learned frame-position embeddings (as in TimeSformer's and ViViT's factorised
"late temporal" variants). The frames are the tokens; the pooled vector is their mean.

Its processor (:class:`VideoProcessor`) samples the frames of a probed video file
(:mod:`mmexp.data.frame_sampling`), decodes only those and applies the image encoder's
own preprocessing to each, so a frame is prepared exactly as that image tower expects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import get_class
from PIL import Image
from torch import nn

from mmexp.data.frame_sampling import FrameSampler
from mmexp.data.video_io import VideoFile, read_frames
from mmexp.encoders.base import EncoderOutput, ModalityEncoder, output_from
from mmexp.encoders.processors import ModalityProcessor

TEMPORAL = ("mean", "transformer")


class VideoProcessor:
    """Sample, decode and preprocess the frames of one video: ``[T, 3, H, W]``.

    Args:
        sampler: Which frames to read.
        frame_processor: The image encoder's processor, applied to each frame.
        train: Sample as in training (random) or evaluation (deterministic).
    """

    def __init__(
        self, sampler: FrameSampler, frame_processor: ModalityProcessor, train: bool
    ) -> None:
        self.sampler = sampler
        self.frame_processor = frame_processor
        self.train = train

    def __call__(self, video: VideoFile) -> torch.Tensor:
        """The clip of one probed video file.

        A random training transform (crop, flip, shift) is drawn once per clip: every frame
        is prepared from the same generator state, so the frames move together and the
        motion between them is the video's, not the augmentation's.
        """
        indices = self.sampler(video.num_frames, video.fps, self.train)
        frames = read_frames(video, indices)
        state = torch.random.get_rng_state()
        prepared = []
        for frame in frames:
            torch.random.set_rng_state(state)
            prepared.append(self.frame_processor(Image.fromarray(frame)))
        return torch.stack(prepared)

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack clips of equal length: ``[B, T, 3, H, W]``."""
        return torch.stack(list(items))


class FrameVideoEncoder(ModalityEncoder):
    """An image encoder on each frame, pooled over time.

    Args:
        out_dim: Width of the tokens and pooled vector (the frame encoder's too).
        frame_encoder: ``(out_dim=...) -> image encoder``: a partial of any image encoder
            (``_partial_: true`` in its config).
        sampler: The frame sampler of the processor.
        temporal: ``mean`` of the frame vectors, or a ``transformer`` over them.
        depth: Temporal Transformer layers.
        heads: Its attention heads.
        dropout: Its dropout.

    Raises:
        ValueError: An unknown ``temporal``, or a frame encoder that is not for images.
    """

    modality = "video"

    def __init__(
        self,
        out_dim: int,
        frame_encoder: Callable[..., ModalityEncoder],
        sampler: FrameSampler,
        temporal: str = "mean",
        depth: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(out_dim)
        if temporal not in TEMPORAL:
            raise ValueError(f"video temporal={temporal!r}: expected one of {TEMPORAL}")
        self.frames = frame_encoder(out_dim=out_dim)
        if self.frames.modality != "image":
            raise ValueError(
                f"video frame_encoder built a {self.frames.modality or 'modality-less'} "
                f"encoder ({type(self.frames).__name__}); it must encode images"
            )
        self.pretrained = self.frames.pretrained
        self.sampler = sampler
        self.temporal = temporal
        self.position = nn.Parameter(torch.zeros(1, sampler.num_frames, out_dim))
        self.mixer: nn.Module | None = None
        if temporal == "transformer":
            nn.init.trunc_normal_(self.position, std=0.02)
            layer = nn.TransformerEncoderLayer(
                out_dim, heads, 4 * out_dim, dropout, batch_first=True, norm_first=True
            )
            self.mixer = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        else:
            self.position.requires_grad_(False)

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Whether the frame encoder, from its own options, loads pretrained weights."""
        frame = dict(options["frame_encoder"])
        return get_class(frame["_target_"]).loads_pretrained(frame)

    @classmethod
    def without_pretrained_weights(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The options with the frame encoder's weights not fetched."""
        frame = dict(options["frame_encoder"])
        changed = get_class(frame["_target_"]).without_pretrained_weights(frame)
        return {**options, "frame_encoder": changed}

    @property
    def augment(self) -> bool:
        """Training clips are random unless every frame is read at fixed places."""
        return self.sampler.strategy != "uniform" or bool(getattr(self.frames, "augment", False))

    def processor(self, train: bool) -> VideoProcessor:
        """Sample frames with :attr:`sampler`; prepare each as the frame encoder does."""
        return VideoProcessor(self.sampler, self.frames.processor(train), train)

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Delegated to the frame encoder."""
        return self.frames.set_grad_checkpointing(enable)

    def frozen_part(self) -> nn.Module:
        """The frame encoder's frozen part: what a feature cache stores, per frame."""
        return self.frames.frozen_part()

    def frozen_features(self, inputs: torch.Tensor, tokens: bool) -> dict[str, torch.Tensor]:
        """The frozen part's pooled output of every frame, ``frames: [B, T, E]``.

        Frames are decoded and encoded once; the frame encoder's trainable part (its
        projection) and the temporal pooling run on them at every step.
        """
        if inputs.ndim != 5:
            raise ValueError(f"expected clips of shape [B, T, 3, H, W], got {tuple(inputs.shape)}")
        batch, steps = inputs.shape[:2]
        if steps != self.position.shape[1]:
            raise ValueError(
                f"clips of {steps} frames, but the encoder was built for "
                f"{self.position.shape[1]} (sampler num_frames)"
            )
        frames = self.frames.frozen_features(inputs.flatten(0, 1), tokens=False)["pooled"]
        return {"frames": frames.view(batch, steps, *frames.shape[1:])}

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """The frame encoder's own finish on each frame, then the temporal pooling."""
        cached = features["frames"]
        batch, steps = cached.shape[:2]
        per_frame = self.frames.from_frozen_features({"pooled": cached.flatten(0, 1)})
        frames = per_frame.pooled.view(batch, steps, -1)
        if self.mixer is not None:
            frames = self.mixer(frames + self.position)
        mask = torch.ones(batch, steps, dtype=torch.bool, device=frames.device)
        return output_from(frames.mean(dim=1), frames, mask)

    def forward(self, clips: torch.Tensor) -> EncoderOutput:
        """Encode ``[B, T, 3, H, W]`` clips into ``[B, T, D]`` frame tokens.

        The same two steps a feature cache splits: the frame encoder's frozen part on every
        frame, then the rest.
        """
        return self.from_frozen_features(self.frozen_features(clips, tokens=True))
