"""A LeNet for one-channel arrays (digits, spectrograms) trained from scratch.

The network is the LeNet of CentralNet (Vielzeuf et al., 2018) that MultiBench (Liang et
al., NeurIPS 2021) uses on AV-MNIST: a 5x5 convolution then ``additional_layers`` 3x3 ones,
each doubling the channels, with batch norm, ReLU and 2x2 max pooling after every one. With
6 channels, 3 extra layers take a 28x28 digit to 48 features and 5 take a 112x112
spectrogram to 192 (the 240 features MultiBench's late-fusion head reads). The arrays come
from an array data set (see :mod:`mmexp.data.array_datamodule`), already scaled.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, ModalityEncoder


class ArrayImageProcessor:
    """One ``[H, W]`` (or flattened) float array into a ``[1, H, W]`` tensor.

    Args:
        size: ``(H, W)`` the encoder is built for; other shapes are refused.
    """

    # Takes array samples (the array data modules check for this).
    accepts_arrays = True

    def __init__(self, size: Sequence[int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """Check the shape and add the channel axis."""
        array = np.asarray(raw, dtype=np.float32)
        height, width = self.size
        if array.size == height * width:  # flattened or with a channel axis already
            array = array.reshape(height, width)
        else:
            raise ValueError(
                f"expected a {height}x{width} array, got shape {list(array.shape)}; "
                "set the encoder's input_size"
            )
        return torch.from_numpy(np.ascontiguousarray(array)).unsqueeze(0)

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack into ``[B, 1, H, W]``."""
        return torch.stack(list(items))


def _block(in_channels: int, out_channels: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class LeNetEncoder(ModalityEncoder):
    """LeNet over one-channel arrays; the cells of the last feature map are the tokens.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        modality: Modality it reads (``image`` for digits, ``audio`` for spectrograms).
        input_size: ``(H, W)`` of the arrays.
        channels: Channels of the first convolution; each further layer doubles them.
        additional_layers: 3x3 layers after the first 5x5 one; each halves the resolution.

    Raises:
        ValueError: The layers would pool the input below one cell.
    """

    def __init__(
        self,
        out_dim: int = 128,
        modality: str = "image",
        input_size: Sequence[int] = (28, 28),
        channels: int = 6,
        additional_layers: int = 3,
    ) -> None:
        super().__init__(out_dim)
        self.modality = modality
        self.input_size = (int(input_size[0]), int(input_size[1]))
        cells = [side // 2 ** (additional_layers + 1) for side in self.input_size]
        if min(cells) < 1:
            raise ValueError(
                f"model.encoders.{modality}: {additional_layers + 1} pooling layers "
                f"reduce a {self.input_size} input below one cell; use fewer "
                "additional_layers"
            )
        widths = [channels * 2**i for i in range(additional_layers + 1)]
        blocks = [_block(1, widths[0], 5)]
        blocks += [_block(a, b, 3) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        self.stages = nn.Sequential(*blocks)
        self.proj = nn.Linear(widths[-1], out_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, cells[0] * cells[1], out_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def processor(self, train: bool) -> ArrayImageProcessor:
        """Arrays of ``input_size`` to ``[1, H, W]`` tensors (no augmentation)."""
        return ArrayImageProcessor(self.input_size)

    def forward(self, inputs: torch.Tensor) -> EncoderOutput:
        """Encode ``[B, 1, H, W]`` arrays into ``[B, h*w, D]`` tokens."""
        if inputs.ndim != 4 or inputs.shape[1] != 1:
            raise ValueError(f"expected arrays of shape [B, 1, H, W], got {tuple(inputs.shape)}")
        tokens = self.proj(self.stages(inputs).flatten(2).transpose(1, 2))
        if tokens.shape[1] == self.pos_embed.shape[1]:
            tokens = tokens + self.pos_embed  # where a cell is matters once there are several
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=tokens.mean(dim=1))
