"""The contract every caption decoder follows: teacher forcing, generation, text.

A decoder generates text conditioned on a *memory*: a sequence of vectors with a padding mask
(the encoders' tokens, the fused tokens of a token-level strategy, or a fused vector as a
one-token sequence). The captioning module (:mod:`mmexp.lit.captioner`) builds the memory and
scores the generations; a decoder only maps ``(target ids, memory) -> next-token logits`` and
``memory -> generated ids``, so built-in and Hugging Face decoders are interchangeable.

Targets are tokenized by the decoder's own :meth:`CaptionDecoder.target_processor` in the
data loaders: ``[bos] tokens [eos]`` truncated to ``max_length`` tokens, position ``t``
predicting position ``t + 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mmexp.utils.freezing import KeepsFrozenInEval


@dataclass
class Memory:
    """What a decoder is conditioned on, for a batch.

    Attributes:
        tokens: ``[B, S, D]`` vectors (``D`` is the decoder's ``memory_dim``).
        mask: ``[B, S]`` boolean, ``True`` where the vector is real.
    """

    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self) -> None:
        if self.tokens.dim() != 3 or self.mask.shape != self.tokens.shape[:2]:
            raise ValueError(
                f"memory tokens {tuple(self.tokens.shape)} and mask {tuple(self.mask.shape)} "
                "must be [B, S, D] and [B, S]"
            )

    def repeat_interleave(self, times: int) -> Memory:
        """Each sample's memory ``times`` times in a row (one per beam)."""
        return Memory(
            self.tokens.repeat_interleave(times, dim=0), self.mask.repeat_interleave(times, dim=0)
        )


@dataclass(frozen=True)
class DecodingOptions:
    """How captions are generated.

    Attributes:
        strategy: ``greedy``, ``beam`` or ``nucleus`` (top-p sampling).
        max_new_tokens: Tokens generated at most after ``bos``, the end token included.
        num_beams: Beams of beam search.
        length_penalty: Beam scores are ``log p / length ** length_penalty`` (as in
            transformers' ``generate``); 0 ranks finished beams by log-probability alone.
        top_p: Smallest set of tokens whose probability sums to at least ``top_p`` (nucleus).
        temperature: Logits are divided by it before sampling.
        seed: Seed of nucleus sampling, so that a decoding is reproducible.
    """

    strategy: str = "beam"
    max_new_tokens: int = 30
    num_beams: int = 3
    length_penalty: float = 1.0
    top_p: float = 0.9
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in ("greedy", "beam", "nucleus"):
            raise ValueError(
                f"decoding.strategy must be greedy, beam or nucleus, got {self.strategy!r}"
            )
        if self.max_new_tokens < 1 or self.num_beams < 1:
            raise ValueError(
                "decoding.max_new_tokens and decoding.num_beams must be at least 1, got "
                f"{self.max_new_tokens} and {self.num_beams}"
            )
        if not 0 < self.top_p <= 1 or self.temperature <= 0:
            raise ValueError(
                f"decoding.top_p must be in (0, 1] and decoding.temperature positive, got "
                f"{self.top_p} and {self.temperature}"
            )


@dataclass(frozen=True)
class SpecialIds:
    """The ids decoding starts with, stops at and pads with."""

    bos: int
    eos: int
    pad: int


class CaptionDecoder(KeepsFrozenInEval):
    """Base class of the decoders: a tokenizer, a memory width and a length limit.

    Attributes:
        tokenizer: The Hugging Face tokenizer of the targets, with pad, bos and eos ids
            (:func:`mmexp.decoders.tokenizers.checked_special_tokens` sets or refuses them).
        memory_dim: Width of the memory vectors it reads.
        max_length: Longest target in tokens, ``bos`` and ``eos`` included; longer targets
            are truncated (and counted by the target processor).
        pretrained: Whether its weights come from a pretrained model (finetuning protocols
            apply to it as to a pretrained tower).
    """

    pretrained: bool = False

    def __init__(self, memory_dim: int, max_length: int) -> None:
        super().__init__()
        if max_length < 3:
            raise ValueError(f"decoder max_length must be at least 3 tokens, got {max_length}")
        self.memory_dim = memory_dim
        self.max_length = max_length

    @property
    def pad_id(self) -> int:
        """Padding token id (ignored by the loss)."""
        return int(self.tokenizer.pad_token_id)

    @property
    def bos_id(self) -> int:
        """Token every target and generation starts with."""
        return int(self.tokenizer.bos_token_id)

    @property
    def eos_id(self) -> int:
        """Token that ends a caption."""
        return int(self.tokenizer.eos_token_id)

    @property
    def special_ids(self) -> SpecialIds:
        """bos, eos and pad ids together (what the decoding strategies need)."""
        return SpecialIds(bos=self.bos_id, eos=self.eos_id, pad=self.pad_id)

    def set_trainability(self, trainability: Any) -> None:
        """Apply a :class:`~mmexp.encoders.freezing.Trainability` (finetuning protocols).

        By default to the whole decoder; decoders with new layers around a pretrained model
        keep those training.
        """
        trainability.apply(self)
        self.train(self.training)

    def target_processor(self):  # noqa: ANN201 - CaptionTargetProcessor, defined beside it
        """The data loaders' tokenization of target captions."""
        from mmexp.decoders.tokenizers import CaptionTargetProcessor

        return CaptionTargetProcessor(self.tokenizer, self.max_length)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> torch.Tensor:
        """Next-token logits ``[B, L, V]`` of targets ``[B, L]`` (teacher forcing)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def generate(self, memory: Memory, options: DecodingOptions) -> torch.Tensor:
        """Generated ids ``[B, L]`` after ``bos``, each row ending at its first ``eos``.

        Positions after a row's ``eos`` (or all of them, when it reached the limit without
        one) are ``pad_id``.
        """
        raise NotImplementedError  # pragma: no cover - abstract

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The text of each row of generated ids, special tokens removed."""
        rows: Sequence[list[int]] = ids.tolist()
        texts = []
        for row in rows:
            # Cut at the first eos before dropping padding: GPT-2 style tokenizers pad with
            # their end token.
            if row and row[0] == self.bos_id:
                row = row[1:]
            if self.eos_id in row:
                row = row[: row.index(self.eos_id)]
            texts.append([t for t in row if t != self.pad_id])
        return [
            text.strip() for text in self.tokenizer.batch_decode(texts, skip_special_tokens=True)
        ]
