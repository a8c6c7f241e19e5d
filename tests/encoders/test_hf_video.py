"""Hugging Face video models (VideoMAE, TimeSformer, X-CLIP) from local folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmexp.data.frame_sampling import FrameSampler
from mmexp.data.video_io import probe_video
from mmexp.encoders import HFVideoEncoder
from mmexp.encoders.base import CachedFeatures
from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.tiny_video_models import FRAMES, SIZE, write_tiny_video_model
from tests.helpers.video_files import write_video, write_video_manifest

KINDS = ("videomae", "timesformer", "xclip")


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_models")
    return {kind: write_tiny_video_model(root / kind, kind) for kind in KINDS}


def encoder(folder, **options) -> HFVideoEncoder:
    torch.manual_seed(0)
    options.setdefault("sampler", FrameSampler(num_frames=FRAMES))
    return HFVideoEncoder(out_dim=8, name_or_path=str(folder), freeze="frozen", **options).eval()


@pytest.mark.parametrize("kind", KINDS)
def test_each_model_encodes_clips_its_processor_prepared(model_dirs, tmp_path, kind):
    video = encoder(model_dirs[kind])
    clip = probe_video(write_video(tmp_path / "clip.mp4", num_frames=10, size=40))
    processor = video.processor(train=False)
    frames = processor(clip)
    assert frames.shape == (FRAMES, 40, 40, 3) and frames.dtype == np.uint8
    batch = processor.collate([frames, frames])
    assert batch["pixel_values"].shape == (2, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        output = video(batch)
        split = video(CachedFeatures(video.frozen_features(batch, tokens=True)))
    assert output.pooled.shape == (2, 8)
    torch.testing.assert_close(split.pooled, output.pooled)
    tokens = {"videomae": 2 * 16, "timesformer": 1 + FRAMES * 16, "xclip": 1}[kind]
    assert output.tokens.shape == (2, tokens, 8)


def test_mean_pooling_is_the_mean_of_the_models_hidden_states(model_dirs):
    video = encoder(model_dirs["timesformer"])
    pixels = torch.randn(1, FRAMES, 3, SIZE, SIZE)
    with torch.no_grad():
        hidden = video.backbone(pixel_values=pixels).last_hidden_state
        pooled = video({"pixel_values": pixels}).pooled
        cls = encoder(model_dirs["timesformer"], pooling="cls")({"pixel_values": pixels}).pooled
    torch.testing.assert_close(pooled, video.proj(hidden.mean(dim=1)))
    torch.testing.assert_close(cls, video.proj(hidden[:, 0]))


def test_a_sampler_of_another_length_and_cls_without_a_cls_token_are_refused(model_dirs):
    with pytest.raises(ValueError, match="num_frames=8, but .* is built for 4 frames"):
        encoder(model_dirs["videomae"], sampler=FrameSampler(num_frames=8))
    with pytest.raises(ValueError, match="pooling=cls: videomae has no CLS token"):
        encoder(model_dirs["videomae"], pooling="cls")


def test_a_frozen_hf_video_tower_trains_a_classifier_on_cached_features(
    model_dirs, tmp_path, data_dir
):
    root = tmp_path / "data"
    write_video_manifest(root, {"train": 8, "val": 4, "test": 4})
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    overrides = [
        *fast,
        "data=manifest",
        f"data.root={root}",
        "data.modalities=[video]",
        "fusion=concat",
        "+model/encoders/video=hf",
        f"model.encoders.video.name_or_path={model_dirs['timesformer']}",
        f"model.encoders.video.sampler.num_frames={FRAMES}",
        "model.encoders.video.freeze=frozen",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=4",
        "feature_cache.enabled=true",
        f"feature_cache.dir={tmp_path / 'cache'}",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    assert set(result["feature_cache"]) == {"video/train", "video/val", "video/test"}
    assert 0 <= result["metrics"]["test/acc"] <= 1


def test_every_trainable_parameter_of_an_xclip_tower_gets_a_gradient(model_dirs):
    # the text side of XCLIPModel is dropped: nothing trains without a gradient (DDP's
    # unused-parameter error, wasted memory)
    torch.manual_seed(0)
    video = HFVideoEncoder(
        out_dim=8,
        name_or_path=str(model_dirs["xclip"]),
        freeze="none",
        sampler=FrameSampler(num_frames=FRAMES),
    )
    video({"pixel_values": torch.randn(2, FRAMES, 3, SIZE, SIZE)}).pooled.sum().backward()
    idle = [n for n, p in video.named_parameters() if p.requires_grad and p.grad is None]
    assert idle == []
