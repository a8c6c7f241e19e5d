"""A video + text manifest data set (mp4, avi and flv files) trains through the CLI config."""

from __future__ import annotations

from mmexp.train import train
from tests.helpers.configs import FAST_OVERRIDES, compose_config
from tests.helpers.video_files import write_video_manifest


def test_a_video_classifier_learns_the_clips_colour(tmp_path, data_dir):
    root = tmp_path / "data"
    write_video_manifest(root, {"train": 24, "val": 8, "test": 8})
    fast = [o for o in FAST_OVERRIDES if not o.startswith(("data.", "trainer.max_epochs"))]
    overrides = [
        *fast,
        "data=manifest",
        f"data.root={root}",
        "data.modalities=[video,text]",
        "+model/encoders/video=frames",
        "model.encoders.video.sampler.num_frames=3",
        "model.encoders.video.sampler.strategy=segment",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=8",
        "trainer.max_epochs=6",
    ]
    result = train(compose_config("train", overrides, tmp_path / "run", data_dir))
    # the text is the same for every clip: only the video tells red from blue
    assert result["metrics"]["test/acc"] == 1.0


def test_frozen_frame_towers_train_on_cached_frame_features(tmp_path, data_dir, bert_dir):
    from tests.helpers.tiny_models import TINY_VIT

    root = tmp_path / "data"
    write_video_manifest(root, {"train": 12, "val": 4, "test": 4})
    fast = [o for o in FAST_OVERRIDES if not o.startswith("data.")]
    overrides = [
        *fast,
        "data=manifest",
        f"data.root={root}",
        "data.modalities=[video,text]",
        "+model/encoders/video=frames",
        "model.encoders.video.sampler.num_frames=3",
        "model.encoders.video.temporal=transformer",
        "model.encoders.video.frame_encoder._target_=mmexp.encoders.TimmImageEncoder",
        "~model.encoders.video.frame_encoder.channels",
        "~model.encoders.video.frame_encoder.image_size",
        f"+model.encoders.video.frame_encoder.name={TINY_VIT['name']}",
        f"+model.encoders.video.frame_encoder.img_size={TINY_VIT['img_size']}",
        "+model.encoders.video.frame_encoder.pretrained=false",
        "+model.encoders.video.frame_encoder.freeze=frozen",
        "+model.encoders.video.frame_encoder.model_kwargs={depth: 2}",
        "model/encoders/text=hf",
        f"model.encoders.text.name_or_path={bert_dir}",
        "model.encoders.text.freeze=frozen",
        "data.num_workers=0",
        "data.persistent_workers=false",
        "data.batch_size=4",
        "feature_cache.enabled=true",
        f"feature_cache.dir={tmp_path / 'cache'}",
    ]
    # the same (randomly initialised) towers: the same seed; another fusion reuses them
    first = train(compose_config("train", [*overrides, "fusion=concat"], tmp_path / "a", data_dir))
    again = train(compose_config("train", [*overrides, "fusion=gated"], tmp_path / "b", data_dir))
    assert {k.split("/")[0] for k in first["feature_cache"]} == {"video", "text"}
    assert not any(entry["reused"] for entry in first["feature_cache"].values())
    assert all(entry["reused"] for entry in again["feature_cache"].values())
