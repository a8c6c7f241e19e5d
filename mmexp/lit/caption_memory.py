"""What a caption decoder is conditioned on: encoder tokens, pooled vectors or fused output.

The conditioning is the captioning axis that meets the fusion ablation:

* ``tokens``: the token sequences of every conditioning modality, concatenated, each with
  a learned modality embedding (the decoder cross-attends to all of them: Show, Attend and
  Tell; the encoder-decoder captioners of ``VisionEncoderDecoderModel``);
* ``pooled``: one vector per modality (ClipCap's prefix reads the CLIP image embedding);
* ``fused``: the output vector of any feature-level fusion strategy, as a one-vector memory,
  so every ``fusion=`` row of the ablation matrix can condition a decoder;
* ``fused_tokens``: the output sequence of a token-level strategy
  (:meth:`~mmexp.fusion.base.FusionStrategy.fuse_tokens`: the joint Transformer of
  ``early_tokens``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from mmexp.decoders.base import Memory
from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy

CONDITIONINGS = ("tokens", "pooled", "fused", "fused_tokens")
#: Conditionings that go through the fusion strategy.
FUSED = ("fused", "fused_tokens")


def check_conditioning(conditioning: str, fusion: FusionStrategy | None) -> None:
    """Refuse a conditioning that the built parts cannot give.

    Raises:
        ValueError: An unknown conditioning, a fused one without a fusion strategy (or one
            that outputs class logits), or ``fused_tokens`` with a strategy that keeps no
            token sequence.
    """
    if conditioning not in CONDITIONINGS:
        raise ValueError(
            f"objective.conditioning must be one of {list(CONDITIONINGS)}, got {conditioning!r}"
        )
    if conditioning not in FUSED:
        if fusion is not None:
            raise ValueError(
                f"objective.conditioning={conditioning} reads the encoders directly: a fusion "
                "strategy would not be used (objective.uses_fusion must be false)"
            )
        return
    if fusion is None:
        raise ValueError(
            f"objective.conditioning={conditioning} needs a fusion strategy: set "
            "objective.uses_fusion=true"
        )
    if fusion.produces_logits:
        raise ValueError(
            f"objective.conditioning={conditioning}: {type(fusion).__name__} outputs class "
            "logits, which cannot condition a decoder; choose a feature-level strategy"
        )
    if conditioning == "fused_tokens" and not fusion.gives_tokens:
        raise ValueError(
            f"objective.conditioning=fused_tokens: {type(fusion).__name__} keeps no fused "
            "token sequence; use fusion=early_tokens, or conditioning=fused for its vector"
        )


def memory_dim(conditioning: str, width: int, fusion: FusionStrategy | None) -> int:
    """Width of the memory vectors: the encoders' width, or the fusion's output width."""
    if conditioning == "fused" and fusion is not None:
        return int(fusion.out_dim)
    return width


class CaptionMemory(nn.Module):
    """Build a decoder's :class:`~mmexp.decoders.base.Memory` from encoder outputs.

    Args:
        conditioning: One of :data:`CONDITIONINGS`.
        modalities: The conditioning modalities, in a fixed order.
        width: Width of the encoder outputs.
        fusion: The fusion strategy of the fused conditionings, else ``None``.
    """

    def __init__(
        self,
        conditioning: str,
        modalities: Sequence[str],
        width: int,
        fusion: FusionStrategy | None = None,
    ) -> None:
        super().__init__()
        check_conditioning(conditioning, fusion)
        self.conditioning = conditioning
        self.modalities = tuple(modalities)
        self.fusion = fusion
        # Tells the modalities apart in a concatenated memory (BERT's segment embedding);
        # with one modality it is a constant offset the decoder's projection absorbs.
        self.modality_embedding = (
            nn.Parameter(torch.zeros(len(self.modalities), width))
            if conditioning in ("tokens", "pooled")
            else None
        )
        if self.modality_embedding is not None:
            nn.init.trunc_normal_(self.modality_embedding, std=0.02)

    @property
    def reads_tokens(self) -> bool:
        """Whether the memory reads the encoders' token sequences."""
        if self.fusion is not None:
            return self.conditioning == "fused_tokens" or self.fusion.uses_tokens
        return self.conditioning == "tokens"

    def forward(self, features: Mapping[str, EncoderOutput]) -> Memory:
        """The memory of a batch."""
        if self.fusion is not None:
            if self.conditioning == "fused_tokens":
                tokens, mask = self.fusion.fuse_tokens(features)
                return Memory(tokens, mask)
            fused = self.fusion(features)
            mask = torch.ones(fused.shape[0], 1, dtype=torch.bool, device=fused.device)
            return Memory(fused.unsqueeze(1), mask)
        assert self.modality_embedding is not None
        parts, masks = [], []
        for index, name in enumerate(self.modalities):
            output = features[name]
            if self.conditioning == "tokens":
                parts.append(output.tokens + self.modality_embedding[index])
                masks.append(output.mask.bool())
            else:
                parts.append((output.pooled + self.modality_embedding[index]).unsqueeze(1))
                masks.append(torch.ones_like(output.pooled[:, :1], dtype=torch.bool))
        return Memory(torch.cat(parts, dim=1), torch.cat(masks, dim=1))
