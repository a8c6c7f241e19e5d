"""Layers shared by the fusion strategies and the prediction heads.

One definition of each block that several strategies need, in the manner of
``timm.layers``: the presence matrix of the modalities, the zeroing of absent samples and
padded tokens, the power normalisation of the bilinear poolings, softmax and multi-head
attention restricted to valid entries, the MLP, the pre-norm attention block and the
pre-norm Transformer encoder layer. Every function and class names the strategies that use
it.

Masks follow :class:`~mmexp.encoders.EncoderOutput`: ``True`` marks what is real (a present
modality, a real token). Where a mask is applied to a larger tensor, its shape is a prefix
of the tensor's and it is broadcast over the remaining dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.attention_record import EncoderLayer, attention_weights, recording
from mmexp.fusion.base import check_heads


def presence_matrix(masks: Mapping[str, torch.Tensor], modalities: Sequence[str]) -> torch.Tensor:
    """The ``[B, M]`` boolean matrix of ``{modality: [B] bool}`` masks, columns in order.

    Used by :func:`presence`, by :class:`~mmexp.lit.common.MultimodalModule` (samples left
    with no modality), :class:`~mmexp.lit.presence.ModalityDropout` and the Shapley values
    of :mod:`mmexp.analysis.shapley`.

    Args:
        masks: ``[B]`` boolean per modality, ``True`` where the sample has it.
        modalities: The modalities, in the order of the columns.
    """
    return torch.stack([masks[m] for m in modalities], dim=1)


def presence(features: Mapping[str, EncoderOutput], modalities: Sequence[str]) -> torch.Tensor:
    """The ``[B, M]`` boolean matrix of which sample has which modality.

    Used by :class:`~mmexp.fusion.AttentionFusion`, :class:`~mmexp.fusion.BottleneckFusion`,
    :class:`~mmexp.fusion.GatedFusion` and :class:`~mmexp.fusion.LateFusion`.

    Args:
        features: Encoder output per modality.
        modalities: The modalities, in the order of the columns.

    Returns:
        ``[B, M]`` boolean, column ``i`` the ``present`` mask of ``modalities[i]`` (all
        ``True`` where an output has no mask).
    """
    return presence_matrix({m: features[m].present_mask() for m in modalities}, modalities)


def _broadcast(mask: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """View ``mask``, whose shape must be a prefix of ``x``'s, with trailing singleton dims."""
    if mask.shape != x.shape[: mask.dim()]:
        # Plain broadcasting would accept e.g. a [B] mask on a [M, B] tensor and mask the
        # wrong axis; requiring a prefix rules that out.
        raise ValueError(
            f"mask shape {tuple(mask.shape)} is not a prefix of the tensor shape {tuple(x.shape)}"
        )
    return mask.reshape(*mask.shape, *([1] * (x.dim() - mask.dim())))


def zero_absent(x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """``x`` with zeros wherever ``present`` is ``False``.

    A fill rather than a multiplication by the mask: the placeholders of absent samples
    (and padded tokens) may be non-finite, and ``NaN * 0`` is NaN.

    Used by :class:`~mmexp.fusion.AttentionFusion`, :class:`~mmexp.fusion.BottleneckFusion`,
    :class:`~mmexp.fusion.FiLMFusion`, :class:`~mmexp.fusion.GatedFusion`,
    :class:`~mmexp.fusion.LateFusion`, :class:`~mmexp.fusion.LowRankFusion`,
    :class:`~mmexp.fusion.TensorFusion`, :class:`~mmexp.fusion.UnimodalFusion`, the
    bilinear poolings (:class:`~mmexp.fusion.MLBFusion`, :class:`~mmexp.fusion.MFBFusion`,
    :class:`~mmexp.fusion.MFHFusion`, :class:`~mmexp.fusion.MutanFusion`,
    :class:`~mmexp.fusion.BlockFusion`, :class:`~mmexp.fusion.MCBFusion`) and the
    multiplicative interactions (:class:`~mmexp.fusion.MIMatrixFusion`,
    :class:`~mmexp.fusion.MIVectorFusion`, :class:`~mmexp.fusion.MIScalarFusion`) through
    :func:`present_pooled`, and through :func:`valid_tokens` and :func:`masked_attention` by
    the token-level strategies.

    Args:
        x: Any tensor, e.g. ``[B, D]`` pooled vectors, ``[B, M, C]`` per-modality logits
            or ``[B, T, D]`` tokens.
        present: Boolean mask whose shape is a prefix of ``x``'s (``[B]``, ``[B, M]``,
            ``[B, T]``); ``True`` keeps the entry.

    Returns:
        A new tensor shaped like ``x``.

    Raises:
        ValueError: The shape of ``present`` is not a prefix of that of ``x``.
    """
    return x.masked_fill(~_broadcast(present, x), 0.0)


def power_normalise(z: torch.Tensor) -> torch.Tensor:
    """Signed square root, then L2 normalisation over the last dimension.

    The normalisation of the bilinear poolings (Fukui et al. 2016, Yu et al. 2017): the
    products of two vectors have a few very large entries, which the square root tempers
    before the vector is scaled to unit length. Written as ``sqrt(relu(z)) - sqrt(relu(-z))``
    rather than ``sign(z) * sqrt(|z|)``: at ``z = 0`` (a sketch of an absent modality is all
    zeros) the latter's gradient is ``0 * inf = NaN``, while ReLU's backward selects zero. An
    all-zero vector stays zero (``F.normalize`` divides by at least ``1e-12``).

    Used by :class:`~mmexp.fusion.MFBFusion`, :class:`~mmexp.fusion.MFHFusion`,
    :class:`~mmexp.fusion.BlockFusion` (per block) and :class:`~mmexp.fusion.MCBFusion`.

    Args:
        z: ``[..., D]`` pooled bilinear features.

    Returns:
        A tensor shaped like ``z``, each ``D``-vector of unit L2 norm (or zero).
    """
    root = torch.sqrt(F.relu(z)) - torch.sqrt(F.relu(-z))
    return F.normalize(root, dim=-1)


def present_pooled(output: EncoderOutput) -> torch.Tensor:
    """The ``[B, D]`` pooled vectors of ``output``, zero for the samples that lack it.

    Zeroed before any projection, so that a non-finite placeholder of an absent modality
    never reaches a weight or its gradient.

    Used by the bilinear poolings and the multiplicative interactions (see
    :func:`zero_absent`).
    """
    return zero_absent(output.pooled, output.present_mask())


def valid_tokens(output: EncoderOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens of ``output`` with padding and absent samples zeroed, and their validity.

    A token is valid when it is real (``mask``) and its sample has the modality
    (``present``). Zeroing the others keeps non-finite placeholders out of every product,
    even of the ones a key padding mask later discards.

    Used by :class:`~mmexp.fusion.BottleneckFusion`,
    :class:`~mmexp.fusion.CrossAttentionFusion`, :class:`~mmexp.fusion.EarlyTokenFusion`,
    :class:`~mmexp.fusion.FiLMFusion`, :class:`~mmexp.fusion.MulTFusion` and
    :class:`~mmexp.fusion.NLGateFusion`.

    Args:
        output: Encoder output of one modality.

    Returns:
        ``(tokens, valid)``: ``[B, T, D]`` tokens, zero where not valid, and the ``[B, T]``
        boolean validity.
    """
    valid = output.mask & output.present_mask()[:, None]
    return zero_absent(output.tokens, valid), valid


def masked_softmax(logits: torch.Tensor, valid: torch.Tensor, dim: int) -> torch.Tensor:
    """Softmax of ``logits`` along ``dim`` over the valid entries only, zero elsewhere.

    Invalid entries are filled with the dtype's smallest finite value rather than ``-inf``,
    so a slice with no valid entry gives uniform weights (then zeroed) instead of NaN.

    Used by :class:`~mmexp.fusion.AttentionFusion` (modality weights) and
    :class:`~mmexp.fusion.GatedFusion` (``gate="softmax"``), both over the modality axis, and
    by :class:`~mmexp.fusion.NLGateFusion` over the key tokens.

    Args:
        logits: Scores, e.g. ``[B, M]`` or ``[B, M, H]``.
        valid: Boolean mask whose shape is a prefix of ``logits``'s; ``True`` for entries
            that take part in the softmax.
        dim: The dimension the weights sum to one over.

    Returns:
        Weights shaped like ``logits``: summing to one over the valid entries of each slice
        that has any, zero at invalid entries.

    Raises:
        ValueError: The shape of ``valid`` is not a prefix of that of ``logits``.
    """
    invalid = ~_broadcast(valid, logits)
    logits = logits.masked_fill(invalid, torch.finfo(logits.dtype).min)
    return logits.softmax(dim=dim).masked_fill(invalid, 0.0)


def masked_attention(
    attention: nn.MultiheadAttention,
    query: torch.Tensor,
    context: torch.Tensor,
    context_valid: torch.Tensor,
) -> torch.Tensor:
    """Multi-head attention of ``query`` over the valid positions of ``context``.

    Rows whose context has no valid position at all (the other modality is absent for that
    sample) get a zero update instead of the NaN that a softmax over no keys produces; NaN
    would otherwise survive any later masking, since ``NaN * 0`` is NaN.

    Used by :class:`AttentionBlock`, hence by :class:`~mmexp.fusion.CrossAttentionFusion`
    and :class:`~mmexp.fusion.MulTFusion`. Under
    :func:`~mmexp.fusion.attention_record.record_attention` it also records its weights
    (zero for samples with no valid key); the output is the same.

    Args:
        attention: A ``batch_first`` attention module.
        query: ``[B, L, D]`` queries.
        context: ``[B, S, D]`` keys and values.
        context_valid: ``[B, S]`` boolean, ``True`` for keys that may be attended to.

    Returns:
        ``[B, L, D]`` attention output, zero for samples with no valid key.
    """
    has_key = context_valid.any(dim=1)
    # Let key-less rows attend everywhere (finite values, so no NaN) and discard the result.
    ignore = ~(context_valid | ~has_key[:, None])
    update, _ = attention(query, context, context, key_padding_mask=ignore, need_weights=False)
    records = recording()
    if records is not None:
        with torch.no_grad():
            weights = attention_weights(attention, query, context, ignore)
        records.add(attention, zero_absent(weights, has_key))
    return zero_absent(update, has_key)


class Mlp(nn.Sequential):
    """Optional input normalisation, hidden layers with activation and dropout, a linear output.

    The layout is ``[norm], (Linear, act, Dropout) per hidden width, Linear``, as the
    indices of an ``nn.Sequential``, so the state-dict keys are ``"0.weight"`` and so on.
    Unlike ``timm.layers.Mlp`` it takes any number of hidden layers, normalises the input
    rather than the hidden layer, and has no dropout after the output layer.

    Used by :class:`AttentionBlock` as its feed-forward layer (hence by
    :class:`~mmexp.fusion.CrossAttentionFusion` and :class:`~mmexp.fusion.MulTFusion`) and
    by :class:`~mmexp.lit.heads.MLPHead`, the shared head and the per-modality classifiers
    of :class:`~mmexp.fusion.LateFusion`.

    Args:
        in_features: Input width.
        hidden_features: Widths of the hidden layers; empty for a single linear layer.
        out_features: Output width; ``None`` means ``in_features``.
        act_layer: Builds the activation after each hidden linear layer.
        norm_layer: Builds the normalisation of the input from its width; ``None`` for
            none.
        drop: Dropout after each activation, i.e. before each linear layer after the first.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        out_features: int | None = None,
        act_layer: Callable[[], nn.Module] = nn.GELU,
        norm_layer: Callable[[int], nn.Module] | None = None,
        drop: float = 0.0,
    ) -> None:
        layers: list[nn.Module] = [] if norm_layer is None else [norm_layer(in_features)]
        width = in_features
        for hidden in hidden_features:
            layers += [nn.Linear(width, hidden), act_layer(), nn.Dropout(drop)]
            width = hidden
        layers.append(nn.Linear(width, in_features if out_features is None else out_features))
        super().__init__(*layers)


class AttentionBlock(nn.Module):
    """Pre-norm Transformer block: (cross- or self-) attention, then a feed-forward layer.

    Keys that are padding or belong to an absent modality are masked
    (:func:`masked_attention`); a row with no valid key gets no attention update.

    Used by :class:`~mmexp.fusion.CrossAttentionFusion` (a cross and a self block per
    modality and layer) and :class:`~mmexp.fusion.MulTFusion` (the cross-modal and the
    self-attention stacks).

    Args:
        dim: Token width.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Width of the feed-forward layer.
        dropout: Dropout on the attention weights and the residual branches.
        cross: Whether the block attends to a separate context sequence (with its own
            normalisation) instead of to its input.

    Raises:
        ValueError: ``heads`` does not divide ``dim``.
    """

    def __init__(
        self, dim: int, heads: int, hidden_dim: int, dropout: float = 0.0, cross: bool = True
    ) -> None:
        super().__init__()
        check_heads(type(self).__name__, dim, heads)
        self.cross = cross
        self.norm_query = nn.LayerNorm(dim)
        # Only cross-attention normalises the context separately; a self-attention block
        # without it has no unused parameters (which DDP would reject).
        self.norm_context = nn.LayerNorm(dim) if cross else None
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_ff = nn.LayerNorm(dim)
        self.feed_forward = Mlp(dim, (hidden_dim,), dim, drop=dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, key_valid: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Update ``x`` by attending to ``context`` (cross) or to itself.

        Args:
            x: ``[B, L, D]`` tokens to update.
            key_valid: ``[B, S]`` validity of the keys: of ``context`` for a cross block, of
                ``x`` for a self-attention block.
            context: ``[B, S, D]`` context tokens; required iff the block is a cross block.

        Returns:
            The updated ``[B, L, D]`` tokens.
        """
        query = self.norm_query(x)
        if self.norm_context is not None:
            if context is None:
                raise ValueError("a cross-attention block needs a context sequence")
            keys = self.norm_context(context)
        else:
            keys = query
        x = x + self.dropout(masked_attention(self.attention, query, keys, key_valid))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


def transformer_encoder_layer(
    dim: int, heads: int, hidden_dim: int, dropout: float
) -> nn.TransformerEncoderLayer:
    """A pre-norm, GELU, batch-first ``nn.TransformerEncoderLayer``.

    An :class:`~mmexp.fusion.attention_record.EncoderLayer`: the PyTorch layer, which can
    also record its attention weights.

    To stack it, wrap it in an ``nn.TransformerEncoder`` with ``enable_nested_tensor=False``:
    nested tensors do not support pre-norm layers.

    Used by :class:`~mmexp.fusion.BottleneckFusion` (one per modality and layer) and
    :class:`~mmexp.fusion.EarlyTokenFusion` (the joint encoder).

    Args:
        dim: Token width.
        heads: Attention heads; must divide ``dim``.
        hidden_dim: Width of the feed-forward layer.
        dropout: Dropout on the attention weights, in the feed-forward layer and on the
            residual branches.
    """
    return EncoderLayer(
        dim,
        heads,
        dim_feedforward=hidden_dim,
        dropout=dropout,
        activation="gelu",
        batch_first=True,
        norm_first=True,
    )
