"""Single-stream token fusion: one Transformer over the tokens of all modalities."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.attention_record import CrossModalAttention, cross_modal_map, record_attention
from mmexp.fusion.base import FusionStrategy, check_heads
from mmexp.fusion.layers import transformer_encoder_layer, valid_tokens


class EarlyTokenFusion(FusionStrategy):
    """Concatenate the token sequences of all modalities and run a joint Transformer.

    The single-stream architecture of VisualBERT (Li, Yatskar, Yin, Hsieh and Chang,
    "VisualBERT: A Simple and Performant Baseline for Vision and Language", arXiv 2019) and
    UNITER (Chen et al., "UNITER: UNiversal Image-TExt Representation Learning", ECCV 2020):
    every token can attend to every token of every modality from the first layer on. A
    learned modality-type embedding (BERT's segment embedding) tells the modalities apart, a
    learned CLS token is prepended, and its final state is the fused representation.
    Positional information is expected to be in the encoders' tokens already.

    Padded tokens and all tokens of a modality a sample lacks are excluded through the key
    padding mask; the CLS token is always valid, so no attention row is empty.

    Args:
        modalities: Names of the fused modalities.
        dim: Width of every encoder output (and of the output).
        depth: Number of Transformer layers.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Feed-forward width; ``None`` means ``4 * dim``. This is the width
            :func:`mmexp.fusion.cost.match_params` scales.
        dropout: Dropout inside the Transformer layers.

    Raises:
        ValueError: ``heads`` does not divide ``dim`` or ``depth`` is not positive.
    """

    config_name = "early_tokens"

    uses_tokens = True
    gives_tokens = True

    def __init__(
        self,
        modalities: Sequence[str],
        dim: int,
        depth: int = 2,
        heads: int = 4,
        hidden_dim: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(modalities, dim)
        check_heads(type(self).__name__, dim, heads)
        if depth <= 0:
            raise ValueError(f"EarlyTokenFusion: depth must be positive, got {depth}")
        self.out_dim = dim
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.type_embedding = nn.Parameter(torch.zeros(len(self.modalities), dim))
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.type_embedding, std=0.02)
        layer = transformer_encoder_layer(dim, heads, hidden_dim or 4 * dim, dropout)
        # Nested tensors do not support pre-norm layers; disabling them avoids a warning.
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Return the ``[B, dim]`` final state of the CLS token."""
        tokens, _ = self.fuse_tokens(features)
        return tokens[:, 0]

    def fuse_tokens(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The final states of the CLS token and every modality token, normalised, and mask.

        The CLS state (position 0) is what :meth:`forward` returns; a caption decoder reads
        the whole joint sequence.
        """
        self.check_inputs(features)
        batch = features[self.modalities[0]].tokens.shape[0]
        sequences = [self.cls_token.expand(batch, -1, -1)]
        valid = [torch.ones(batch, 1, dtype=torch.bool, device=self.cls_token.device)]
        for index, name in enumerate(self.modalities):
            # Zeroing the masked positions keeps non-finite placeholders out of the layers.
            tokens, real = valid_tokens(features[name])
            sequences.append(tokens + self.type_embedding[index])
            valid.append(real)
        mask = torch.cat(valid, dim=1)
        tokens = self.encoder(torch.cat(sequences, dim=1), src_key_padding_mask=~mask)
        return self.norm(tokens), mask

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """Blocks of each layer's joint self-attention: one modality's tokens over another's.

        The rows of the query modality's tokens and the columns of the key modality's (the
        CLS token left out). Each row is the share of the token's attention that goes to the
        other modality's tokens; the rest goes to its own modality and the CLS token.
        """
        with record_attention() as records:
            self(features)
        spans, start = {}, 1  # position 0 is the CLS token
        for name in self.modalities:
            length = features[name].tokens.shape[1]
            spans[name] = slice(start, start + length)
            start += length
        valid = {name: valid_tokens(features[name])[1] for name in self.modalities}
        maps = []
        for depth, layer in enumerate(self.encoder.layers):
            weights = records.of(layer.self_attn)
            for query, key in itertools.permutations(self.modalities, 2):
                block = weights[:, :, spans[query], spans[key]]
                maps.append(cross_modal_map(query, key, depth, block, valid[query]))
        return maps
