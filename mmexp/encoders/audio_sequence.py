"""Audio encoders over log-mel frames in time: a packed (bi)LSTM and a 1-D CNN.

They share the built-in CNN's preprocessing (:mod:`mmexp.encoders.audio_logmel`): the same
:class:`~mmexp.encoders.processors.WaveformProcessor` (crop, zero-pad, true lengths) and the
same log-mel spectrogram computed on the device, with the same settings. Two things differ,
both so that a clip's features do not depend on the padding of its batch:

* the waveform is zeroed past each clip's length and the spectrogram pads its ends with
  zeros (``pad_mode=constant``; the CNN reflects), so a clip's last frames see zeros whether
  it is alone or followed by padding;
* each mel band is batch-normalised over the real frames only (:func:`masked_batch_norm`;
  the CNN normalises all bins together, padding included), which keeps loudness, a label
  attribute of shapes, unlike a per-clip normalisation.

The frames ``[B, T, n_mels]`` are then a sequence: the LSTM reads them packed, the CNN
convolves over time with the mask downsampled as its strides downsample the frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from mmexp.encoders.audio_logmel import LogMelSpectrogram
from mmexp.encoders.base import EncoderOutput, ModalityEncoder, lengths_mask, masked_mean
from mmexp.encoders.processors import WaveformProcessor
from mmexp.encoders.sequence_layers import (
    PackedRecurrence,
    check_pooling,
    check_positive,
    masked_batch_norm,
)

KEY = "model.encoders.audio"


class LogMelFrames(nn.Module):
    """Waveforms ``[B, N]`` with lengths to normalised log-mel frames ``[B, T, n_mels]``.

    Args:
        sample_rate: Sampling rate of the input, in Hz.
        n_fft: FFT size.
        hop_length: Hop between frames, in samples.
        n_mels: Number of mel bands.
    """

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> None:
        super().__init__()
        for name, value in (("n_fft", n_fft), ("hop_length", hop_length), ("n_mels", n_mels)):
            check_positive(f"{KEY}.{name}", value)
        self.spectrogram = LogMelSpectrogram(
            sample_rate, n_fft, hop_length, n_mels, pad_mode="constant"
        )
        self.norm = nn.BatchNorm1d(n_mels)

    def forward(
        self, waveform: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames and their mask ``[B, T]`` (``True`` for the frames of the real samples)."""
        lengths = lengths.to(waveform.device)
        waveform = waveform * lengths_mask(lengths, waveform.shape[1]).to(waveform.dtype)
        logmel = self.spectrogram(waveform).transpose(1, 2)  # [B, T, n_mels]
        mask = lengths_mask(self.spectrogram.num_frames(lengths), logmel.shape[1])
        return masked_batch_norm(self.norm, logmel, mask), mask


class RecurrentAudioEncoder(ModalityEncoder):
    """Log-mel frames, a packed recurrence over time and a linear projection to ``out_dim``.

    Tokens are the per-frame outputs (both directions) projected to the width; the pooled
    vector is their mean over real frames or the same projection of the last layer's final
    hidden states (forward after the last real frame, backward after the first), as for the
    recurrent text encoders (:mod:`mmexp.encoders.text_recurrent`, which says why the mean
    is the default). Subclasses choose the cell.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        sample_rate: Expected sampling rate of the audio files, in Hz.
        max_seconds: Clips are cropped to this duration.
        n_fft: FFT size of the spectrogram.
        hop_length: Hop between spectrogram frames, in samples.
        n_mels: Number of mel bands.
        hidden_size: Hidden units per direction.
        num_layers: Stacked recurrent layers.
        bidirectional: Also read the clip backwards.
        dropout: Dropout on every recurrent layer's outputs.
        pooling: ``mean`` of the tokens over real frames, or the projected ``final`` hidden
            states of both directions.
    """

    modality = "audio"
    cell: ClassVar[type[nn.LSTM] | type[nn.GRU]]

    def __init__(
        self,
        out_dim: int = 128,
        sample_rate: int = 8000,
        max_seconds: float = 1.0,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        hidden_size: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        pooling: str = "mean",
    ) -> None:
        super().__init__(out_dim)
        check_pooling(f"{KEY}.pooling", pooling)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.pooling = pooling
        self.frames = LogMelFrames(sample_rate, n_fft, hop_length, n_mels)
        self.recurrence = PackedRecurrence(
            self.cell, n_mels, hidden_size, num_layers, bidirectional, dropout, key=KEY
        )
        self.proj = nn.Linear(self.recurrence.out_features, out_dim)

    def processor(self, train: bool) -> WaveformProcessor:
        """Crop and pad raw waveforms; features are computed in :meth:`forward`."""
        return WaveformProcessor(self.sample_rate, self.max_seconds)

    def forward(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Encode ``{"waveform": [B, N], "lengths": [B]}`` into frame tokens ``[B, T, D]``."""
        frames, mask = self.frames(inputs["waveform"], inputs["lengths"])
        outputs, final = self.recurrence(frames, mask)
        tokens = self.proj(outputs)
        pooled = masked_mean(tokens, mask) if self.pooling == "mean" else self.proj(final)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)


class LogMelLSTMEncoder(RecurrentAudioEncoder):
    """:class:`RecurrentAudioEncoder` with LSTM cells."""

    cell = nn.LSTM


class TimeConvStage(nn.Module):
    """A strided 1-D convolution over time, batch norm over the real steps and a ReLU.

    Args:
        in_channels: Channels of the input steps.
        out_channels: Channels of the output steps.
        kernel_size: Steps the convolution sees (``padding = kernel_size // 2``).
        stride: Time downsampling.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, kernel_size // 2
        self.conv = nn.Conv1d(
            in_channels, out_channels, kernel_size, stride=stride, padding=self.padding, bias=False
        )
        self.norm = nn.BatchNorm1d(out_channels)

    def downsampled(self, lengths: torch.Tensor) -> torch.Tensor:
        """Real steps after the stage for ``lengths`` real steps before it."""
        return (lengths + 2 * self.padding - self.kernel_size) // self.stride + 1

    def forward(
        self, x: torch.Tensor, lengths: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``[B, T, C]`` steps, zero past ``lengths``, to the next steps, lengths and mask."""
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)
        lengths = self.downsampled(lengths)
        mask = lengths_mask(lengths, x.shape[1])
        # masked_batch_norm zeroes the padded steps, and ReLU keeps them zero.
        return torch.relu(masked_batch_norm(self.norm, x, mask)), lengths, mask


class LogMelConv1dEncoder(ModalityEncoder):
    """Log-mel frames, strided 1-D convolutions over time (mel bands as channels).

    Each stage (:class:`TimeConvStage`) is a convolution (``padding = kernel_size // 2``),
    batch norm over the real steps and a ReLU. Padded steps are zero before every
    convolution, as the convolution's own padding is, so a real step near a clip's end sees
    the same zeros alone or in a padded batch. Each stage maps ``n`` real steps to
    ``(n + 2 * padding - kernel_size) // stride + 1``, the steps of the tokens' mask. Tokens
    are the last stage's steps projected to the width; the pooled vector is their mean over
    real steps.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        sample_rate: Expected sampling rate of the audio files, in Hz.
        max_seconds: Clips are cropped to this duration.
        n_fft: FFT size of the spectrogram.
        hop_length: Hop between spectrogram frames, in samples.
        n_mels: Number of mel bands.
        channels: Output channels of each stage.
        kernel_size: Frames each convolution sees.
        stride: Time downsampling of each stage.
    """

    modality = "audio"

    def __init__(
        self,
        out_dim: int = 128,
        sample_rate: int = 8000,
        max_seconds: float = 1.0,
        n_fft: int = 256,
        hop_length: int = 80,
        n_mels: int = 40,
        channels: Sequence[int] = (64, 128),
        kernel_size: int = 5,
        stride: int = 2,
    ) -> None:
        super().__init__(out_dim)
        channels = list(channels)
        if not channels:
            raise ValueError(f"{KEY}.channels must list at least one stage, got []")
        for index, width in enumerate(channels):
            check_positive(f"{KEY}.channels[{index}]", width)
        check_positive(f"{KEY}.kernel_size", kernel_size)
        check_positive(f"{KEY}.stride", stride)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.frames = LogMelFrames(sample_rate, n_fft, hop_length, n_mels)
        widths = [n_mels, *channels]
        # "stages": where finetune=partial (freeze=last_n) looks for an encoder's blocks.
        self.stages = nn.ModuleList(
            TimeConvStage(a, b, kernel_size, stride)
            for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.proj = nn.Linear(widths[-1], out_dim)

    def processor(self, train: bool) -> WaveformProcessor:
        """Crop and pad raw waveforms; features are computed in :meth:`forward`."""
        return WaveformProcessor(self.sample_rate, self.max_seconds)

    def forward(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Encode ``{"waveform": [B, N], "lengths": [B]}`` into time tokens ``[B, T', D]``."""
        x, mask = self.frames(inputs["waveform"], inputs["lengths"])  # zero at padded frames
        lengths = mask.sum(dim=1)
        for stage in self.stages:
            x, lengths, mask = stage(x, lengths)
        tokens = self.proj(x)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))
