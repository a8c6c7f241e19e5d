"""Each fusion strategy computes its published formula: checked against an independent computation.

Every test writes the method out by hand (an explicit outer product for TFN, a rank-r TFN for
LMF, the GMU and FiLM equations, MBT's exchange path, MulT's directional stacks) from the
strategy's own weights, and compares it with what the strategy returns.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmexp.encoders import EncoderOutput
from mmexp.fusion import (
    AttentionFusion,
    BottleneckFusion,
    CrossAttentionFusion,
    EarlyTokenFusion,
    FiLMFusion,
    GatedFusion,
    LowRankFusion,
    MulTFusion,
    ProductFusion,
    SumFusion,
    TensorFusion,
    UnimodalFusion,
)

DIM, BATCH = 8, 3


def features(modalities=("image", "text"), lengths=None, seed=0, grad=False):
    """Random unpadded features, every modality present."""
    generator = torch.Generator().manual_seed(seed)
    lengths = lengths or {"image": 4, "text": 5, "audio": 3}
    out = {}
    for name in modalities:
        tokens = torch.randn(BATCH, lengths[name], DIM, generator=generator)
        pooled = torch.randn(BATCH, DIM, generator=generator)
        out[name] = EncoderOutput(
            tokens.requires_grad_(grad),
            torch.ones(BATCH, lengths[name], dtype=torch.bool),
            pooled.requires_grad_(grad),
        )
    return out


def pooled_of(feats, name):
    return feats[name].pooled


def test_sum_and_product_golden_values():
    feats = {
        "image": EncoderOutput(
            torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), torch.tensor([[1.0, 2.0]])
        ),
        "text": EncoderOutput(
            torch.zeros(1, 1, 2), torch.ones(1, 1, dtype=torch.bool), torch.tensor([[3.0, 4.0]])
        ),
    }
    torch.testing.assert_close(SumFusion(["image", "text"], 2)(feats), torch.tensor([[4.0, 6.0]]))
    torch.testing.assert_close(
        ProductFusion(["image", "text"], 2)(feats), torch.tensor([[3.0, 8.0]])
    )
    feats["text"].present = torch.tensor([False])  # the neutral element stands in for it
    torch.testing.assert_close(SumFusion(["image", "text"], 2)(feats), torch.tensor([[1.0, 2.0]]))
    torch.testing.assert_close(
        ProductFusion(["image", "text"], 2)(feats), torch.tensor([[1.0, 2.0]])
    )


def test_unimodal_returns_its_modality_and_zeros_when_absent():
    feats = features()
    fusion = UnimodalFusion(["image", "text"], DIM, modality="text")
    torch.testing.assert_close(fusion(feats), feats["text"].pooled)
    feats["text"].present = torch.tensor([True, False, True])
    assert fusion(feats)[1].abs().sum() == 0


def test_tensor_fusion_is_the_outer_product_of_extended_vectors():
    torch.manual_seed(0)
    fusion = TensorFusion(["image", "text", "audio"], DIM, rank_dim=3, hidden_dim=5).eval()
    feats = features(("image", "text", "audio"))
    z = {}
    for name in ("image", "text", "audio"):
        projection = fusion.projections[name][0]
        h = torch.relu(feats[name].pooled @ projection.weight.T + projection.bias)
        z[name] = torch.cat([h, torch.ones(BATCH, 1)], dim=1)
    # [z_a; 1] x [z_b; 1] x [z_c; 1], flattened in row-major order, then the linear layer.
    outer = torch.einsum("bi,bj,bk->bijk", z["image"], z["text"], z["audio"]).flatten(1)
    expected = outer @ fusion.output.weight.T + fusion.output.bias
    torch.testing.assert_close(fusion(feats), expected)
    # The appended one keeps the unimodal terms: the tensor holds z_a itself (j = k = last).
    assert outer.shape[1] == 4**3


def test_low_rank_fusion_equals_a_rank_r_tensor_fusion():
    torch.manual_seed(0)
    fusion = LowRankFusion(["image", "text"], DIM, rank=3, hidden_dim=6)
    feats = features()
    za = torch.cat([feats["image"].pooled, torch.ones(BATCH, 1)], dim=1)
    zb = torch.cat([feats["text"].pooled, torch.ones(BATCH, 1)], dim=1)
    # The full TFN weight W[i, j, h] = sum_r lambda_r Wa[r, i, h] Wb[r, j, h] (Liu et al. Eq. 6).
    wa, wb, lam = fusion.factors["image"], fusion.factors["text"], fusion.rank_weights[0]
    weight = torch.einsum("r,rih,rjh->ijh", lam, wa, wb)
    expected = torch.einsum("bi,bj,ijh->bh", za, zb, weight) + fusion.bias
    torch.testing.assert_close(fusion(feats), expected, atol=1e-5, rtol=1e-5)


def test_gmu_bimodal_is_z_h1_plus_one_minus_z_h2():
    torch.manual_seed(0)
    fusion = GatedFusion(["image", "text"], DIM, hidden_dim=5)
    feats = features()
    x1, x2 = feats["image"].pooled, feats["text"].pooled
    h1 = torch.tanh(
        F.linear(x1, fusion.candidates["image"].weight, fusion.candidates["image"].bias)
    )
    h2 = torch.tanh(F.linear(x2, fusion.candidates["text"].weight, fusion.candidates["text"].bias))
    z = torch.sigmoid(F.linear(torch.cat([x1, x2], 1), fusion.gates.weight, fusion.gates.bias))
    torch.testing.assert_close(fusion(feats), z * h1 + (1 - z) * h2)
    # One gate of width hidden_dim, as in the paper (not one per modality).
    assert fusion.gates.out_features == 5


def test_gmu_n_modal_has_independent_sigmoid_gates():
    torch.manual_seed(0)
    names = ("image", "text", "audio")
    fusion = GatedFusion(list(names), DIM, hidden_dim=4)
    feats = features(names)
    x = torch.cat([feats[m].pooled for m in names], 1)
    gates = torch.sigmoid(F.linear(x, fusion.gates.weight, fusion.gates.bias)).view(BATCH, 3, 4)
    expected = sum(
        gates[:, i]
        * torch.tanh(
            F.linear(feats[m].pooled, fusion.candidates[m].weight, fusion.candidates[m].bias)
        )
        for i, m in enumerate(names)
    )
    torch.testing.assert_close(fusion(feats), expected)
    # Independent gates: they do not sum to one across the modalities.
    assert not torch.allclose(gates.sum(dim=1), torch.ones(BATCH, 4))
    softmax = GatedFusion(list(names), DIM, hidden_dim=4, gate="softmax")
    softmax.load_state_dict(fusion.state_dict())
    assert not torch.allclose(softmax(feats), fusion(feats))


def test_attention_pooling_weights_and_sum():
    torch.manual_seed(0)
    fusion = AttentionFusion(["image", "text"], DIM, hidden_dim=6)
    feats = features()
    scores = torch.cat(
        [
            torch.tanh(feats[m].pooled @ fusion.keys[m].weight.T + fusion.keys[m].bias)
            @ fusion.query.weight.T
            for m in ("image", "text")
        ],
        dim=1,
    )
    alpha = scores.softmax(dim=1)
    expected = alpha[:, :1] * feats["image"].pooled + alpha[:, 1:] * feats["text"].pooled
    torch.testing.assert_close(fusion(feats), expected)


def test_film_modulates_with_gamma_and_beta_from_the_conditioning_modality():
    torch.manual_seed(0)
    fusion = FiLMFusion(["image", "text"], DIM, conditioning="text", hidden_dim=6)
    feats = features()
    delta_gamma, beta = F.linear(
        feats["text"].pooled, fusion.generators["image"].weight, fusion.generators["image"].bias
    ).chunk(2, dim=-1)
    x = feats["image"].tokens
    hidden = F.layer_norm(
        F.linear(x, fusion.inputs["image"].weight, fusion.inputs["image"].bias), (6,)
    )
    modulated = x + F.linear(
        torch.relu((1 + delta_gamma)[:, None] * hidden + beta[:, None]),
        fusion.outputs["image"].weight,
        fusion.outputs["image"].bias,
    )
    # The paper's classifier sees only the modulated features, not the conditioning vector.
    torch.testing.assert_close(fusion(feats), modulated.mean(dim=1))
    assert fusion.out_dim == DIM
    variant = FiLMFusion(
        ["image", "text"], DIM, conditioning="text", hidden_dim=6, concat_conditioning=True
    )
    variant.load_state_dict(fusion.state_dict())
    torch.testing.assert_close(
        variant(feats), torch.cat([modulated.mean(dim=1), feats["text"].pooled], dim=1)
    )


def cls_gradient_from_text(fusion: BottleneckFusion) -> float:
    """max |d image-CLS / d text tokens|: what crosses from text into the image stream."""
    feats = features(grad=True)
    captured = {}
    handle = fusion.norms["image"].register_forward_hook(
        lambda module, args, output: captured.setdefault("cls", output)
    )
    fusion(feats)
    handle.remove()
    direction = torch.randn(captured["cls"].shape, generator=torch.Generator().manual_seed(1))
    (captured["cls"] * direction).sum().backward()
    return float(feats["text"].tokens.grad.abs().max())


@pytest.mark.parametrize(("depth", "fusion_layer"), [(2, 0), (3, 0), (3, 1), (4, 2)])
def test_bottleneck_exchanges_for_every_accepted_setting(depth, fusion_layer):
    torch.manual_seed(0)
    fusion = BottleneckFusion(
        ["image", "text"], DIM, depth=depth, heads=2, fusion_layer=fusion_layer, dropout=0.0
    )
    assert cls_gradient_from_text(fusion) > 1e-4


@pytest.mark.parametrize(("depth", "fusion_layer"), [(1, 0), (2, 1), (3, 2), (3, 3)])
def test_bottleneck_refuses_settings_that_exchange_nothing(depth, fusion_layer):
    with pytest.raises(ValueError, match=r"fusion_layer must be in \[0, depth - 2\]"):
        BottleneckFusion(["image", "text"], DIM, depth=depth, heads=2, fusion_layer=fusion_layer)


def test_bottleneck_is_the_only_path_between_modalities():
    # The bottleneck is the only cross-modal route, and the first fusion layer reads its
    # learned initial value: the image CLS after that layer still ignores the text.
    torch.manual_seed(0)
    fusion = BottleneckFusion(["image", "text"], DIM, depth=3, heads=2, fusion_layer=1, dropout=0.0)
    feats = features(grad=True)
    captured = {}
    handle = fusion.layers[1]["image"].register_forward_hook(
        lambda module, args, output: captured.setdefault("joint", output)
    )
    fusion(feats)
    handle.remove()
    captured["joint"][:, 0].sum().backward()  # image CLS after the first fusion layer
    assert feats["text"].tokens.grad is None or feats["text"].tokens.grad.abs().max() == 0


def test_early_tokens_is_one_transformer_over_all_tokens():
    torch.manual_seed(0)
    fusion = EarlyTokenFusion(["image", "text"], DIM, depth=2, heads=2, dropout=0.0).eval()
    feats = features()
    sequence = torch.cat(
        [
            fusion.cls_token.expand(BATCH, -1, -1),
            feats["image"].tokens + fusion.type_embedding[0],
            feats["text"].tokens + fusion.type_embedding[1],
        ],
        dim=1,
    )
    state = sequence
    for layer in fusion.encoder.layers:  # the pre-LN layer written out
        attended = layer.self_attn(*(layer.norm1(state),) * 3, need_weights=False)[0]
        state = state + attended
        state = state + layer.linear2(F.gelu(layer.linear1(layer.norm2(state))))
    torch.testing.assert_close(fusion(feats), fusion.norm(state[:, 0]), atol=1e-5, rtol=1e-5)


def test_cross_attention_queries_one_stream_and_attends_to_the_other():
    torch.manual_seed(0)
    fusion = CrossAttentionFusion(["image", "text"], DIM, depth=1, heads=2, dropout=0.0).eval()
    feats = features()
    out = fusion(feats)
    expected = []
    for own, other in (("image", "text"), ("text", "image")):
        cross, self_block = fusion.layers[0][own]["cross"], fusion.layers[0][own]["self"]
        x = feats[own].tokens
        q, kv = cross.norm_query(x), cross.norm_context(feats[other].tokens)
        x = x + cross.attention(q, kv, kv, need_weights=False)[0]
        x = x + cross.feed_forward(cross.norm_ff(x))
        q = self_block.norm_query(x)
        x = x + self_block.attention(q, q, q, need_weights=False)[0]
        x = x + self_block.feed_forward(self_block.norm_ff(x))
        expected.append(fusion.norms[own](x).mean(dim=1))
    torch.testing.assert_close(out, torch.cat(expected, dim=1), atol=1e-5, rtol=1e-5)


def sinusoids(length: int, width: int) -> torch.Tensor:
    """The standard sinusoidal position table (Vaswani et al., 2017)."""
    position = torch.arange(length)[:, None].float()
    frequency = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    table = torch.zeros(length, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table


def test_mult_written_out_for_two_modalities():
    # Each stack input is sqrt(d) * x + positions (queries, keys and values), each
    # cross-modal stack ends in a LayerNorm, then the self-attention stack and its LayerNorm.
    torch.manual_seed(0)
    fusion = MulTFusion(["image", "text"], DIM, depth=1, self_depth=1, heads=2, dropout=0.0).eval()
    feats = features()

    def stack_input(x):
        return math.sqrt(DIM) * x + sinusoids(x.shape[1], DIM)

    pooled = []
    for target, source in (("image", "text"), ("text", "image")):
        valid_source = torch.ones(BATCH, feats[source].tokens.shape[1], dtype=torch.bool)
        valid_target = torch.ones(BATCH, feats[target].tokens.shape[1], dtype=torch.bool)
        states = fusion.cross[target][source][0](
            stack_input(feats[target].tokens), valid_source, stack_input(feats[source].tokens)
        )
        states = stack_input(fusion.cross_norms[target][source](states))
        states = fusion.self_attention[target][0](states, valid_target)
        pooled.append(fusion.norms[target](states).mean(dim=1))
    torch.testing.assert_close(fusion(feats), torch.cat(pooled, dim=1), atol=1e-5, rtol=1e-5)


def test_mult_scales_inputs_and_is_directional():
    torch.manual_seed(0)
    names = ("image", "text", "audio")
    fusion = MulTFusion(list(names), DIM, depth=1, self_depth=1, heads=2, dropout=0.0).eval()
    feats = features(names)
    base = fusion(feats)
    assert base.shape == (BATCH, 3 * 2 * DIM)
    # Silence the (target image <- source text) stack: only image's output slice may change,
    # so each pair is its own directional stack.
    with torch.no_grad():
        block = fusion.cross["image"]["text"][0]
        block.attention.out_proj.weight.zero_()
        block.attention.out_proj.bias.zero_()
    changed = fusion(feats)
    width = 2 * DIM
    assert not torch.allclose(changed[:, :width], base[:, :width])
    torch.testing.assert_close(changed[:, width:], base[:, width:])

    # The stack input is sqrt(d) * x + PE(position) with the standard sinusoids.
    from mmexp.fusion.mult import embed

    x = torch.randn(1, 5, DIM)
    torch.testing.assert_close(embed(x), math.sqrt(DIM) * x + sinusoids(5, DIM))
