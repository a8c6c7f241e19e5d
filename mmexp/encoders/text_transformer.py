"""A small Transformer text encoder trained from scratch, with a byte-level tokenizer.

The tokenizer is ByT5's (Xue et al., 2022): UTF-8 bytes as tokens. It needs no vocabulary
file, so the built-in encoder works offline on any language, and it is a real Hugging Face
tokenizer with the same interface as the ones the hub text encoders use. Byte sequences are
about four times longer than word-piece ones, so, as in CANINE (Clark et al., TACL 2022), a
strided convolution first downsamples the bytes and the Transformer runs on the shorter
sequence.
"""

from __future__ import annotations

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, ModalityEncoder, masked_mean
from mmexp.encoders.processors import TextProcessor


def byte_tokenizer():  # noqa: ANN201 - transformers type, imported lazily
    """Return the ByT5 byte-level tokenizer (vocabulary of 256 bytes + 3 specials)."""
    # Imported here: transformers takes seconds to import and only text runs need it.
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


class SmallTextTransformer(ModalityEncoder):
    """Token embedding, learned positions and a pre-norm Transformer encoder.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        width: Internal model width.
        depth: Number of Transformer layers.
        heads: Attention heads per layer.
        max_length: Longest input in tokens (bytes); longer texts are truncated.
        pooling: ``"mean"`` over real tokens or ``"cls"`` (first token).
        dropout: Dropout inside the Transformer layers.
        downsample: Bytes merged into one token by the strided convolution (1 = none).
    """

    modality = "text"

    def __init__(
        self,
        out_dim: int = 128,
        width: int = 96,
        depth: int = 2,
        heads: int = 4,
        max_length: int = 96,
        pooling: str = "mean",
        dropout: float = 0.0,
        downsample: int = 4,
    ) -> None:
        super().__init__(out_dim)
        if pooling not in ("mean", "cls"):
            raise ValueError(
                f"model.encoders.text.pooling must be 'mean' or 'cls', got {pooling!r}"
            )
        self.tokenizer = byte_tokenizer()
        self.max_length = max_length
        self.pooling = pooling
        self.embed = nn.Embedding(
            len(self.tokenizer), width, padding_idx=self.tokenizer.pad_token_id
        )
        if downsample < 1:
            raise ValueError(f"model.encoders.text.downsample must be >= 1, got {downsample}")
        self.downsample = downsample
        self.merge = nn.Conv1d(width, width, downsample, stride=downsample)
        self.pos_embed = nn.Parameter(torch.zeros(1, -(-max_length // downsample), width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        layer = nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=4 * width,
            dropout=dropout,
            batch_first=True,
            norm_first=True,
            activation="gelu",
        )
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)

    def processor(self, train: bool) -> TextProcessor:
        """Byte-level tokenization, padded per batch and truncated at ``max_length``."""
        return TextProcessor(self.tokenizer, self.max_length)

    def forward(self, inputs: dict[str, torch.Tensor]) -> EncoderOutput:
        """Encode ``{"input_ids", "attention_mask"}`` into ``[B, T, D]`` tokens."""
        ids, mask = inputs["input_ids"], inputs["attention_mask"].bool()
        pad = -ids.shape[1] % self.downsample  # right-pad to a whole number of windows
        if pad:
            ids = nn.functional.pad(ids, (0, pad), value=self.tokenizer.pad_token_id)
            mask = nn.functional.pad(mask, (0, pad), value=False)
        x = self.merge(self.embed(ids).transpose(1, 2)).transpose(1, 2)
        # A merged token is real when any byte of its window is.
        mask = mask.view(mask.shape[0], -1, self.downsample).any(dim=-1)
        x = x + self.pos_embed[:, : x.shape[1]]
        x = self.encoder(x, src_key_padding_mask=~mask)
        tokens = self.proj(self.norm(x))
        pooled = tokens[:, 0] if self.pooling == "cls" else masked_mean(tokens, mask)
        return EncoderOutput(tokens=tokens, mask=mask, pooled=pooled)
