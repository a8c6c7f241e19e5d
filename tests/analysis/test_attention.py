"""The attention analysis: figures and entropy of the text tokens' attention over the image."""

from __future__ import annotations

import json

import pytest
import torch

from mmexp.analysis.attention import AttentionAnalysis, normalized_entropy
from mmexp.analysis.figures import token_grid
from mmexp.analysis.samples import token_labels
from mmexp.encoders.text_transformer import byte_tokenizer
from mmexp.fusion.attention_record import CrossModalAttention
from tests.helpers.analysis_sets import CLASSES, analysis_set, caption, tiny_classifier

TOKEN_LEVEL = ["early_tokens", "cross_attention", "mult", "bottleneck"]


@pytest.mark.parametrize("fusion", TOKEN_LEVEL)
def test_token_level_strategies_get_a_figure_per_sample(fusion, tmp_path) -> None:
    analysis = analysis_set(tiny_classifier(fusion), tmp_path)
    report = AttentionAnalysis(num_samples=3, seed=1, tokens_per_sample=2).run(analysis)
    assert "skipped" not in report
    assert report["reverse"] is True
    assert report["route"] == ("bottleneck" if fusion == "bottleneck" else "direct")
    assert len(report["samples"]) == 3 and len(report["figures"]) == 3
    for sample in report["samples"]:
        assert (tmp_path / sample["figure"]).is_file()
        assert sample["figure"] == f"analysis/attention/sample-{sample['index']}.png"
        assert sample["caption"] == caption(sample["index"])
        assert sample["true"] == CLASSES[sample["index"] % 3]
        assert sample["predicted"] in CLASSES
        assert 0 <= sample["normalized_entropy"] <= 1 + 1e-9
        assert 0 <= sample["reverse_normalized_entropy"] <= 1 + 1e-9
        assert len(sample["tokens"]) == 2
        if fusion in ("cross_attention", "mult"):
            assert sample["image_share"] == pytest.approx(1.0, abs=1e-5)
        if fusion == "early_tokens":
            assert 0 < sample["image_share"] < 1
    assert set(report["mean"]) >= {"normalized_entropy", "image_share"}
    json.dumps(report)


def test_strategies_without_cross_modal_attention_are_skipped_with_the_reason(tmp_path) -> None:
    analysis = analysis_set(tiny_classifier("concat"), tmp_path)
    report = AttentionAnalysis().run(analysis)
    assert report["skipped"] is True
    assert "ConcatFusion has no attention between the tokens" in report["reason"]
    assert not (tmp_path / "analysis").exists()


def test_a_model_without_text_is_skipped(tmp_path) -> None:
    module = tiny_classifier("unimodal_image", modalities=("image",))
    report = AttentionAnalysis().run(analysis_set(module, tmp_path))
    assert report["skipped"] is True
    assert "no ['text'] modality" in report["reason"]


def test_a_known_map_gives_zero_entropy_and_its_patch(tmp_path) -> None:
    module = tiny_classifier("cross_attention")
    analysis = analysis_set(module, tmp_path, count=2)
    text, image = analysis.features["text"], analysis.features["image"]
    batch, texts, patches = 2, text.tokens.shape[1], image.tokens.shape[1]
    weights = torch.zeros(batch, 1, texts, patches)
    weights[..., 5] = 1.0  # every text token looks at patch 5 only

    def fixed(features):
        return [CrossModalAttention("text", "image", 0, weights)]

    module.fusion.cross_modal_attention = fixed
    report = AttentionAnalysis(num_samples=2).run(analysis)
    assert report["reverse"] is False
    for sample in report["samples"]:
        assert sample["normalized_entropy"] == 0
        assert sample["entropy_bits"] == 0
        assert sample["image_share"] == pytest.approx(1.0)
        assert (tmp_path / sample["figure"]).is_file()


def test_layer_out_of_range_is_refused(tmp_path) -> None:
    analysis = analysis_set(tiny_classifier("cross_attention"), tmp_path)
    with pytest.raises(ValueError, match="layer=3: the strategy has 1 layers"):
        AttentionAnalysis(layer=3).run(analysis)


def test_entropy_token_grid_and_token_labels() -> None:
    assert normalized_entropy(torch.ones(16)) == (pytest.approx(4.0), pytest.approx(1.0))
    assert normalized_entropy(torch.tensor([0.0, 2.0, 0.0])) == (0.0, 0.0)
    assert token_grid(64, 32, 32) == (0, 8, 8)
    assert token_grid(5, 32, 32) == (1, 2, 2)
    assert token_grid(197, 224, 224) == (1, 14, 14)
    assert token_grid(12, 30, 40) == (0, 3, 4)
    assert token_grid(1, 32, 64) is None
    tokenizer = byte_tokenizer()
    ids = torch.tensor(tokenizer("abcdefgh")["input_ids"])  # 8 bytes and the end token
    assert token_labels(ids, 3, tokenizer) == ["#0 'abcd'", "#1 'efgh'", "#2"]
    assert token_labels(None, 2, tokenizer) == ["#0", "#1"]
