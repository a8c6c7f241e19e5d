"""Every fusion strategy config: shapes, gradients, masking, errors, costs and golden values."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import get_class
from torch import nn

from mmexp.encoders import EncoderOutput
from mmexp.fusion import ConcatFusion, FusionStrategy, LateFusion, UnimodalFusion
from mmexp.fusion.base import takes_modalities
from mmexp.fusion.cost import count_params, match_params
from tests.helpers.fusion import (
    CONF,
    CONFIGS,
    DIM,
    MODALITY_SETS,
    build,
    check_absent_modality_is_ignored,
    check_fusion_cost,
    check_padding_does_not_change_output,
    check_sample_without_any_modality_stays_finite,
    check_shape_finite_and_gradients,
    make_features,
    strategy_cases,
    strategy_class,
)


def test_every_strategy_has_a_config():
    names = {strategy_class(p).__name__ for p in CONFIGS}
    import mmexp.fusion as fusion_package

    exported = {n for n in fusion_package.__all__ if n != "FusionStrategy"}
    assert exported <= names


@pytest.mark.parametrize(("path", "modalities"), strategy_cases())
def test_shape_finite_and_gradients(path, modalities):
    check_shape_finite_and_gradients(path, modalities)


@pytest.mark.parametrize(("path", "modalities"), strategy_cases())
def test_padding_does_not_change_output(path, modalities):
    check_padding_does_not_change_output(path, modalities)


@pytest.mark.parametrize(("path", "modalities"), strategy_cases())
def test_absent_modality_is_ignored(path, modalities):
    check_absent_modality_is_ignored(path, modalities)


@pytest.mark.parametrize(("path", "modalities"), strategy_cases())
def test_sample_without_any_modality_stays_finite(path, modalities):
    check_sample_without_any_modality_stays_finite(path, modalities)


@pytest.mark.parametrize(
    "path", [p for p in CONFIGS if strategy_class(p).min_modalities >= 2], ids=lambda p: p.stem
)
def test_multimodal_only_strategies_reject_one_modality(path):
    with pytest.raises(ValueError, match="at least 2 modalities"):
        build(path, ["image"], direct=True)


def test_a_strategy_refuses_more_modalities_than_it_is_defined_for():
    class PairOnly(ConcatFusion):
        max_modalities = 2

    assert takes_modalities(PairOnly, 2) and not takes_modalities(PairOnly, 3)
    assert not takes_modalities(PairOnly, 0) and takes_modalities(ConcatFusion, 5)
    PairOnly(["image", "text"], DIM)
    with pytest.raises(ValueError, match=r"at most 2 modalities, got \['image', 'text', 'audio'\]"):
        PairOnly(["image", "text", "audio"], DIM)


def test_unimodal_and_film_name_the_valid_modalities():
    with pytest.raises(ValueError, match=r"'audio'.*\['image', 'text'\]"):
        UnimodalFusion(["image", "text"], DIM, modality="audio")
    with pytest.raises(ValueError, match=r"'audio'.*\['image', 'text'\]"):
        build(CONF / "film.yaml", ["image", "text"], direct=True, conditioning="audio")
    assert UnimodalFusion(["text", "image"], DIM).modality == "text"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_fusion_cost(path):
    check_fusion_cost(path)


@pytest.mark.parametrize("name", ["tensor", "gated", "early_tokens", "bottleneck", "mult"])
def test_match_params_meets_budget(name):
    path = CONF / f"{name}.yaml"
    modalities = MODALITY_SETS[0]
    budget = 30_000

    def make(width: int) -> FusionStrategy:
        return build(path, modalities, hidden_dim=width)

    width = match_params(make, budget)
    params = count_params(make(width))
    assert 0.9 * budget <= params <= budget
    assert count_params(make(width + 1)) > budget


def test_match_params_edges():
    def make(width: int) -> FusionStrategy:
        return ConcatFusion(["image", "text"], DIM)

    assert match_params(make, budget=10, high=64) == 64  # parameter-free: nothing to scale
    with pytest.raises(ValueError, match="over the budget"):
        match_params(lambda w: build(CONF / "gated.yaml", ["image", "text"], hidden_dim=w), 10)


def golden_features(text_present: list[bool] | None = None) -> dict[str, EncoderOutput]:
    def output(pooled: list[list[float]], present=None) -> EncoderOutput:
        pooled_tensor = torch.tensor(pooled)
        batch = pooled_tensor.shape[0]
        return EncoderOutput(
            pooled_tensor[:, None, :].clone(),
            torch.ones(batch, 1, dtype=torch.bool),
            pooled_tensor,
            None if present is None else torch.tensor(present),
        )

    return {
        "image": output([[1.0, 2.0], [0.5, -1.0]]),
        "text": output([[3.0, 4.0], [9.0, 9.0]], text_present),
    }


def test_golden_concat():
    torch.manual_seed(0)
    fused = ConcatFusion(["image", "text"], dim=2)(golden_features())
    torch.testing.assert_close(fused, torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, 9.0, 9.0]]))


def golden_late(combine: str) -> LateFusion:
    torch.manual_seed(0)
    fusion = LateFusion(["image", "text"], dim=2, num_classes=2, combine=combine)
    # Linear per-modality classifiers with set weights: the test is about the combination.
    fusion.classifiers["image"], fusion.classifiers["text"] = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        fusion.classifiers["image"].weight.copy_(torch.eye(2))
        fusion.classifiers["image"].bias.zero_()
        fusion.classifiers["text"].weight.copy_(torch.tensor([[2.0, 0.0], [0.0, 0.0]]))
        fusion.classifiers["text"].bias.copy_(torch.tensor([1.0, -1.0]))
    return fusion


def test_golden_late_fusion():
    # image logits: x_i -> [1, 2] and [0.5, -1]; text logits: [2 x_0 + 1, -1] -> [7, -1], [19, -1]
    features = golden_features(text_present=[True, False])
    mean = golden_late("mean")(features)
    # sample 2 lacks text: its logits are the image logits alone
    torch.testing.assert_close(mean, torch.tensor([[4.0, 0.5], [0.5, -1.0]]))
    learned = golden_late("learned")
    assert learned.produces_logits and learned.out_dim == 2
    torch.testing.assert_close(learned(features), mean)  # zero-initialised weights = mean

    def log_softmax(a: float, b: float) -> list[float]:
        norm = math.log(math.exp(a) + math.exp(b))
        return [a - norm, b - norm]

    image, text = log_softmax(1.0, 2.0), log_softmax(7.0, -1.0)
    expected = torch.tensor([[image[0] + text[0], image[1] + text[1]], log_softmax(0.5, -1.0)])
    torch.testing.assert_close(golden_late("poe")(features), expected)


@pytest.mark.parametrize(
    "name", ["BottleneckFusion", "EarlyTokenFusion", "CrossAttentionFusion", "MulTFusion"]
)
def test_attention_heads_must_divide_the_width(name):
    cls = get_class(f"mmexp.fusion.{name}")
    with pytest.raises(ValueError, match=r"heads \(3\) must divide dim \(8\)"):
        cls(modalities=["image", "text"], dim=8, heads=3)


@pytest.mark.parametrize(("path", "modalities"), strategy_cases())
def test_non_finite_placeholders_reach_neither_outputs_nor_gradients(path, modalities):
    # An absent modality's values and padded tokens may be anything the data path leaves
    # there, NaN included: masking by multiplication, or computing on the placeholders
    # before masking, would let NaN through (NaN * 0 is NaN).
    torch.manual_seed(0)
    fusion = build(path, modalities).train()
    for absent in modalities:
        features = make_features(modalities, grad=True)
        with torch.no_grad():
            for feats in features.values():
                feats.tokens[~feats.mask] = float("nan")
            features[absent].tokens[1] = float("nan")
            features[absent].pooled[1] = float("nan")
        features[absent].present = torch.tensor([True, False, True, True])
        fusion.zero_grad()
        output = fusion(features)
        assert torch.isfinite(output).all(), absent
        output.square().sum().backward()
        for name, parameter in fusion.named_parameters():
            if parameter.grad is not None:
                assert torch.isfinite(parameter.grad).all(), (absent, name)
        for name, feats in features.items():
            for tensor in (feats.tokens, feats.pooled):
                if tensor.grad is not None:
                    assert torch.isfinite(tensor.grad).all(), (absent, name)
