"""open_clip towers: the embeddings open_clip computes, one load, the init, protocols, errors."""

import json
import math
import pickle
import shutil
from unittest import mock

import numpy as np
import open_clip
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from mmexp.assemble import assemble
from mmexp.builders import build_module
from mmexp.data.feature_cache import FeatureCache, check_cacheable
from mmexp.encoders.base import CachedFeatures
from mmexp.encoders.clip_towers import TowerWidthError
from mmexp.encoders.freezing import count_parameters
from mmexp.encoders.open_clip_towers import OpenClipImageEncoder, OpenClipTextEncoder
from mmexp.eval import evaluate
from mmexp.resolve import resolve_run_config
from mmexp.train import train
from tests.helpers.cli import run_cli
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.tiny_clip import (
    EMBED_DIM,
    LOGIT_BIAS,
    LOGIT_SCALE,
    write_tiny_open_clip,
)

TEXTS = ["a red square", "the big blue circle on the left!!", "shape"]
# A few steps of shapes with the tiny towers.
SHORT = [
    *FAST_OVERRIDES,
    "data.num_train=64",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "model.head.hidden_dims=[16]",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("open_clip"))


@pytest.fixture(scope="module")
def biased(tmp_path_factory):
    return write_tiny_open_clip(tmp_path_factory.mktemp("biased"), "mmexp-tiny-biased", bias=True)


@pytest.fixture(scope="module")
def reference(tiny):
    model, _, transform = open_clip.create_model_and_transforms(
        tiny.name, pretrained=str(tiny.weights)
    )
    return model.eval(), transform, open_clip.get_tokenizer(tiny.name)


def images(count=3, seed=0):
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(count)
    ]


def towers(tiny, **options):
    image = OpenClipImageEncoder(out_dim=EMBED_DIM, augment=False, **tiny.options(), **options)
    text = OpenClipTextEncoder(out_dim=EMBED_DIM, **tiny.options(), **options)
    return image.eval(), text.eval()


@torch.no_grad()
def test_towers_compute_encode_image_encode_text_and_their_last_layer_tokens(tiny, reference):
    model, transform, tokenizer = reference
    image, text = towers(tiny)
    pictures = images()
    processor = pickle.loads(pickle.dumps(image.processor(train=False)))
    pixels = processor.collate([processor(p) for p in pictures])
    assert torch.equal(pixels, torch.stack([transform(p) for p in pictures]))
    out = image(pixels)
    torch.testing.assert_close(out.pooled, model.encode_image(pixels), atol=1e-5, rtol=0)
    last = model.visual.forward_intermediates(
        pixels, indices=1, normalize_intermediates=True, output_fmt="NLC"
    )["image_intermediates"][-1]
    torch.testing.assert_close(out.tokens, last @ model.visual.proj, atol=1e-5, rtol=0)
    assert out.tokens.shape == (3, 16, EMBED_DIM) and out.mask.all()

    batch = pickle.loads(pickle.dumps(text.processor(train=False))).collate(TEXTS)
    ids = tokenizer(TEXTS)
    assert torch.equal(batch["input_ids"], ids)
    out = text(batch)
    torch.testing.assert_close(out.pooled, model.encode_text(ids), atol=1e-5, rtol=0)
    last = model.forward_intermediates(text=ids, text_indices=1, normalize_intermediates=True)
    tokens = last["text_intermediates"][-1] @ model.text_projection
    torch.testing.assert_close(out.tokens, tokens, atol=1e-5, rtol=0)
    # Real tokens: start, the words, end of text (where CLIP pools); the padding after it.
    lengths = [len(tokenizer.encode(t)) + 2 for t in TEXTS]
    assert out.mask.sum(1).tolist() == lengths
    torch.testing.assert_close(out.pooled, out.tokens[torch.arange(3), torch.tensor(lengths) - 1])


def test_both_towers_load_the_model_once_and_own_only_their_modules(tiny):
    with mock.patch.object(
        open_clip, "create_model_and_transforms", wraps=open_clip.create_model_and_transforms
    ) as create:
        image, text = towers(tiny)
        assert create.call_count == 1
        again = OpenClipImageEncoder(out_dim=EMBED_DIM, **tiny.options())
        assert create.call_count == 2  # a second image tower is a model of its own
    ids = {id(p) for p in image.parameters()}
    assert ids.isdisjoint(id(p) for p in text.parameters())
    assert ids.isdisjoint(id(p) for p in again.parameters())
    assert not any(n.startswith(("backbone.text", "logit")) for n, _ in image.named_parameters())
    assert not any(n.startswith("backbone.visual") for n, _ in text.named_parameters())


@pytest.mark.parametrize("loss", ["clip", "siglip"])
def test_init_starts_the_contrastive_loss_from_the_models_logit_scale(make_train_cfg, biased, loss):
    cfg = make_train_cfg(*biased.overrides(), "objective=contrastive", f"objective/loss={loss}")
    module = build_module(cfg, num_classes=3)
    saved = torch.load(biased.weights, weights_only=True)
    assert float(saved["logit_scale"]) == pytest.approx(LOGIT_SCALE)
    torch.testing.assert_close(module.loss_fn.log_logit_scale, saved["logit_scale"])
    if loss == "siglip":
        torch.testing.assert_close(module.loss_fn.logit_bias, saved["logit_bias"])
        assert float(saved["logit_bias"]) == LOGIT_BIAS


def test_a_model_without_a_bias_starts_siglip_at_its_default(make_train_cfg, tiny):
    cfg = make_train_cfg(*tiny.overrides(), "objective=contrastive", "objective/loss=siglip")
    loss = instantiate(cfg.objective.loss)
    assert loss.logit_bias.item() == -10.0
    assert loss.log_logit_scale.item() == pytest.approx(LOGIT_SCALE, abs=1e-6)


def test_offline_tag_says_how_to_point_at_a_local_file(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HOME", str(tmp_path))  # open_clip's URL cache: ~/.cache/clip
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    create = mock.patch.object(open_clip, "create_model_and_transforms")
    with create as create, pytest.raises(RuntimeError, match="could not be fetched") as info:
        OpenClipImageEncoder(out_dim=512, name="ViT-B-32", pretrained="laion2b_s34b_b79k")
    create.assert_not_called()  # stopped before building anything
    assert "model.encoders.image.pretrained=/path/to/open_clip_pytorch_model.bin" in str(info.value)


def test_unknown_names_tags_and_files_are_named_with_the_valid_ones(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"model\.encoders\.image\.name='ViT-B-33'") as info:
        OpenClipImageEncoder(name="ViT-B-33", pretrained=None)
    assert "ViT-B-32" in str(info.value) and "RN50" in str(info.value)  # close, and all
    with pytest.raises(ValueError, match=r"model\.encoders\.text\.pretrained='laion9b'") as info:
        OpenClipTextEncoder(name="ViT-B-32", pretrained="laion9b")
    assert str(open_clip.list_pretrained_tags_by_model("ViT-B-32")) in str(info.value)
    with pytest.raises(FileNotFoundError, match=r"pretrained='/no/such/weights\.bin'"):
        OpenClipImageEncoder(name="ViT-B-32", pretrained="/no/such/weights.bin")
    renamed = tmp_path / "other.json"
    shutil.copy(tiny.model_config, renamed)
    with pytest.raises(ValueError, match=r"set model\.encoders\.image\.name='other'"):
        OpenClipImageEncoder(**{**tiny.options(), "model_config": str(renamed)})


def test_width_other_than_the_embedding_needs_a_linear_projection(tiny, reference):
    create = mock.patch.object(open_clip, "create_model_and_transforms")
    with create as create, pytest.raises(TowerWidthError, match=r"model\.width=48") as info:
        OpenClipTextEncoder(out_dim=48, **tiny.options())
    create.assert_not_called()
    assert f"model.width={EMBED_DIM}" in str(info.value)
    assert "model.encoders.text.projection=linear" in str(info.value)
    image = OpenClipImageEncoder(out_dim=48, projection="linear", **tiny.options()).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = image(pixels)
        expected = image.proj(reference[0].encode_image(pixels))
    assert out.pooled.shape == (2, 48) and out.tokens.shape == (2, 16, 48)
    torch.testing.assert_close(out.pooled, expected, atol=1e-5, rtol=0)


def built(make_train_cfg, *overrides):
    cfg = resolve_run_config(make_train_cfg(*overrides), "train")
    return assemble(cfg, "bench").module


def trainable_names(encoder):
    return {n for n, p in encoder.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("protocol", ["full", "frozen", "linear_probe", "partial", "lora"])
def test_every_protocol_trains_what_it_should_in_both_towers(make_train_cfg, tiny, protocol):
    module = built(make_train_cfg, *tiny.overrides(), f"finetune={protocol}")
    encoders = module.encoders
    if protocol == "full":
        assert all(count_parameters(e)[0] == count_parameters(e)[1] for e in encoders.values())
    elif protocol in ("frozen", "linear_probe"):
        assert all(count_parameters(e)[0] == 0 for e in encoders.values())
        if protocol == "linear_probe":
            assert isinstance(module.head, torch.nn.Linear)
            assert count_parameters(module)[0] == count_parameters(module.head)[0]
    elif protocol == "partial":
        image = trainable_names(encoders["image"])
        blocks = "backbone.visual.transformer.resblocks"
        assert {f"{blocks}.1.mlp.c_fc.weight", "backbone.visual.ln_post.weight"} <= image
        assert "backbone.projection.weight" in image  # CLIP's projection, after the blocks
        assert not any(n.startswith((f"{blocks}.0.", "backbone.visual.conv1")) for n in image)
        assert "backbone.visual.class_embedding" not in image
        text = trainable_names(encoders["text"])
        assert {"backbone.text.ln_final.weight", "backbone.projection.weight"} <= text
        assert "backbone.text.transformer.resblocks.1.attn.in_proj_weight" in text
        assert not any("resblocks.0." in n or "token_embedding" in n for n in text)
    else:
        for encoder in encoders.values():
            names = trainable_names(encoder)
            assert names and all("lora_" in n for n in names)
            assert any(".mlp.c_fc.lora_A" in n for n in names)


def test_the_feature_cache_split_equals_the_whole_forward(make_train_cfg, tiny, tmp_path):
    cfg = make_train_cfg(
        *tiny.overrides(),
        "finetune=frozen",
        "fusion=cross_attention",
        "fusion.heads=2",
        "model.encoders.image.augment=false",
        f"feature_cache.dir={tmp_path / 'cache'}",
    )
    cfg = resolve_run_config(cfg, "train")
    run = assemble(cfg, "bench")
    module, datamodule = run.module, run.datamodule
    check_cacheable(module.encoders)
    cached = FeatureCache(cfg.feature_cache.dir, tokens=True).wrap(cfg, module, datamodule)
    raw, from_cache = next(iter(datamodule.val_dataloader())), next(iter(cached.val_dataloader()))
    assert torch.equal(raw["index"], from_cache["index"])
    module.eval()
    with torch.no_grad():
        for name, encoder in module.encoders.items():
            whole = encoder(raw[name])
            split = encoder(CachedFeatures(encoder.frozen_features(raw[name], tokens=True)))
            torch.testing.assert_close(split.pooled, whole.pooled, rtol=0, atol=0)
            torch.testing.assert_close(split.tokens, whole.tokens, rtol=0, atol=0)
            read = encoder(from_cache[name])
            torch.testing.assert_close(read.pooled, whole.pooled, rtol=1e-4, atol=1e-4)
            # token features are stored in float16
            torch.testing.assert_close(read.tokens, whole.tokens, rtol=1e-2, atol=1e-2)
            assert torch.equal(read.mask, whole.mask)
    augmenting = OpenClipImageEncoder(out_dim=EMBED_DIM, freeze="frozen", **tiny.options())
    with pytest.raises(ValueError, match=r"model\.encoders\.image: its preprocessing augments"):
        check_cacheable({"image": augmenting})


@pytest.fixture(scope="module")
def contrastive_run(tiny, tmp_path_factory, data_dir):
    """``python -m mmexp.train objective=contrastive init=open_clip`` on the tiny model."""
    folder = tmp_path_factory.mktemp("contrastive")
    run_cli(
        "train",
        *tiny.overrides(),
        "objective=contrastive",
        f"paths.data_dir={data_dir}",
        f"hydra.run.dir={folder / 'run'}",
        "++trainer.limit_train_batches=2",
        cwd=folder,
        fast=SHORT,
    )
    return json.loads((folder / "run" / "results.json").read_text())


def test_contrastive_training_continues_from_the_public_model(contrastive_run):
    assert contrastive_run["status"] == "completed"
    assert 0.0 <= contrastive_run["metrics"]["test/rsum"] <= 600.0
    # Two steps from the model's temperature (0.031; the loss's own default is 0.07).
    assert contrastive_run["metrics"]["train/temperature"] == pytest.approx(
        math.exp(-LOGIT_SCALE), rel=0.02
    )


def test_its_checkpoint_evaluates_without_the_pretrained_weights(
    contrastive_run, tiny, tmp_path, data_dir
):
    # The checkpoint holds the towers and the loss: evaluating needs no pretrained weights.
    moved = tmp_path / "elsewhere.bin"
    shutil.move(tiny.weights, moved)
    try:
        cfg = compose_config(
            "eval",
            [f"ckpt_path={contrastive_run['best_checkpoint']}", "trainer.accelerator=cpu"],
            tmp_path / "eval",
            data_dir,
        )
        evaluated = evaluate(cfg)
    finally:
        shutil.move(moved, tiny.weights)
    rsum = contrastive_run["metrics"]["test/rsum"]
    assert evaluated["metrics"]["test/rsum"] == pytest.approx(rsum)


def test_classification_trains_on_the_public_towers(tiny, tmp_path, data_dir):
    cfg = compose_config(
        "train",
        [*SHORT, *tiny.overrides(), "++trainer.limit_train_batches=2"],
        tmp_path / "classify",
        data_dir,
    )
    result = train(cfg)
    assert result["status"] == "completed" and 0.0 <= result["metrics"]["test/acc"] <= 1.0


def test_every_trainable_parameter_gets_a_gradient_with_checkpointing(tiny):
    # DDP rejects parameters that never get a gradient.
    image, text = towers(tiny, projection="linear")
    batches = (torch.randn(2, 3, 32, 32), text.processor(train=True).collate(TEXTS))
    for encoder, batch in zip((image, text), batches, strict=True):
        assert encoder.set_grad_checkpointing(True)
        encoder.train()
        out = encoder(batch)
        (out.pooled.sum() + out.tokens.sum()).backward()
        assert [n for n, p in encoder.named_parameters() if p.grad is None] == []
