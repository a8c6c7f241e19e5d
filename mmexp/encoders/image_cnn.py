"""A small convolutional image encoder that trains from scratch in seconds on a CPU."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.encoders.processors import ImageProcessor


def _conv_stage(in_channels: int, out_channels: int) -> nn.Sequential:
    # Two 3x3 convs then a stride-2 downsample: the VGG-style block keeps the model tiny
    # while giving each token a receptive field large enough to see a whole shape.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallConvEncoder(ModalityEncoder):
    """Conv stages then a linear projection; the final feature map is the token sequence.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        channels: Channels of each stage; each stage halves the resolution.
        image_size: Side length images are resized to.
        augment: Random translations on the training split.
    """

    modality = "image"

    def __init__(
        self,
        out_dim: int = 128,
        channels: Sequence[int] = (16, 32, 64),
        image_size: int = 32,
        augment: bool = False,
    ) -> None:
        super().__init__(out_dim)
        self.image_size = image_size
        self.augment = augment
        widths = [3, *channels]
        pairs = zip(widths[:-1], widths[1:], strict=True)
        self.stages = nn.Sequential(*(_conv_stage(a, b) for a, b in pairs))
        self.proj = nn.Linear(widths[-1], out_dim)
        reduced = image_size // 2 ** len(channels)
        self.pos_embed = nn.Parameter(torch.zeros(1, max(reduced, 1) ** 2, out_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def processor(self, train: bool) -> ImageProcessor:
        """Resize to ``image_size`` and normalise; translate when training with augment."""
        return ImageProcessor(self.image_size, augment=self.augment and train)

    def forward(self, inputs: torch.Tensor) -> EncoderOutput:
        """Encode ``[B, 3, H, W]`` images into ``[B, h*w, D]`` tokens."""
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(inputs.shape)}")
        feature_map = self.stages(inputs)
        tokens = self.proj(feature_map.flatten(2).transpose(1, 2))
        if tokens.shape[1] == self.pos_embed.shape[1]:
            # Position matters (captions name the quadrant), so tokens carry where they are.
            tokens = tokens + self.pos_embed
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))
