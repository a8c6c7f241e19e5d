"""Hugging Face CLIP / SigLIP towers: transformers' features, one load, the init, errors."""

import pickle
from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

from mmexp.builders import build_module
from mmexp.encoders.base import CachedFeatures
from mmexp.encoders.clip_towers import TowerWidthError
from mmexp.encoders.freezing import count_parameters
from mmexp.encoders.hf_clip import HFClipImageEncoder, HFClipTextEncoder
from mmexp.finetune import Frozen, Lora, Partial
from tests.helpers.tiny_clip import (
    CONTEXT_LENGTH,
    EMBED_DIM,
    LOGIT_BIAS,
    LOGIT_SCALE,
    write_tiny_hf_clip,
)
from tests.helpers.tiny_models import write_tiny_bert

TEXTS = ["a red square", "the big blue circle on the left", "shape"]
# The embedding width of each tiny model (SigLIP embeds at the vision width).
WIDTHS = {"clip": EMBED_DIM, "siglip": 32}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return {kind: write_tiny_hf_clip(tmp_path_factory.mktemp(kind), kind) for kind in WIDTHS}


def towers(folder, kind, **options):
    width = WIDTHS[kind]
    image = HFClipImageEncoder(out_dim=width, name_or_path=str(folder), **options)
    text = HFClipTextEncoder(out_dim=width, name_or_path=str(folder), **options)
    return image.eval(), text.eval()


def images(count=3):
    rng = np.random.default_rng(0)
    return [Image.fromarray(p) for p in rng.integers(0, 255, (count, 40, 48, 3), dtype=np.uint8)]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
@torch.no_grad()
def test_towers_compute_get_image_features_and_get_text_features(folders, kind):
    folder = folders[kind]
    model = AutoModel.from_pretrained(folder).eval()
    image, text = towers(folder, kind)
    pictures = images()
    processor = pickle.loads(pickle.dumps(image.processor(train=True)))
    pixels = processor.collate([processor(p) for p in pictures])
    expected = AutoImageProcessor.from_pretrained(folder)(images=pictures, return_tensors="pt")
    assert torch.equal(pixels, expected["pixel_values"])
    out = image(pixels)
    features = model.get_image_features(pixel_values=pixels)
    torch.testing.assert_close(out.pooled, features.pooler_output, atol=1e-5, rtol=0)
    assert out.tokens.shape == (3, 16, WIDTHS[kind]) and out.mask.all()  # 4 x 4 patches

    tokenizer = AutoTokenizer.from_pretrained(folder)
    batch = text.processor(train=False).collate(TEXTS)
    if kind == "clip":  # padded per batch, the padding masked
        reference = tokenizer(TEXTS, padding=True, return_tensors="pt")
        features = model.get_text_features(**reference)
        assert batch["input_ids"].shape[1] < CONTEXT_LENGTH
    else:  # padded to max_length and fed without a mask, as SigLIP was trained
        reference = tokenizer(TEXTS, padding="max_length", max_length=16, return_tensors="pt")
        features = model.get_text_features(input_ids=reference["input_ids"])
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    out = text(batch)
    torch.testing.assert_close(out.pooled, features.pooler_output, atol=1e-5, rtol=0)
    assert out.mask.sum(1).tolist() == reference["attention_mask"].sum(1).tolist()
    if kind == "clip":  # tokens in the embedding space: the pooled one is the end of text
        lengths = reference["attention_mask"].sum(1)
        torch.testing.assert_close(out.pooled, out.tokens[torch.arange(3), lengths - 1])


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_both_towers_load_the_model_once(folders, kind):
    with mock.patch.object(AutoModel, "from_pretrained", wraps=AutoModel.from_pretrained) as load:
        image, text = towers(folders[kind], kind)
    assert load.call_count == 1
    assert {id(p) for p in image.parameters()}.isdisjoint(id(p) for p in text.parameters())


@pytest.mark.parametrize("loss", ["clip", "siglip"])
@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_init_starts_the_contrastive_loss_from_the_models_logits(
    make_train_cfg, folders, kind, loss
):
    cfg = make_train_cfg(
        "init=hf_clip",
        f"model.encoders.image.name_or_path={folders[kind]}",
        f"model.width={WIDTHS[kind]}",
        "objective=contrastive",
        f"objective/loss={loss}",
    )
    module = build_module(cfg, num_classes=3)
    model = AutoModel.from_pretrained(folders[kind])
    assert model.logit_scale.item() == pytest.approx(LOGIT_SCALE)
    scale = module.loss_fn.log_logit_scale
    torch.testing.assert_close(scale, model.logit_scale.detach().reshape(scale.shape))
    if loss == "siglip":
        # SigLIP's learned bias; CLIP has none, and the loss keeps SigLIP's default.
        expected = model.logit_bias.item() if kind == "siglip" else -10.0
        assert module.loss_fn.logit_bias.item() == pytest.approx(expected)
        assert kind == "clip" or expected == LOGIT_BIAS


@pytest.mark.parametrize("protocol", [Frozen(), Partial(trainable_blocks=1), Lora(r=2)])
def test_protocols_find_the_towers_layers(folders, protocol):
    image, text = towers(folders["siglip"], "siglip")
    for encoder in (image, text):
        protocol.restrict_encoder(encoder, f"model.encoders.{encoder.modality}")
        names = {n for n, p in encoder.named_parameters() if p.requires_grad}
        prefix = f"backbone.{encoder.modality.replace('image', 'vision')}_model"
        if protocol.name == "frozen":
            assert count_parameters(encoder)[0] == 0
        elif protocol.name == "partial":
            assert f"{prefix}.encoder.layers.1.mlp.fc1.weight" in names
            assert not any(n.startswith(f"{prefix}.encoder.layers.0.") for n in names)
            assert not any(".embeddings." in n for n in names)
            assert any(n.startswith(f"{prefix}.head.") for n in names)  # after the blocks
        else:
            assert names and all("lora_" in n for n in names)
            assert any(".self_attn.q_proj.lora_A" in n for n in names)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_the_feature_cache_split_equals_the_whole_forward(folders, kind):
    image, text = towers(folders[kind], kind, projection="linear", freeze="frozen")
    assert image.cache_blocker() is None and text.cache_blocker() is None
    pixels = torch.randn(2, 3, 32, 32)
    batch = text.processor(train=False).collate(TEXTS[:2])
    with torch.no_grad():
        for encoder, inputs in ((image, pixels), (text, batch)):
            whole = encoder(inputs)
            for tokens in (True, False):
                split = encoder(CachedFeatures(encoder.frozen_features(inputs, tokens=tokens)))
                torch.testing.assert_close(split.pooled, whole.pooled, rtol=0, atol=0)
                if tokens:
                    torch.testing.assert_close(split.tokens, whole.tokens, rtol=0, atol=0)
                    assert torch.equal(split.mask, whole.mask)


def test_offline_hub_name_says_to_pass_a_save_pretrained_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not be fetched") as info:
        HFClipImageEncoder(name_or_path="mmexp-tests/no-such-clip")
    assert "save_pretrained" in str(info.value)
    assert "model.encoders.image.name_or_path=" in str(info.value)


def test_another_kind_of_model_and_a_width_mismatch_are_named(folders, tmp_path):
    bert = write_tiny_bert(tmp_path / "bert")
    with pytest.raises(ValueError, match=r"'bert' model; hf_clip takes CLIPModel or SiglipModel"):
        HFClipTextEncoder(out_dim=32, name_or_path=str(bert))
    with (
        mock.patch.object(AutoModel, "from_pretrained") as load,
        pytest.raises(TowerWidthError, match=r"model\.width=48") as info,
    ):
        HFClipImageEncoder(out_dim=48, name_or_path=str(folders["clip"]))
    load.assert_not_called()  # refused from the config, before the weights
    assert f"model.width={EMBED_DIM}" in str(info.value)
    assert "model.encoders.image.projection=linear" in str(info.value)


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_every_trainable_parameter_gets_a_gradient_with_checkpointing(folders, kind):
    # DDP rejects parameters that never get a gradient.
    image, text = towers(folders[kind], kind)
    batches = (torch.randn(2, 3, 32, 32), text.processor(train=True).collate(TEXTS))
    for encoder, batch in zip((image, text), batches, strict=True):
        assert encoder.set_grad_checkpointing(True)
        encoder.train()
        out = encoder(batch)
        (out.pooled.sum() + out.tokens.sum()).backward()
        assert [n for n, p in encoder.named_parameters() if p.grad is None] == []
