"""Recording the fusion layers' attention weights: same outputs, weights as PyTorch's own."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmexp.encoders import EncoderOutput
from mmexp.fusion.attention_record import (
    NoCrossModalAttention,
    attention_weights,
    record_attention,
    recording,
)
from mmexp.fusion.layers import AttentionBlock, transformer_encoder_layer
from tests.helpers.fusion import CONF, build, make_features

TOKEN_LEVEL = ["early_tokens", "cross_attention", "mult", "bottleneck"]


def token_cases() -> list:
    return [
        pytest.param(name, modalities, id=f"{name}-{len(modalities)}")
        for name in TOKEN_LEVEL
        for modalities in (("image", "text"), ("image", "text", "audio"))
    ]


def strategy(name: str, modalities) -> nn.Module:
    torch.manual_seed(0)
    overrides = {"depth": 3, "fusion_layer": 0} if name == "bottleneck" else {}
    return build(CONF / f"{name}.yaml", modalities, **overrides).eval()


def with_absent_sample(features: dict[str, EncoderOutput]) -> dict[str, EncoderOutput]:
    """The second sample lacks the first modality."""
    first = next(iter(features))
    out = features[first]
    present = torch.tensor([True, False, True, True])
    return {**features, first: EncoderOutput(out.tokens, out.mask, out.pooled, present)}


def test_weights_are_those_pytorch_returns() -> None:
    torch.manual_seed(0)
    attention = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    query, key = torch.randn(3, 4, 8), torch.randn(3, 6, 8)
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[1, 4:] = True
    _, expected = attention(query, key, key, key_padding_mask=padding, average_attn_weights=False)
    torch.testing.assert_close(attention_weights(attention, query, key, padding), expected)
    additive = torch.zeros(3, 6).masked_fill(padding, float("-inf"))
    torch.testing.assert_close(attention_weights(attention, query, key, additive), expected)
    causal = torch.triu(torch.ones(4, 6, dtype=torch.bool), diagonal=1)
    _, masked = attention(query, key, key, attn_mask=causal, average_attn_weights=False)
    torch.testing.assert_close(attention_weights(attention, query, key, attn_mask=causal), masked)


def test_recording_is_off_by_default_and_scoped() -> None:
    assert recording() is None
    with record_attention() as outer:
        assert recording() is outer
        with record_attention() as inner:
            assert recording() is inner
        assert recording() is outer
    assert recording() is None


def test_masked_attention_records_zero_weights_for_rows_without_keys() -> None:
    torch.manual_seed(0)
    block = AttentionBlock(8, 2, 16).eval()
    x, context = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    valid = torch.tensor([[True, True, False, False, False], [False] * 5])
    with record_attention() as records:
        block(x, valid, context)
    weights = records.of(block.attention)
    assert weights.shape == (2, 2, 3, 5)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(2, 3))
    assert weights[0, ..., 2:].abs().max() == 0
    assert weights[1].abs().max() == 0
    with pytest.raises(KeyError):
        records.of(nn.MultiheadAttention(8, 2))


def test_encoder_layer_records_the_weights_of_its_normalised_input() -> None:
    torch.manual_seed(0)
    layer = transformer_encoder_layer(8, 2, 16, 0.0).eval()
    assert isinstance(layer, nn.TransformerEncoderLayer)
    x = torch.randn(2, 5, 8)
    padding = torch.tensor([[False] * 5, [False, False, False, True, True]])
    with torch.no_grad(), record_attention() as records:
        layer(x, src_key_padding_mask=padding)
    normed = layer.norm1(x)
    _, expected = layer.self_attn(
        normed, normed, normed, key_padding_mask=padding, average_attn_weights=False
    )
    torch.testing.assert_close(records.of(layer.self_attn), expected)


@pytest.mark.parametrize(("name", "modalities"), token_cases())
@pytest.mark.parametrize("grad", [False, True], ids=["no_grad", "grad"])
def test_outputs_are_identical_with_recording_on_and_off(name, modalities, grad) -> None:
    fusion = strategy(name, modalities)
    features = with_absent_sample(make_features(modalities))
    with torch.set_grad_enabled(grad):
        plain = fusion(features)
        with record_attention() as records:
            recorded = fusion(features)
        again = fusion(features)
    assert records.calls
    assert torch.equal(plain, recorded)
    assert torch.equal(plain, again)


@pytest.mark.parametrize(("name", "modalities"), token_cases())
def test_cross_modal_maps_cover_every_pair_with_valid_weights(name, modalities) -> None:
    fusion = strategy(name, modalities)
    features = with_absent_sample(make_features(modalities))
    with torch.no_grad():
        maps = fusion.cross_modal_attention(features)
    pairs = {(m.query, m.key) for m in maps}
    assert pairs == {(q, k) for q in modalities for k in modalities if q != k}
    for found in maps:
        query, key = features[found.query], features[found.key]
        batch, _, rows, columns = found.weights.shape
        assert (batch, rows, columns) == (4, query.tokens.shape[1], key.tokens.shape[1])
        assert found.weights.min() >= 0
        totals = found.weights.sum(-1)
        assert totals.max() <= 1 + 1e-5
        # Padded keys get no attention; padded query rows are zero.
        assert found.weights.masked_select(~key.mask[:, None, None, :]).abs().max() == 0
        assert totals.masked_select(~query.mask[:, None, :]).abs().max() == 0
        absent = features[modalities[0]].present_mask()
        if found.key == modalities[0]:
            assert found.weights[~absent].abs().max() == 0
        if found.route == "direct" and name != "early_tokens" and len(modalities) == 2:
            # The context of a cross-attention block is the other modality alone.
            valid = query.mask & query.present_mask()[:, None] & key.present_mask()[:, None]
            torch.testing.assert_close(
                totals.mean(1)[valid], torch.ones(int(valid.sum())), atol=1e-5, rtol=0
            )
    assert {m.route for m in maps} == {"bottleneck" if name == "bottleneck" else "direct"}


@pytest.mark.parametrize("name", ["concat", "attention", "late", "film"])
def test_strategies_without_cross_modal_attention_say_so(name) -> None:
    fusion = build(CONF / f"{name}.yaml", ("image", "text")).eval()
    with pytest.raises(NoCrossModalAttention, match="no attention between the tokens"):
        fusion.cross_modal_attention(make_features(("image", "text")))
