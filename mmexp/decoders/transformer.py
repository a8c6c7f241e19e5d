"""The built-in caption decoder: a small pre-norm Transformer with cross-attention.

GPT-2's layout (pre-norm blocks, learned positions, output projection tied to the token
embedding) with a cross-attention sub-layer over the memory in each block, as in the
original Transformer decoder (Vaswani et al. 2017). It trains from scratch, so it fits runs
that cannot load a pretrained language model; generation caches keys and values.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.decoders.base import CaptionDecoder, DecodingOptions, Memory
from mmexp.decoders.decoding import StepFunction, decode_memory
from mmexp.decoders.layers import DecoderBlock, DecoderCache, LayerCache, memory_attention_mask
from mmexp.decoders.tokenizers import bundled_minilm_tokenizer, checked_special_tokens

KEY = "model.decoder"


class TransformerCaptionDecoder(CaptionDecoder):
    """Token embedding, learned positions, ``depth`` decoder blocks, tied output projection.

    Args:
        memory_dim: Width of the memory vectors (projected to ``width`` if different).
        tokenizer: Tokenizer of the targets; its vocabulary sizes the embedding. ``None``:
            BERT's word pieces (:func:`mmexp.decoders.tokenizers.bundled_minilm_tokenizer`).
        width: Model width.
        depth: Decoder blocks.
        heads: Attention heads.
        mlp_ratio: MLP hidden width over ``width``.
        dropout: Dropout on attention weights, residual branches and embeddings.
        max_length: Longest target, bos and eos included (size of the position table).
    """

    def __init__(
        self,
        memory_dim: int,
        tokenizer: Any = None,
        width: int = 256,
        depth: int = 3,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.1,
        max_length: int = 32,
    ) -> None:
        super().__init__(memory_dim, max_length)
        if depth < 1:
            raise ValueError(f"{KEY}.depth must be at least 1, got {depth}")
        if tokenizer is None:
            tokenizer = bundled_minilm_tokenizer()
        self.tokenizer = checked_special_tokens(tokenizer, KEY)
        self.vocab_size = len(tokenizer)
        self.embed = nn.Embedding(self.vocab_size, width)
        self.positions = nn.Embedding(max_length, width)
        self.drop = nn.Dropout(dropout)
        self.memory_proj = nn.Linear(memory_dim, width) if memory_dim != width else nn.Identity()
        # Encoders' features come at any scale; normalised once, they suit every block.
        self.memory_norm = nn.LayerNorm(width)
        self.blocks = nn.ModuleList(
            DecoderBlock(width, heads, mlp_ratio, dropout) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2's initialisation: small normal weights, zero biases.
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def project_memory(self, memory: Memory) -> torch.Tensor:
        """Memory vectors in the decoder's width, ``[B, S, width]``."""
        return self.memory_norm(self.memory_proj(memory.tokens))

    def embed_tokens(self, input_ids: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token plus position embeddings of ``input_ids`` ``[N, T]`` placed from ``start``."""
        end = start + input_ids.shape[1]
        if end > self.max_length:
            raise ValueError(
                f"decoder input of {end} tokens is longer than {KEY}.max_length={self.max_length}"
            )
        positions = torch.arange(start, end, device=input_ids.device)
        return self.drop(self.embed(input_ids) + self.positions(positions))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Next-token logits of final states (projection tied to the token embedding)."""
        return F.linear(self.norm(hidden), self.embed.weight)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, memory: Memory
    ) -> torch.Tensor:
        """Next-token logits ``[B, L, V]`` of targets ``[B, L]`` (teacher forcing)."""
        length = input_ids.shape[1]
        causal = torch.ones(length, length, dtype=torch.bool, device=input_ids.device).tril()
        # Padding keys are hidden too; every position still sees itself, so no row is empty.
        keys_real = attention_mask.bool()[:, None, None, :]
        self_mask = (causal & keys_real) | torch.eye(length, dtype=torch.bool, device=causal.device)
        memory_mask, has_memory = memory_attention_mask(memory.mask)
        x = self.embed_tokens(input_ids)
        projected = self.project_memory(memory)
        for block in self.blocks:
            x = block(x, self_mask, memory_mask, has_memory, memory=projected)
        return self.logits(x)

    def stepper(self, memory: Memory, use_cache: bool = True) -> StepFunction:
        """Step function of a generation from ``memory``, with or without the key/value cache."""
        return CachedSteps(self, memory) if use_cache else UncachedSteps(self, memory)

    @torch.no_grad()
    def generate(
        self, memory: Memory, options: DecodingOptions, use_cache: bool = True
    ) -> torch.Tensor:
        """Generated ids ``[B, L]`` after bos (see :meth:`CaptionDecoder.generate`).

        Generations stop at ``max_length - 1`` tokens whatever ``options.max_new_tokens``
        says: the targets' limit, and the end of the position table.

        Args:
            memory: The batch's memory.
            options: Strategy and its settings.
            use_cache: Reuse keys and values across steps; ``False`` re-runs the whole
                prefix at every step (slower, the same result).
        """
        limit = min(options.max_new_tokens, self.max_length - 1)
        return decode_memory(
            lambda m: self.stepper(m, use_cache), memory, options, self.special_ids, limit
        )


class CachedSteps:
    """Generation steps that feed one token and reuse the keys and values of the others."""

    def __init__(self, decoder: TransformerCaptionDecoder, memory: Memory) -> None:
        self.decoder = decoder
        projected = decoder.project_memory(memory)
        memory_mask, has_memory = memory_attention_mask(memory.mask)
        layers = []
        for block in decoder.blocks:
            keys, values = block.cross_attention.keys_values(projected)
            start = keys.new_zeros((*keys.shape[:2], 0, keys.shape[3]))
            layers.append(LayerCache(start, start.clone(), keys, values))
        self.cache = DecoderCache(layers, memory_mask, has_memory)

    def __call__(self, last_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` after ``last_ids`` ``[N]``."""
        cache = self.cache
        x = self.decoder.embed_tokens(last_ids[:, None], start=cache.length)
        assert cache.memory_mask is not None and cache.has_memory is not None
        for block, layer in zip(self.decoder.blocks, cache.layers, strict=True):
            # The new token sees every earlier one: no mask.
            x = block(x, None, cache.memory_mask, cache.has_memory, cache=layer)
        cache.length += 1
        return self.decoder.logits(x[:, -1])

    def reorder(self, rows: torch.Tensor) -> None:
        """Move rows (beam search)."""
        self.cache.reorder(rows)


class UncachedSteps:
    """Generation steps that re-run the decoder over the whole prefix (reference for tests)."""

    def __init__(self, decoder: TransformerCaptionDecoder, memory: Memory) -> None:
        self.decoder = decoder
        self.memory = memory
        self.ids = memory.tokens.new_zeros((memory.tokens.shape[0], 0), dtype=torch.long)

    def __call__(self, last_ids: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, V]`` after ``last_ids`` ``[N]``."""
        self.ids = torch.cat([self.ids, last_ids[:, None]], dim=1)
        mask = torch.ones_like(self.ids, dtype=torch.bool)
        return self.decoder(self.ids, mask, self.memory)[:, -1]

    def reorder(self, rows: torch.Tensor) -> None:
        """Move rows (beam search)."""
        self.ids = self.ids.index_select(0, rows)
        self.memory = Memory(
            self.memory.tokens.index_select(0, rows), self.memory.mask.index_select(0, rows)
        )
