"""Saliency: Grad-CAM and gradient x input against known models and autograd, the figures."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from mmexp.analysis.saliency import SaliencyAnalysis, top_share
from mmexp.analysis.saliency_methods import GradCAM, GradientTimesInput, predicted_scores
from mmexp.encoders.timm_image import TimmImageEncoder
from tests.helpers.analysis_sets import CLASSES, analysis_set, caption, tiny_classifier
from tests.helpers.tiny_models import TINY_VIT

SIDE = 32
# Two 3x3 convolutions see two columns past the edge of the visible half.
MARGIN = 2


class HalfImageCNN(nn.Module):
    """Two convolutions, global pooling, a linear layer; it sees one half of the image only.

    The head has no bias and opposite rows, so the predicted class has a positive logit and
    Grad-CAM has positive evidence to show.
    """

    def __init__(self, half: str) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.visible = torch.zeros(1, 1, SIDE, SIDE)
        if half == "left":
            self.visible[..., : SIDE // 2] = 1.0
        else:
            self.visible[..., SIDE // 2 :] = 1.0
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, bias=False),
            nn.ReLU(),
        )
        self.head = nn.Linear(8, 2, bias=False)
        with torch.no_grad():
            self.head.weight[1] = -self.head.weight[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pooled = self.features(images * self.visible).mean(dim=(2, 3))
        return self.head(pooled)


def images(count: int = 6) -> torch.Tensor:
    return torch.rand(count, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("half", ["left", "right"])
def test_gradcam_puts_the_mass_on_the_half_the_class_depends_on(half) -> None:
    model = HalfImageCNN(half).eval()
    pixels = images()
    changed = pixels.clone()
    other = slice(SIDE // 2, None) if half == "left" else slice(None, SIDE // 2)
    changed[..., other] = torch.rand_like(changed[..., other])
    torch.testing.assert_close(model(pixels), model(changed))  # the other half is ignored

    maps, details = GradCAM().attribute(model, lambda x: predicted_scores(model(x)), pixels)
    assert details["layer"] == "features.2"
    assert maps.shape == (6, SIDE, SIDE) and maps.min() >= 0
    seen = slice(None, SIDE // 2) if half == "left" else slice(SIDE // 2, None)
    beyond = slice(SIDE // 2 + MARGIN, None) if half == "left" else slice(None, SIDE // 2 - MARGIN)
    totals = maps.sum(dim=(1, 2))
    assert (totals > 0).all()
    shares = maps[..., seen].sum(dim=(1, 2)) / totals
    assert shares.min() > 0.8, shares
    assert maps[..., beyond].abs().max() == 0
    assert all(p.grad is None for p in model.parameters())


def test_gradcam_by_hand_on_the_hooked_layer() -> None:
    model = HalfImageCNN("left").eval()
    pixels = images(2)
    maps, _ = GradCAM(layer="features.1").attribute(
        model, lambda x: predicted_scores(model(x)), pixels
    )
    activation = model.features[:2](pixels * model.visible).requires_grad_(True)
    logits = model.head(model.features[2:](activation).mean(dim=(2, 3)))
    (gradient,) = torch.autograd.grad(predicted_scores(logits).sum(), activation)
    expected = (gradient.mean(dim=(2, 3), keepdim=True) * activation).sum(1).clamp_min(0)
    torch.testing.assert_close(maps, expected.detach())  # same size: no upsampling needed


def test_gradient_times_input_equals_autograd_per_sample() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3)
    ).eval()
    pixels = torch.randn(3, 3, 8, 8)
    attribution, _ = GradientTimesInput().attribute(
        model, lambda x: predicted_scores(model(x)), pixels
    )
    for row in range(3):
        sample = pixels[row : row + 1].clone().requires_grad_(True)
        logits = model(sample)[0]
        (gradient,) = torch.autograd.grad(logits[logits.argmax()], sample)
        torch.testing.assert_close(attribution[row], (gradient * sample).sum(1)[0])
    assert all(p.grad is None for p in model.parameters())


def test_timm_encoders_at_the_documented_layer_and_a_vit_by_gradient_times_input() -> None:
    torch.manual_seed(0)
    head = nn.Linear(8, 3)
    pixels = torch.randn(2, 3, 64, 64)
    resnet = TimmImageEncoder(out_dim=8, name="resnet18", pretrained=False).eval()
    maps, details = GradCAM(layer="backbone.layer4").attribute(
        resnet, lambda x: predicted_scores(head(resnet(x).pooled)), pixels
    )
    assert details == {"layer": "backbone.layer4", "layer_shape": [512, 2, 2]}
    assert maps.shape == (2, 64, 64) and torch.isfinite(maps).all()
    vit = TimmImageEncoder(out_dim=8, pretrained=False, **TINY_VIT).eval()
    pixels = torch.randn(2, 3, 32, 32)
    attribution, _ = GradientTimesInput().attribute(
        vit, lambda x: predicted_scores(head(vit(x).pooled)), pixels
    )
    assert attribution.shape == (2, 32, 32) and attribution.abs().sum() > 0


def test_scores_explained() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 1.0]])
    assert predicted_scores(logits).tolist() == [2.0, 3.0]
    assert predicted_scores(torch.tensor([[0.5], [1.5]])).tolist() == [0.5, 1.5]
    assert top_share(torch.ones(10, 10)) == pytest.approx(0.1)
    assert top_share(torch.zeros(4, 4)) == 0.0


@pytest.mark.parametrize("method", [GradCAM(), GradientTimesInput()], ids=lambda m: m.name)
def test_writes_a_figure_per_sample_with_caption_and_labels(method, tmp_path) -> None:
    analysis = analysis_set(tiny_classifier("concat"), tmp_path)
    report = SaliencyAnalysis(method=method, num_samples=3, seed=2).run(analysis)
    assert report["method"] == method.name
    if method.name == "gradcam":
        assert report["layer"] == "stages.1.3"
    assert len(report["figures"]) == 3
    for sample in report["samples"]:
        assert sample["figure"] == f"analysis/saliency/sample-{sample['index']}.png"
        assert (tmp_path / sample["figure"]).stat().st_size > 0
        assert sample["caption"] == caption(sample["index"])
        assert sample["true"] == CLASSES[sample["index"] % 3]
        assert sample["predicted"] in CLASSES
        assert 0 <= sample["top10_share"] <= 1
    json.dumps(report)


def test_a_model_without_image_is_skipped_with_the_reason(tmp_path) -> None:
    module = tiny_classifier("unimodal_text", modalities=("text",))
    report = SaliencyAnalysis().run(analysis_set(module, tmp_path))
    assert report == {
        "skipped": True,
        "reason": "the model has no 'image' modality (it has ['text'])",
    }


def test_gradcam_without_a_convolution_is_skipped_and_a_bad_layer_refused(tmp_path) -> None:
    assert "use the gradient x input method" in GradCAM().blocker(nn.Linear(3, 3))
    module = tiny_classifier("concat")
    with pytest.raises(ValueError, match="layer='stages.9' is not a module"):
        GradCAM(layer="stages.9").target(module.encoders["image"])
    analysis = analysis_set(module, tmp_path, count=2)
    module.encoders["image"].stages = nn.Identity()  # no convolution left
    report = SaliencyAnalysis().run(analysis)
    assert report["skipped"] is True
    assert "no Conv2d layer" in report["reason"]
