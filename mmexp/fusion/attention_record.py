"""Recording the attention weights of the fusion layers for analyses; off by default.

Inside ``with record_attention() as records:``, every call of
:func:`~mmexp.fusion.layers.masked_attention` (hence every
:class:`~mmexp.fusion.layers.AttentionBlock`) and every :class:`EncoderLayer` adds the
attention weights it used to ``records``, keyed by its ``nn.MultiheadAttention``. The
weights are computed on the side, from the same normalised queries, keys and masks, with
:func:`attention_weights`; the layer's own output is computed exactly as without recording
(the same call, the same kernels, PyTorch's fast path included), so outputs are bitwise
identical with recording on and off. Recording costs one extra ``softmax(QK^T)`` per layer
and holds the ``[B, H, L, S]`` weights of every call, so it is meant for a few samples.

Recorded weights are those before attention dropout (a module in eval mode has none).

A strategy turns the records into :class:`CrossModalAttention` maps with
:meth:`~mmexp.fusion.FusionStrategy.cross_modal_attention`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

_ACTIVE: list[AttentionRecords] = []


class NoCrossModalAttention(Exception):
    """A fusion strategy has no attention between the tokens of different modalities."""


@dataclass(frozen=True)
class CrossModalAttention:
    """The attention of one modality's tokens over another's tokens in one layer.

    Attributes:
        query: The modality whose tokens attend.
        key: The modality whose tokens are attended to.
        layer: Index of the layer among the strategy's layers with this (query, key) pair.
        weights: ``[B, H, Lq, Lk]`` share of each query token's attention that goes to each
            key token (over the key modality's tokens only, so a row sums to at most 1 where
            the strategy also attends elsewhere). Zero for padded and absent tokens.
        route: ``direct`` (queries attend to the key tokens themselves) or the way the
            exchange goes otherwise (``bottleneck``: a product of two attention maps).
    """

    query: str
    key: str
    layer: int
    weights: torch.Tensor
    route: str = "direct"


def cross_modal_map(
    query: str,
    key: str,
    layer: int,
    weights: torch.Tensor,
    query_valid: torch.Tensor,
    route: str = "direct",
) -> CrossModalAttention:
    """A :class:`CrossModalAttention` whose rows of padded or absent query tokens are zero.

    Args:
        query: The attending modality.
        key: The attended modality.
        layer: The layer index.
        weights: ``[B, H, Lq, Lk]`` weights over the key modality's tokens.
        query_valid: ``[B, Lq]`` validity of the query tokens.
        route: See :class:`CrossModalAttention`.
    """
    rows = query_valid.to(weights.device)[:, None, :, None]
    return CrossModalAttention(query, key, layer, weights.masked_fill(~rows, 0.0), route)


@dataclass(eq=False)
class AttentionRecords:
    """Attention weights recorded per attention module, in call order.

    Attributes:
        calls: ``{attention module: [weights of each call]}``, each ``[B, H, L, S]``.
    """

    calls: dict[nn.Module, list[torch.Tensor]] = field(default_factory=dict)

    def add(self, attention: nn.Module, weights: torch.Tensor) -> None:
        """Keep the weights of one call of ``attention`` (detached)."""
        self.calls.setdefault(attention, []).append(weights.detach())

    def of(self, attention: nn.Module) -> torch.Tensor:
        """The weights of the one call of ``attention``.

        Raises:
            KeyError: ``attention`` was not called while recording.
            ValueError: It was called more than once.
        """
        if attention not in self.calls:
            raise KeyError("this attention module was not called while recording")
        calls = self.calls[attention]
        if len(calls) != 1:
            raise ValueError(f"this attention module was called {len(calls)} times, not once")
        return calls[0]


@contextmanager
def record_attention() -> Iterator[AttentionRecords]:
    """Record the attention weights of the fusion layers called inside the block."""
    records = AttentionRecords()
    _ACTIVE.append(records)
    try:
        yield records
    finally:
        _ACTIVE.remove(records)


def recording() -> AttentionRecords | None:
    """The records being filled, ``None`` outside :func:`record_attention` (the default)."""
    return _ACTIVE[-1] if _ACTIVE else None


def _additive(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A boolean (``True``: ignored) or additive float mask as an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=like.dtype, device=like.device).masked_fill(
            mask, float("-inf")
        )
    return mask.to(like.dtype)


def attention_weights(
    attention: nn.MultiheadAttention,
    query: torch.Tensor,
    key: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The per-head weights ``softmax(QK^T / sqrt(d))`` that ``attention`` computes.

    What ``attention(query, key, key, need_weights=True, average_attn_weights=False)``
    returns in eval mode, without computing the values.

    Args:
        attention: The attention module (its input projections are read).
        query: ``[B, L, D]`` queries (``[L, B, D]`` for a module that is not batch first).
        key: ``[B, S, D]`` keys, likewise.
        key_padding_mask: ``[B, S]``, ``True`` (or ``-inf``) for keys to ignore.
        attn_mask: ``[L, S]`` or ``[B * H, L, S]``, boolean or additive.

    Returns:
        ``[B, H, L, S]`` weights, each row summing to one.

    Raises:
        NotImplementedError: A module with ``add_bias_kv`` or ``add_zero_attn``.
    """
    if attention.bias_k is not None or attention.add_zero_attn:
        raise NotImplementedError("attention_weights: add_bias_kv and add_zero_attn")
    if not attention.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    if attention.in_proj_weight is not None:
        w_query, w_key, _ = attention.in_proj_weight.chunk(3)
    else:
        w_query, w_key = attention.q_proj_weight, attention.k_proj_weight
    b_query = b_key = None
    if attention.in_proj_bias is not None:
        b_query, b_key, _ = attention.in_proj_bias.chunk(3)
    heads = attention.num_heads
    batch, length, _ = query.shape
    q = F.linear(query, w_query, b_query).view(batch, length, heads, -1).transpose(1, 2)
    k = F.linear(key, w_key, b_key).view(batch, key.shape[1], heads, -1).transpose(1, 2)
    logits = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    extra = _additive(attn_mask, logits)
    if extra is not None:
        logits = logits + (extra.view(batch, heads, length, -1) if extra.dim() == 3 else extra)
    padding = _additive(key_padding_mask, logits)
    if padding is not None:
        logits = logits + padding[:, None, None, :]
    return logits.softmax(dim=-1)


class EncoderLayer(nn.TransformerEncoderLayer):
    """``nn.TransformerEncoderLayer`` that records its self-attention weights when asked.

    Its parameters, state-dict keys and outputs are those of the PyTorch layer; only under
    :func:`record_attention` it also adds the weights of its self-attention (of the
    normalised input for a pre-norm layer) to the records.
    """

    def forward(
        self,
        src: torch.Tensor,
        src_mask: torch.Tensor | None = None,
        src_key_padding_mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """The PyTorch layer's output; records the attention weights while recording."""
        records = recording()
        if records is not None:
            with torch.no_grad():
                x = self.norm1(src) if self.norm_first else src
                weights = attention_weights(self.self_attn, x, x, src_key_padding_mask, src_mask)
            records.add(self.self_attn, weights)
        return super().forward(
            src, src_mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=is_causal
        )
