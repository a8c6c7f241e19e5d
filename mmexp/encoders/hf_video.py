"""Hugging Face video models (VideoMAE, TimeSformer, X-CLIP) with their own preprocessing.

The model and its image processor come from a hub name or a ``save_pretrained`` folder.
The processor (:class:`HFVideoProcessor`) samples ``num_frames`` frames of each probed file
(:mod:`mmexp.data.frame_sampling`) and the model's image processor resizes, crops and
normalises the clips of a batch into ``pixel_values [B, T, 3, H, W]``.

* VideoMAE and TimeSformer: the tokens are the last hidden states (TimeSformer's first is
  its CLS token), pooled by their mean or (``pooling=cls``) the CLS token;
* X-CLIP (an ``XCLIPModel`` folder): its video embedding (``get_video_features``: frame CLS
  tokens through the multi-frame integration Transformer), one token.

These models are built for a fixed number of frames (``config.num_frames``); a sampler of
another length is refused when the encoder is built.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from mmexp.data.frame_sampling import FrameSampler
from mmexp.data.video_io import VideoFile, read_frames
from mmexp.encoders.base import EncoderOutput, project_features
from mmexp.encoders.freezing import BackboneEncoder
from mmexp.encoders.hub import hf_from_pretrained

KEY = "model.encoders.video"
POOLINGS = ("mean", "cls")


class HFVideoProcessor:
    """Sample and decode a clip's frames; the model's image processor makes the batch.

    Args:
        image_processor: The model's (``AutoImageProcessor``), called on a list of clips.
        sampler: Which frames to read.
        train: Sample as in training (random) or evaluation.
    """

    def __init__(self, image_processor: Any, sampler: FrameSampler, train: bool) -> None:
        self.image_processor = image_processor
        self.sampler = sampler
        self.train = train

    def __call__(self, video: VideoFile) -> np.ndarray:
        """The sampled frames of one file, ``[T, H, W, 3]`` uint8."""
        return read_frames(video, self.sampler(video.num_frames, video.fps, self.train))

    def collate(self, items: Sequence[np.ndarray]) -> dict[str, torch.Tensor]:
        """``{"pixel_values": [B, T, 3, H, W]}`` from the model's image processor."""
        clips = [list(frames) for frames in items]
        return dict(self.image_processor(clips, return_tensors="pt"))


class HFVideoEncoder(BackboneEncoder):
    """A pretrained video Transformer from Hugging Face.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        name_or_path: Hub name (``MCG-NJU/videomae-base``) or a ``save_pretrained`` folder
            holding the model and its image processor.
        sampler: The frame sampler; its ``num_frames`` must be the model's.
        pooling: ``mean`` of the tokens or the ``cls`` token (not for X-CLIP, whose video
            embedding is the one token).
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Layers that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.

    Raises:
        ValueError: An unknown pooling, or a sampler length the model is not built for.
    """

    modality = "video"

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Always: the weights come from ``name_or_path`` (``from_pretrained``)."""
        return True

    def __init__(
        self,
        out_dim: int = 128,
        name_or_path: str = "MCG-NJU/videomae-base",
        sampler: FrameSampler | None = None,
        pooling: str = "mean",
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        if pooling not in POOLINGS:
            raise ValueError(f"{KEY}.pooling must be one of {POOLINGS}, got {pooling!r}")
        from transformers import AutoImageProcessor, AutoModel

        key = f"{KEY}.name_or_path"
        self.name_or_path = str(name_or_path)
        self.pretrained = True
        self.pooling = pooling
        self.image_processor = hf_from_pretrained(
            AutoImageProcessor.from_pretrained, self.name_or_path, key
        )
        backbone = hf_from_pretrained(AutoModel.from_pretrained, self.name_or_path, key)
        self.video_embedding = hasattr(backbone, "get_video_features")  # X-CLIP
        config = backbone.config
        if pooling == "cls" and (self.video_embedding or config.model_type == "videomae"):
            raise ValueError(
                f"{KEY}.pooling=cls: {config.model_type} has no CLS token (VideoMAE's tokens "
                "are all patches, X-CLIP gives one video embedding); use pooling=mean"
            )
        vision = getattr(config, "vision_config", config)
        frames = int(getattr(vision, "num_frames", 0) or 0)
        self.sampler = sampler or FrameSampler("uniform", num_frames=frames or 8)
        if frames and self.sampler.num_frames != frames:
            raise ValueError(
                f"{KEY}.sampler.num_frames={self.sampler.num_frames}, but "
                f"{self.name_or_path} is built for {frames} frames (config.num_frames)"
            )
        width = int(config.projection_dim if self.video_embedding else config.hidden_size)
        if self.video_embedding:
            # X-CLIP's text side (text tower, prompt generator and its visual inputs, logit
            # scale) never takes part in get_video_features: the modules are dropped and the
            # parameters frozen, so that nothing trains without a gradient (DDP refuses that)
            for name in ("text_model", "text_projection", "prompts_generator"):
                if hasattr(backbone, name):
                    setattr(backbone, name, nn.Identity())
        self.attach_backbone(backbone, freeze, trainable_blocks, lora)
        if self.video_embedding:
            for name in ("logit_scale", "prompts_visual_projection", "prompts_visual_layernorm"):
                part = getattr(self.backbone, name, None)
                if isinstance(part, (nn.Parameter, nn.Module)):
                    part.requires_grad_(False)
        self.proj = nn.Linear(width, out_dim)

    @property
    def augment(self) -> bool:
        """Random training clips (a cached feature would fix one)."""
        return self.sampler.strategy != "uniform"

    def processor(self, train: bool) -> HFVideoProcessor:
        """Sample frames; the model's image processor prepares each batch."""
        return HFVideoProcessor(self.image_processor, self.sampler, train)

    def frozen_features(
        self, inputs: Mapping[str, torch.Tensor], tokens: bool
    ) -> dict[str, torch.Tensor]:
        """The backbone's pooled output (and its tokens, if asked), before projection."""
        pixels = inputs["pixel_values"]
        if self.video_embedding:
            output = self.backbone.get_video_features(pixel_values=pixels)
            embedding = output if isinstance(output, torch.Tensor) else output.pooler_output
            return {"pooled": embedding}
        hidden = self.backbone(pixel_values=pixels).last_hidden_state
        pooled = hidden[:, 0] if self.pooling == "cls" else hidden.mean(dim=1)
        if not tokens:
            return {"pooled": pooled}
        mask = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
        return {"pooled": pooled, "tokens": hidden, "mask": mask}

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """Project the pooled vector (and tokens) to ``model.width``."""
        return project_features(self.proj, features)
