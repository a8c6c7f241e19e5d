"""The shared layers, each against an independent computation."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mmexp.encoders import EncoderOutput
from mmexp.fusion.layers import (
    AttentionBlock,
    Mlp,
    masked_attention,
    masked_softmax,
    power_normalise,
    presence,
    presence_matrix,
    transformer_encoder_layer,
    valid_tokens,
    zero_absent,
)
from mmexp.lit.heads import MLPHead

ROOT = Path(__file__).resolve().parents[2]


def output(batch: int, length: int, dim: int, lengths, present=None, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    return EncoderOutput(
        tokens=torch.randn(batch, length, dim, generator=generator),
        mask=mask,
        pooled=torch.randn(batch, dim, generator=generator),
        present=None if present is None else torch.tensor(present),
    )


def reference_attention(
    attention: nn.MultiheadAttention, query, context, valid: torch.Tensor
) -> torch.Tensor:
    """Multi-head attention written out: softmax with -inf on the invalid keys."""
    dim, heads = attention.embed_dim, attention.num_heads
    w_q, w_k, w_v = attention.in_proj_weight.split(dim)
    b_q, b_k, b_v = attention.in_proj_bias.split(dim)

    def split(x):  # [B, L, D] -> [B, heads, L, D / heads]
        return x.view(x.shape[0], x.shape[1], heads, dim // heads).transpose(1, 2)

    q, k, v = split(query @ w_q.T + b_q), split(context @ w_k.T + b_k), split(context @ w_v.T + b_v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dim // heads)
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    mixed = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(query.shape)
    return mixed @ attention.out_proj.weight.T + attention.out_proj.bias


def test_presence_is_the_stacked_present_masks():
    features = {
        "image": output(3, 2, 4, [2, 2, 2], present=[True, False, True]),
        "text": output(3, 2, 4, [2, 2, 2]),  # no mask: every sample has it
        "audio": output(3, 2, 4, [2, 2, 2], present=[False, False, True]),
    }
    expected = torch.tensor([[True, True, False], [False, True, False], [True, True, True]])
    result = presence(features, ["image", "text", "audio"])
    assert result.dtype == torch.bool
    assert torch.equal(result, expected)
    # The column order is the order of the modalities asked for.
    assert torch.equal(presence(features, ["audio", "image"]), expected[:, [2, 0]])


def test_presence_matrix_stacks_masks_in_the_order_asked_for():
    masks = {"image": torch.tensor([True, False]), "text": torch.tensor([False, False])}
    result = presence_matrix(masks, ["text", "image"])
    assert result.shape == (2, 2) and result.dtype == torch.bool
    assert result.tolist() == [[False, True], [False, False]]
    with pytest.raises(KeyError, match="audio"):
        presence_matrix(masks, ["image", "audio"])


@pytest.mark.parametrize("shape, mask_dims", [((4, 3), 1), ((4, 3, 5), 2), ((4, 3, 2, 5), 2)])
def test_zero_absent_zeroes_exactly_the_masked_entries(shape, mask_dims):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=generator)
    present = torch.rand(*shape[:mask_dims], generator=generator) > 0.5
    x[~present] = float("nan")  # placeholders may be non-finite
    expected = x.clone()
    expected[~present] = 0.0
    result = zero_absent(x, present)
    assert torch.equal(result, expected)
    assert torch.isfinite(result).all()
    assert torch.isnan(x[~present]).all()  # the input is left unchanged


def test_zero_absent_refuses_a_mask_that_is_no_prefix():
    with pytest.raises(ValueError, match="prefix"):
        zero_absent(torch.ones(3, 4), torch.ones(4, dtype=torch.bool))


def test_valid_tokens_zeroes_padding_and_absent_samples():
    source = output(3, 4, 2, lengths=[4, 2, 1], present=[True, True, False])
    tokens = source.tokens.clone()
    expected_valid = torch.tensor(
        [[True, True, True, True], [True, True, False, False], [False, False, False, False]]
    )
    tokens[~expected_valid] = float("inf")
    source.tokens = tokens
    zeroed, valid = valid_tokens(source)
    assert torch.equal(valid, expected_valid)
    assert torch.equal(zeroed[expected_valid], tokens[expected_valid])
    assert torch.equal(zeroed[~expected_valid], torch.zeros(6, 2))


def test_masked_softmax_against_a_softmax_over_the_valid_entries():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 3, generator=generator)
    valid = torch.tensor([[True, True, True], [True, False, True], [False, True, False]])
    valid = torch.cat([valid, torch.zeros(1, 3, dtype=torch.bool)])  # a row with none
    expected = torch.zeros(4, 3)
    for row in range(3):
        chosen = logits[row, valid[row]]
        expected[row, valid[row]] = chosen.exp() / chosen.exp().sum()
    weights = masked_softmax(logits, valid, dim=1)
    torch.testing.assert_close(weights, expected)
    assert torch.equal(weights[~valid], torch.zeros(int((~valid).sum())))


def test_masked_softmax_broadcasts_a_prefix_mask():
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 5, generator=generator)
    valid = torch.tensor([[True, False, True], [False, True, True]])
    weights = masked_softmax(logits, valid, dim=1)
    for row in range(2):
        expected = logits[row, valid[row]].softmax(dim=0)  # [valid M, 5]
        torch.testing.assert_close(weights[row, valid[row]], expected)
        assert torch.equal(weights[row, ~valid[row]], torch.zeros(1, 5))


def test_masked_attention_against_hand_written_attention():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    query = torch.randn(3, 4, 8)
    context = torch.randn(3, 5, 8)
    valid = torch.tensor(
        [[True] * 5, [True, True, False, False, False], [False] * 5]  # last: no key at all
    )
    with torch.no_grad():
        result = masked_attention(attention, query, context, valid)
        expected = reference_attention(attention, query, context, valid)
    torch.testing.assert_close(result[:2], expected[:2])
    assert torch.isnan(expected[2]).all()  # what the plain softmax over no keys gives
    assert torch.equal(result[2], torch.zeros(4, 8))


def test_masked_attention_ignores_the_values_of_invalid_keys():
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    query, context = torch.randn(2, 3, 8), torch.randn(2, 4, 8)
    valid = torch.tensor([[True, True, False, False], [True, False, True, False]])
    changed = context.clone()
    changed[~valid] = 1e3
    with torch.no_grad():
        torch.testing.assert_close(
            masked_attention(attention, query, context, valid),
            masked_attention(attention, query, changed, valid),
        )


def test_mlp_layout():
    mlp = Mlp(6, (5, 4), 3, act_layer=nn.ReLU, norm_layer=nn.LayerNorm, drop=0.2)
    assert [type(m) for m in mlp] == [
        nn.LayerNorm,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
        nn.ReLU,
        nn.Dropout,
        nn.Linear,
    ]
    assert mlp[0].normalized_shape == (6,)
    assert [(m.in_features, m.out_features) for m in mlp if isinstance(m, nn.Linear)] == [
        (6, 5),
        (5, 4),
        (4, 3),
    ]
    assert all(m.p == 0.2 for m in mlp if isinstance(m, nn.Dropout))
    plain = Mlp(6, (10,))
    assert [type(m) for m in plain] == [nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert plain[-1].out_features == 6  # out_features defaults to the input width
    assert [type(m) for m in Mlp(6, (), 2)] == [nn.Linear]


def test_mlp_computes_the_written_out_composition_and_drops_only_in_training():
    torch.manual_seed(0)
    mlp = Mlp(6, (32,), 3, norm_layer=nn.LayerNorm, drop=0.5)
    x = torch.randn(64, 6)
    norm, first, last = mlp[0], mlp[1], mlp[4]
    hidden = F.gelu(
        F.linear(F.layer_norm(x, (6,), norm.weight, norm.bias), first.weight, first.bias)
    )
    expected = F.linear(hidden, last.weight, last.bias)
    with torch.no_grad():
        torch.testing.assert_close(mlp.eval()(x), expected)
        torch.manual_seed(1)
        trained = mlp.train()(x)
    assert not torch.allclose(trained, expected)


def test_mlp_head_is_the_mlp_with_an_input_layernorm():
    head = MLPHead(10, 3, (8, 4), dropout=0.3)
    assert isinstance(head, Mlp)
    assert (head.in_dim, head.out_dim) == (10, 3)
    assert [type(m) for m in head] == [
        nn.LayerNorm,
        nn.Linear,
        nn.GELU,
        nn.Dropout,
        nn.Linear,
        nn.GELU,
        nn.Dropout,
        nn.Linear,
    ]
    assert all(m.p == 0.3 for m in head if isinstance(m, nn.Dropout))
    # The index layout checkpoints were saved with.
    assert list(head.state_dict()) == [
        "0.weight",
        "0.bias",
        "1.weight",
        "1.bias",
        "4.weight",
        "4.bias",
        "7.weight",
        "7.bias",
    ]


@pytest.mark.parametrize("cross", [True, False])
def test_attention_block_against_the_written_out_block(cross):
    torch.manual_seed(0)
    block = AttentionBlock(8, 2, 16, dropout=0.1, cross=cross).eval()
    x = torch.randn(2, 3, 8)
    context = torch.randn(2, 4, 8) if cross else None
    valid = torch.tensor([[True, True, True, False], [True, False, False, False]])
    if not cross:
        valid = valid[:, :3]
    with torch.no_grad():
        query = F.layer_norm(x, (8,), block.norm_query.weight, block.norm_query.bias)
        keys = (
            F.layer_norm(context, (8,), block.norm_context.weight, block.norm_context.bias)
            if cross
            else query
        )
        mid = x + reference_attention(block.attention, query, keys, valid)
        ff = block.feed_forward
        normed = F.layer_norm(mid, (8,), block.norm_ff.weight, block.norm_ff.bias)
        expected = mid + F.linear(
            F.gelu(F.linear(normed, ff[0].weight, ff[0].bias)), ff[3].weight, ff[3].bias
        )
        torch.testing.assert_close(block(x, valid, context), expected)
    assert (block.norm_context is None) == (not cross)
    assert list(block.feed_forward.state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias"]


def test_attention_block_needs_a_context_when_cross():
    block = AttentionBlock(8, 2, 16, cross=True)
    with pytest.raises(ValueError, match="context"):
        block(torch.randn(1, 2, 8), torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="divide"):
        AttentionBlock(8, 3, 16)


def test_transformer_encoder_layer_configuration():
    layer = transformer_encoder_layer(8, 2, 24, 0.3)
    assert isinstance(layer, nn.TransformerEncoderLayer)
    assert layer.norm_first
    assert layer.self_attn.batch_first
    assert layer.self_attn.num_heads == 2
    assert layer.activation is F.gelu
    assert (layer.linear1.in_features, layer.linear1.out_features) == (8, 24)
    assert layer.linear2.out_features == 8
    assert layer.self_attn.dropout == 0.3
    assert all(d.p == 0.3 for d in (layer.dropout, layer.dropout1, layer.dropout2))


def test_transformer_encoder_layer_is_pre_norm():
    torch.manual_seed(0)
    layer = transformer_encoder_layer(8, 2, 16, 0.0).eval()
    x = torch.randn(2, 3, 8)
    valid = torch.tensor([[True, True, True], [True, True, False]])
    with torch.no_grad():
        normed = F.layer_norm(x, (8,), layer.norm1.weight, layer.norm1.bias)
        mid = x + reference_attention(layer.self_attn, normed, normed, valid)
        normed = F.layer_norm(mid, (8,), layer.norm2.weight, layer.norm2.bias)
        hidden = F.gelu(F.linear(normed, layer.linear1.weight, layer.linear1.bias))
        expected = mid + F.linear(hidden, layer.linear2.weight, layer.linear2.bias)
        result = layer(x, src_key_padding_mask=~valid)
    torch.testing.assert_close(result[valid], expected[valid])


def test_heads_import_first_without_a_cycle():
    # mmexp.lit.heads builds on these layers while LateFusion builds MLPHead: importing the
    # head module on its own must work.
    subprocess.run(
        [sys.executable, "-c", "import mmexp.lit.heads"],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )


def test_power_normalise_is_the_signed_root_of_unit_norm_and_safe_at_zero():
    z = torch.tensor([[4.0, -9.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    out = power_normalise(z)
    root = torch.tensor([2.0, -3.0, 0.0])
    torch.testing.assert_close(out[0], root / root.norm())
    assert out[1].abs().sum() == 0  # an all-zero vector (e.g. an absent sketch) stays zero
    out.mul(torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.isfinite(z.grad).all()  # sign(z) * sqrt(|z|) would give NaN at zero
    assert z.grad[1].abs().sum() == 0
