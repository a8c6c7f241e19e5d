"""An encoder for sequences of pre-extracted feature vectors (GloVe, COVAREP, Facet...).

CMU-MOSI and CMU-MOSEI as MulT (Tsai et al., ACL 2019) and MultiBench (Liang et al., NeurIPS
2021) distribute them give each modality as a ``[T, F]`` sequence of features extracted
beforehand: 300-d GloVe word vectors for text, COVAREP acoustic descriptors for audio, Facet
facial descriptors for vision. The encoder standardises each feature (extractors differ in
scale by orders of magnitude), projects each step to the model width and runs a small
Transformer or a GRU (MultiBench's recurrent encoder) over the real steps; the pooled vector
is the mean over real steps or the last real step.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from mmexp.encoders.base import EncoderOutput, ModalityEncoder, masked_mean
from mmexp.encoders.sequence_layers import masked_batch_norm

KINDS = ("transformer", "gru")
POOLINGS = ("mean", "last")
INPUT_NORMS = ("batch", "layer", "none")


class FeatureSequenceProcessor:
    """``[T, F]`` float arrays into padded ``{"features": [B, T, F], "mask": [B, T]}``.

    Args:
        input_dim: Features per step ``F``; other widths are refused.
        max_length: Longer sequences keep their first ``max_length`` steps; ``None`` keeps all.
    """

    # Takes array samples (the array data modules check for this).
    accepts_arrays = True

    def __init__(self, input_dim: int, max_length: int | None = None) -> None:
        self.input_dim = input_dim
        self.max_length = max_length

    def __call__(self, raw: np.ndarray) -> torch.Tensor:
        """Check the width and truncate one sequence."""
        array = np.asarray(raw, dtype=np.float32)
        if array.ndim != 2 or array.shape[1] != self.input_dim:
            raise ValueError(
                f"expected a [T, {self.input_dim}] feature sequence, got shape "
                f"{list(array.shape)}; set the encoder's input_dim "
                "(data.feature_dims)"
            )
        if self.max_length is not None:
            array = array[: self.max_length]
        return torch.from_numpy(np.ascontiguousarray(array))

    def collate(self, items: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Zero-pad at the end to the longest sequence; ``mask`` marks the real steps.

        A sequence with no real step becomes one zero step, so that attention (here and in
        token-level fusion) always has a key to attend to.
        """
        lengths = [max(len(item), 1) for item in items]
        features = torch.zeros(len(items), max(lengths), self.input_dim)
        mask = torch.zeros(len(items), max(lengths), dtype=torch.bool)
        for row, (item, length) in enumerate(zip(items, lengths, strict=True)):
            features[row, : len(item)] = item
            mask[row, :length] = True
        return {"features": features, "mask": mask}


def sinusoidal_positions(length: int, width: int, device: torch.device) -> torch.Tensor:
    """``[length, width]`` sine/cosine position codes (Vaswani et al., 2017); any length."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(
        torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width)
    )
    codes = torch.zeros(length, width, device=device)
    codes[:, 0::2] = torch.sin(position * frequency)
    codes[:, 1::2] = torch.cos(position * frequency)[:, : width // 2]
    return codes


class FeatureSequenceEncoder(ModalityEncoder):
    """Feature standardisation, linear projection, then a Transformer or a GRU over real steps.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        modality: Modality it reads (``text``, ``audio``, ``vision``...).
        input_dim: Features per step of the data (``data.feature_dims.<modality>``).
        kind: ``transformer`` (pre-norm, sinusoidal positions) or ``gru``.
        width: Internal width; ``None`` = ``out_dim``.
        depth: Transformer layers or GRU layers; 0 = projection only.
        heads: Attention heads (transformer).
        dropout: Dropout inside the sequence model.
        pooling: ``mean`` over real steps or ``last`` real step.
        input_norm: ``batch``: each feature standardised with batch statistics over the real
            steps (running ones in evaluation), which keeps how features compare to each
            other; ``layer``: LayerNorm across the features of each step; ``none``.
        max_length: Steps kept per sequence; ``None`` keeps all.
    """

    def __init__(
        self,
        out_dim: int = 128,
        modality: str = "text",
        input_dim: int = 300,
        kind: str = "transformer",
        width: int | None = None,
        depth: int = 1,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "mean",
        input_norm: str = "batch",
        max_length: int | None = None,
    ) -> None:
        super().__init__(out_dim)
        if kind not in KINDS:
            raise ValueError(f"model.encoders.{modality}.kind must be one of {KINDS}, got {kind!r}")
        if pooling not in POOLINGS:
            raise ValueError(
                f"model.encoders.{modality}.pooling must be one of {POOLINGS}, got {pooling!r}"
            )
        if input_norm not in INPUT_NORMS:
            raise ValueError(
                f"model.encoders.{modality}.input_norm must be one of "
                f"{INPUT_NORMS}, got {input_norm!r}"
            )
        self.modality = modality
        self.input_dim = input_dim
        self.kind = kind
        self.pooling = pooling
        self.max_length = max_length
        width = width or out_dim
        self.norm_in = {
            "batch": nn.BatchNorm1d(input_dim),
            "layer": nn.LayerNorm(input_dim),
            "none": nn.Identity(),
        }[input_norm]
        self.embed = nn.Linear(input_dim, width)
        self.sequence: nn.Module | None = None
        if depth > 0 and kind == "transformer":
            layer = nn.TransformerEncoderLayer(
                width,
                heads,
                dim_feedforward=2 * width,
                dropout=dropout,
                batch_first=True,
                norm_first=True,
                activation="gelu",
            )
            self.sequence = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        elif depth > 0:
            self.sequence = nn.GRU(
                width,
                width,
                num_layers=depth,
                batch_first=True,
                dropout=dropout if depth > 1 else 0.0,
            )
        self.norm_out = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def processor(self, train: bool) -> FeatureSequenceProcessor:
        """Width check, truncation and padding of the feature sequences."""
        return FeatureSequenceProcessor(self.input_dim, self.max_length)

    def forward(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Encode ``{"features": [B, T, F], "mask": [B, T]}`` into ``[B, T, D]`` tokens."""
        features, mask = inputs["features"], inputs["mask"].bool()
        if isinstance(self.norm_in, nn.BatchNorm1d):
            # Statistics over real steps only: padding zeros would bias them.
            features = masked_batch_norm(self.norm_in, features, mask)
        else:
            features = self.norm_in(features)
        x = self.embed(features)
        if isinstance(self.sequence, nn.TransformerEncoder):
            x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device)
            x = self.sequence(x, src_key_padding_mask=~mask)
        elif isinstance(self.sequence, nn.GRU):
            # Packed, so that padding never enters the recurrence (as MultiBench's GRU).
            lengths = mask.sum(dim=1).clamp_min(1).cpu()
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = pad_packed_sequence(
                self.sequence(packed)[0], batch_first=True, total_length=x.shape[1]
            )
        tokens = self.proj(self.norm_out(x))
        if self.pooling == "last":
            last = (mask.sum(dim=1) - 1).clamp_min(0)
            pooled = tokens[torch.arange(len(tokens), device=tokens.device), last]
        else:
            pooled = masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
