"""A log-mel spectrogram front end and a small CNN: the built-in audio encoder.

Features are computed on the device from raw waveforms (``torch.stft`` and a Slaney mel
filter bank from ``transformers.audio_utils``), so the loaders only move samples and the
spectrogram settings live with the model that depends on them.
"""

from __future__ import annotations

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, ModalityEncoder, lengths_mask, masked_mean
from mmexp.encoders.processors import WaveformProcessor


class LogMelSpectrogram(nn.Module):
    """Waveform ``[B, N]`` to log-mel features ``[B, n_mels, frames]``.

    Args:
        sample_rate: Sampling rate of the input, in Hz.
        n_fft: FFT size.
        hop_length: Hop between frames, in samples.
        n_mels: Number of mel bands.
        pad_mode: How ``torch.stft`` pads the ends for centred frames: ``reflect``, or
            ``constant`` (zeros, what follows a clip's end in a zero-padded batch; with it
            and the waveform zeroed past its length, a clip's frames do not depend on the
            padding of its batch).
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        pad_mode: str = "reflect",
    ) -> None:
        super().__init__()
        from transformers.audio_utils import mel_filter_bank

        self.n_fft = n_fft
        self.hop_length = hop_length
        self.pad_mode = pad_mode
        filters = mel_filter_bank(
            num_frequency_bins=n_fft // 2 + 1,
            num_mel_filters=n_mels,
            min_frequency=0.0,
            max_frequency=sample_rate / 2,
            sampling_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("filters", torch.as_tensor(filters, dtype=torch.float32), False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, lengths: torch.Tensor) -> torch.Tensor:
        """Frames produced for waveforms of the given lengths (``center=True`` framing)."""
        return lengths // self.hop_length + 1

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """Compute ``log(mel power + 1e-6)``."""
        spec = torch.stft(
            waveform.float(),
            self.n_fft,
            self.hop_length,
            window=self.window,
            return_complex=True,
            center=True,
            pad_mode=self.pad_mode,
        )
        mel = torch.einsum("bft,fm->bmt", spec.abs().pow(2), self.filters)
        return torch.log(mel + 1e-6)


class LogMelCNNEncoder(ModalityEncoder):
    """Log-mel features, a 2-D CNN over (mel, time), frequency pooling: time steps as tokens.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        sample_rate: Expected sampling rate of the audio files, in Hz.
        max_seconds: Clips are cropped to this duration.
        n_fft: FFT size of the spectrogram.
        hop_length: Hop between spectrogram frames, in samples.
        n_mels: Number of mel bands.
        channels: Channels of the two stride-2 conv stages.
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
        channels: tuple[int, int] = (32, 64),
    ) -> None:
        super().__init__(out_dim)
        self.sample_rate = sample_rate
        self.max_seconds = max_seconds
        self.features = LogMelSpectrogram(sample_rate, n_fft, hop_length, n_mels)
        self.input_norm = nn.BatchNorm2d(1)
        c1, c2 = channels
        self.cnn = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
        )
        self.proj = nn.Linear(c2, out_dim)

    def processor(self, train: bool) -> WaveformProcessor:
        """Crop and pad raw waveforms; features are computed in :meth:`forward`."""
        return WaveformProcessor(self.sample_rate, self.max_seconds)

    def forward(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Encode ``{"waveform": [B, N], "lengths": [B]}`` into time tokens ``[B, T, D]``."""
        waveform, lengths = inputs["waveform"], inputs["lengths"]
        logmel = self.input_norm(self.features(waveform).unsqueeze(1))
        feature_map = self.cnn(logmel)  # [B, C, mels/4, frames/4]
        tokens = self.proj(feature_map.mean(dim=2).transpose(1, 2))
        frames = self.features.num_frames(lengths)
        for _ in range(2):  # each stride-2 conv with padding 1 maps n frames to ceil(n / 2)
            frames = (frames + 1) // 2
        mask = lengths_mask(frames.to(tokens.device), tokens.shape[1])
        return EncoderOutput(tokens=tokens, mask=mask, pooled=masked_mean(tokens, mask))
