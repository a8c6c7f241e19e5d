"""Every fusion config under every subset of present modalities, as evaluation will mark them.

Each batch holds one sample per non-empty presence pattern, so one forward covers every
subset, all-but-one absent included. Absent features are placeholders (NaN, noise, values
near overflow; the tokens of absent rows real-looking or all masked), and a modality absent
from the whole batch may arrive as a single masked token that no encoder produced. None of
this may reach an output, and a sample's output may depend only on its own present features.
A sample without any modality does not occur: it is to be refused before fusion.
"""

from __future__ import annotations

import copy
from itertools import combinations

import pytest
import torch
from torch import nn

from mmexp.encoders.base import masked_mean
from mmexp.fusion import (
    AttentionFusion,
    BlockFusion,
    BottleneckFusion,
    ConcatFusion,
    CrossAttentionFusion,
    EarlyTokenFusion,
    FiLMFusion,
    GatedFusion,
    LateFusion,
    LowRankFusion,
    MCBFusion,
    MFBFusion,
    MFHFusion,
    MIMatrixFusion,
    MISAFusion,
    MIScalarFusion,
    MIVectorFusion,
    MLBFusion,
    MulTFusion,
    MutanFusion,
    NLGateFusion,
    ProductFusion,
    SumFusion,
    TensorFusion,
    UnimodalFusion,
)
from mmexp.fusion.layers import valid_tokens
from mmexp.lit.heads import MLPHead
from tests.helpers.fusion import (
    NUM_CLASSES,
    absent_placeholder,
    as_present,
    build,
    presence_rows,
    rows_without,
    sample_alone,
    select_rows,
    strategy_cases,
    subset_features,
)

CASES = strategy_cases()
TOLERANCE = {"atol": 1e-6, "rtol": 1e-6}


def build_eval(path, modalities) -> tuple[nn.Module, nn.Module]:
    """The fusion and the shared head on top of it, in eval mode (no dropout)."""
    torch.manual_seed(0)
    fusion = build(path, modalities).eval()
    head = nn.Identity() if fusion.produces_logits else MLPHead(fusion.out_dim, NUM_CLASSES)
    return fusion, head.eval()


def run(fusion, head, features) -> torch.Tensor:
    """Fused representation and head output side by side: the head must not break either."""
    with torch.no_grad():
        fused = fusion(features)
        return torch.cat([fused, head(fused)], dim=-1)


@pytest.mark.parametrize("layout", ["masked", "empty", "one_token"])
@pytest.mark.parametrize(("path", "modalities"), CASES)
def test_outputs_and_gradients_are_finite(path, modalities, layout):
    # masked/empty: absent rows keep a real-looking mask or have none; one_token: the first
    # modality is absent from the whole batch. Training mode: the path that backpropagates.
    torch.manual_seed(0)
    fusion = build(path, modalities).train()
    if layout == "one_token":
        rows = rows_without(modalities, modalities[:1])
        features = subset_features(modalities, rows)
        features[modalities[0]] = absent_placeholder(len(rows), "nan")
    else:
        rows = presence_rows(modalities)
        features = subset_features(modalities, rows, empty_absent=layout == "empty")
    for feats in features.values():
        feats.tokens.requires_grad_(True)
        feats.pooled.requires_grad_(True)
    output = fusion(features)
    assert torch.isfinite(output).all()
    output.square().sum().backward()
    for name, parameter in fusion.named_parameters():
        assert parameter.grad is None or torch.isfinite(parameter.grad).all(), name
    for name, feats in features.items():
        for tensor in (feats.tokens, feats.pooled):
            assert tensor.grad is None or torch.isfinite(tensor.grad).all(), name


@pytest.mark.parametrize(("path", "modalities"), CASES)
def test_placeholders_do_not_change_any_output(path, modalities):
    fusion, head = build_eval(path, modalities)
    rows = presence_rows(modalities)
    reference = run(fusion, head, subset_features(modalities, rows, fill="nan"))
    assert torch.isfinite(reference).all()
    for fill in ("random", "huge", "nan"):
        for empty_absent in (False, True):
            features = subset_features(modalities, rows, fill=fill, empty_absent=empty_absent)
            torch.testing.assert_close(
                run(fusion, head, features), reference, **TOLERANCE, msg=f"{fill}, {empty_absent}"
            )


@pytest.mark.parametrize(("path", "modalities"), CASES)
def test_a_sample_does_not_depend_on_the_rest_of_the_batch(path, modalities):
    # Alone, a sample is padded to its own length and its absent modalities to one token;
    # in a batch, to the longest sample and with the others' modalities.
    fusion, head = build_eval(path, modalities)
    features = subset_features(modalities, presence_rows(modalities), empty_absent=True)
    batched = run(fusion, head, features)
    for index in range(batched.shape[0]):
        for alone in (
            select_rows(features, slice(index, index + 1)),
            sample_alone(features, index),
        ):
            torch.testing.assert_close(
                run(fusion, head, alone)[0], batched[index], **TOLERANCE, msg=f"row {index}"
            )


def batch_absent_cases() -> list:
    """Each case and each set of modalities that can be absent from a whole batch."""
    return [
        pytest.param(*case.values, absent, id=f"{case.id}-no_{'_'.join(absent)}")
        for case in CASES
        for size in range(1, len(case.values[1]))
        for absent in combinations(case.values[1], size)
    ]


@pytest.mark.parametrize("fill", ["zeros", "nan"])
@pytest.mark.parametrize(("path", "modalities", "absent"), batch_absent_cases())
def test_a_modality_absent_from_the_batch_may_be_one_masked_token(path, modalities, absent, fill):
    fusion, head = build_eval(path, modalities)
    rows = rows_without(modalities, absent)
    full = subset_features(modalities, rows, fill="random")
    short = {**full, **{m: absent_placeholder(len(rows), fill) for m in absent}}
    reference = run(fusion, head, full)
    assert torch.isfinite(reference).all()
    torch.testing.assert_close(run(fusion, head, short), reference, **TOLERANCE)


# Closed forms under absence, as each strategy's docstring states them. Every batch row has
# its own presence pattern, so most expectations are computed row by row.

NEUTRAL = {ConcatFusion: 0.0, SumFusion: 0.0, ProductFusion: 1.0, UnimodalFusion: 0.0}
NEUTRAL[LowRankFusion] = 0.0  # z_m = [0; 1]
# The bilinear poolings: an absent modality enters as x_m = 0 (its factor: the biases alone).
NEUTRAL.update(
    dict.fromkeys([MLBFusion, MFBFusion, MFHFusion, MutanFusion, BlockFusion, MCBFusion], 0.0)
)
# Multiplicative interactions: an absent modality enters as a zero vector (the linear terms).
NEUTRAL.update(dict.fromkeys([MIMatrixFusion, MIVectorFusion, MIScalarFusion], 0.0))


def row_by_row(fusion, features, expect) -> torch.Tensor:
    """The output with each row replaced by ``expect(kept modalities, that row's features)``."""
    output = fusion(features).clone()
    for index in range(len(output)):
        kept = [m for m in fusion.modalities if features[m].present[index]]
        output[index] = expect(kept, select_rows(features, slice(index, index + 1)))[0]
    return output


def restricted(fusion, kept):
    """The strategy fusing ``kept`` only, with the same weights."""
    sub = copy.deepcopy(fusion)
    sub.modalities = tuple(kept)
    if isinstance(fusion, EarlyTokenFusion):  # type embeddings are indexed by position
        rows = [fusion.modalities.index(m) for m in kept]
        sub.type_embedding = nn.Parameter(fusion.type_embedding[rows])
    return sub


def zero_absent_slots(output, features, order) -> torch.Tensor:
    """``output`` with the equal-width slot of each absent modality (in ``order``) zeroed."""
    slots = output.clone().view(len(output), len(order), -1)
    for index, m in enumerate(order):
        slots[~features[m].present, index] = 0.0
    return slots.view_as(output)


def expected_neutral(fusion, features) -> torch.Tensor:
    """Concat (0 block), sum (0), product (1), unimodal (0s), LMF ([0; 1]), bilinear (x_m = 0)."""
    return fusion(as_present(features, NEUTRAL[type(fusion)]))


def expected_late(fusion, features) -> torch.Tensor:
    """Mean rule: the average of the present modalities' classifier logits (one: its own)."""
    assert fusion.combine == "mean"  # the published config's rule
    filled = as_present(features, 0.0)
    logits = torch.stack([fusion.classifiers[m](filled[m].pooled) for m in fusion.modalities], 1)
    present = torch.stack([features[m].present for m in fusion.modalities], dim=1)
    return (logits * present[..., None]).sum(dim=1) / present.sum(dim=1, keepdim=True)


def expected_attention(fusion, features) -> torch.Tensor:
    """A sample with one modality gets that modality's vector (its weight is one)."""
    return row_by_row(
        fusion,
        features,
        lambda kept, rows: rows[kept[0]].pooled if len(kept) == 1 else fusion(rows),
    )


def expected_gated(fusion, features) -> torch.Tensor:
    """GMU: a zero gate and a zero gate input; as a zero input whose candidate is zero."""

    def expect(kept, rows):
        zeroed = copy.deepcopy(fusion)
        for m in set(fusion.modalities) - set(kept):
            nn.init.zeros_(zeroed.candidates[m].bias)  # tanh(W 0 + 0) = 0
        return zeroed(as_present(rows, 0.0))

    assert fusion.gate_kind in ("pair", "sigmoid")  # the paper's gates, not renormalised
    return row_by_row(fusion, features, expect)


def expected_tensor(fusion, features) -> torch.Tensor:
    """TFN: an absent modality's z_m is [0; 1], leaving the other modalities' terms."""
    fused = torch.ones(len(features[fusion.modalities[0]].pooled), 1)
    for m, output in as_present(features, 0.0).items():
        projected = fusion.projections[m](output.pooled) * features[m].present[:, None]
        z = torch.cat([projected, torch.ones(len(projected), 1)], dim=-1)
        fused = (fused[:, :, None] * z[:, None, :]).flatten(1)
    return fusion.output(fused)


def expected_film(fusion, features) -> torch.Tensor:
    """FiLM: no conditioning modality gives gamma = 1, beta = 0; an absent target a zero slot."""
    identity = copy.deepcopy(fusion)
    for generator in identity.generators.values():
        nn.init.zeros_(generator.weight)
        nn.init.zeros_(generator.bias)
    unconditioned = ~features[fusion.conditioning].present
    output = fusion(features).clone()
    output[unconditioned] = identity(features)[unconditioned]
    return zero_absent_slots(output, features, fusion.outputs_order)


def expected_as_if_not_fused(fusion, features) -> torch.Tensor:
    """MBT and single-stream: absent modalities are left out, as if they were not fused."""
    return row_by_row(fusion, features, lambda kept, rows: restricted(fusion, kept)(rows))


def expected_co_attention(fusion, features) -> torch.Tensor:
    """Co-attention: an absent stream pools to zeros and is left out of the others' context.

    A lone stream has no context (the cross-attention update is skipped): no closed form.
    """

    def expect(kept, rows):
        if len(kept) == 1:
            return fusion(rows)
        slots = restricted(fusion, kept)(rows).view(1, len(kept), -1)
        full = slots.new_zeros(1, len(fusion.modalities), slots.shape[-1])
        full[:, [fusion.modalities.index(m) for m in kept]] = slots
        return full.flatten(1)

    output = row_by_row(fusion, features, expect)
    return zero_absent_slots(output, features, fusion.modalities)


def expected_mult(fusion, features) -> torch.Tensor:
    """MulT: an absent target pools to zeros (an absent source only skips its updates)."""
    return zero_absent_slots(fusion(features), features, fusion.modalities)


def expected_nl_gate(fusion, features) -> torch.Tensor:
    """NL-gate: no query modality gives zeros, no key modality the mean query tokens (z = q).

    Otherwise the query attends to the present key modalities only, as if the absent ones
    were not fused.
    """

    def expect(kept, rows):
        if fusion.query not in kept:
            return torch.zeros(1, fusion.out_dim)
        if kept == [fusion.query]:
            return masked_mean(*valid_tokens(rows[fusion.query]))
        return restricted(fusion, kept)(rows)

    return row_by_row(fusion, features, expect)


def expected_misa(fusion, features) -> torch.Tensor:
    """MISA: an absent modality's private and shared vectors are left out and zero.

    The present ones go through the Transformer layer as if the absent modalities were not
    fused; a sample with no modality gets zeros.
    """
    count = len(fusion.modalities)

    def expect(kept, rows):
        full = torch.zeros(1, 2 * count, fusion.out_dim // (2 * count))
        if kept:
            slots = restricted(fusion, kept)(rows).view(1, 2 * len(kept), -1)
            for position, m in enumerate(kept):
                index = fusion.modalities.index(m)
                full[:, index] = slots[:, position]  # private vectors first
                full[:, count + index] = slots[:, len(kept) + position]  # then shared
        return full.flatten(1)

    return row_by_row(fusion, features, expect)


CLOSED_FORMS = {
    **dict.fromkeys(NEUTRAL, expected_neutral),
    LateFusion: expected_late,
    AttentionFusion: expected_attention,
    GatedFusion: expected_gated,
    TensorFusion: expected_tensor,
    FiLMFusion: expected_film,
    BottleneckFusion: expected_as_if_not_fused,
    EarlyTokenFusion: expected_as_if_not_fused,
    CrossAttentionFusion: expected_co_attention,
    MulTFusion: expected_mult,
    NLGateFusion: expected_nl_gate,
    MISAFusion: expected_misa,
}


@pytest.mark.parametrize(("path", "modalities"), CASES)
def test_documented_behaviour_under_absence(path, modalities):
    fusion, _ = build_eval(path, modalities)
    features = subset_features(modalities, presence_rows(modalities), empty_absent=True)
    with torch.no_grad():
        output = fusion(features)
        expect = CLOSED_FORMS.get(type(fusion))
        assert expect, f"state {type(fusion).__name__}'s documented absence rule in CLOSED_FORMS"
        expected = expect(fusion, features)
    torch.testing.assert_close(output, expected, **TOLERANCE)


def test_the_patterns_cover_every_subset_with_a_modality():
    for count in (2, 3):
        rows = presence_rows(["image", "text", "audio"][:count])
        assert len(set(rows)) == len(rows) == 2**count - 1
        assert all(any(row) for row in rows)
        assert sum(sum(row) == 1 for row in rows) == count  # all-but-one absent
