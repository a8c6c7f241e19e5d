"""Feature cache: split encoders compute what they computed whole, entries are reused."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmexp.builders import build_data_and_model
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.data.contract import missing_members
from mmexp.data.feature_cache import FeatureCache
from mmexp.encoders import HFTextEncoder, TimmImageEncoder
from mmexp.encoders.base import CachedFeatures
from mmexp.train import train
from tests.helpers.frozen_towers import write_vit_weights
from tests.helpers.tiny_models import TINY_VIT


def _assert_same_output(encoder, inputs):
    whole = encoder(inputs)
    for tokens in (True, False):
        split = encoder(CachedFeatures(encoder.frozen_features(inputs, tokens=tokens)))
        torch.testing.assert_close(split.pooled, whole.pooled, rtol=1e-5, atol=1e-5)
        if tokens:
            torch.testing.assert_close(split.tokens, whole.tokens)
            assert torch.equal(split.mask, whole.mask)
        else:
            assert split.tokens.shape[1] == 1


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_text_encoder_split_in_two_computes_the_same_features(bert_dir, pooling):
    torch.manual_seed(0)
    encoder = HFTextEncoder(
        out_dim=16, name_or_path=str(bert_dir), pooling=pooling, freeze="frozen"
    ).eval()
    processor = encoder.processor(train=False)
    _assert_same_output(
        encoder, processor.collate([processor(t) for t in ["a red square", "the big blue circle"]])
    )


def test_image_encoder_split_in_two_computes_the_same_features():
    torch.manual_seed(0)
    encoder = TimmImageEncoder(out_dim=16, pretrained=False, freeze="frozen", **TINY_VIT).eval()
    _assert_same_output(encoder, torch.randn(2, 3, 32, 32))


def test_cached_batches_give_the_encoders_outputs_on_the_raw_batches(frozen_cfg):
    cfg = frozen_cfg("fusion=cross_attention")
    datamodule, module = build_data_and_model(cfg)
    cached = FeatureCache(cfg.feature_cache.dir, tokens="auto").wrap(cfg, module, datamodule)
    assert isinstance(cached, CachedDataModule) and cached.num_classes == datamodule.num_classes
    assert missing_members(cached) == [] and cached.label_names == datamodule.label_names
    assert cached.label_report == datamodule.label_report
    assert cached.bad_samples is datamodule.bad_samples
    raw_batch = next(iter(datamodule.val_dataloader()))
    cached_batch = next(iter(cached.val_dataloader()))
    assert torch.equal(cached_batch["index"], raw_batch["index"])
    assert torch.equal(cached_batch["label"], raw_batch["label"])
    module.eval()
    for name, encoder in module.encoders.items():
        from_cache, direct = encoder(cached_batch[name]), encoder(raw_batch[name])
        torch.testing.assert_close(from_cache.pooled, direct.pooled, rtol=1e-4, atol=1e-4)
        # token features are stored in float16
        torch.testing.assert_close(from_cache.tokens, direct.tokens, rtol=1e-2, atol=1e-2)
        assert torch.equal(from_cache.mask, direct.mask)


def test_later_runs_reuse_the_entries_and_tokens_get_their_own(frozen_cfg, tmp_path):
    first = train(frozen_cfg("feature_cache.enabled=true", "fusion=concat", run_name="a"))
    assert not any(entry["reused"] for entry in first["feature_cache"].values())
    assert len(first["feature_cache"]) == 6  # 2 encoders x 3 splits
    second = train(
        frozen_cfg(
            "feature_cache.enabled=true",
            "fusion=gated",
            "seed=7",
            "data.batch_size=8",
            run_name="b",
        )
    )
    assert all(entry["reused"] for entry in second["feature_cache"].values())
    assert first["feature_cache"] == {
        k: {**v, "reused": False} for k, v in second["feature_cache"].items()
    }
    tokens = train(frozen_cfg("feature_cache.enabled=true", "fusion=early_tokens", run_name="c"))
    assert not any(entry["reused"] for entry in tokens["feature_cache"].values())
    entry = tmp_path / "cache" / f"text-{tokens['feature_cache']['text/train']['key']}.safetensors"
    stored = load_file(str(entry))
    assert stored["tokens"].dtype == torch.float16 and stored["mask"].dtype == torch.bool
    assert stored["__positions__"].tolist() == list(range(96))
    assert 0 <= tokens["metrics"]["test/acc"] <= 1


def test_key_follows_weights_and_data_not_loader_options(frozen_cfg, tmp_path):
    def keys(*overrides):
        cfg = frozen_cfg(*overrides)
        datamodule, module = build_data_and_model(cfg)
        report = FeatureCache(cfg.feature_cache.dir).wrap(cfg, module, datamodule).report
        return {name: entry["key"] for name, entry in report.items()}

    base = keys()
    assert keys("data.batch_size=8", "data.num_workers=0") == base
    assert keys("seed=3") == base  # the towers' weights come from files, not the seed
    other = write_vit_weights(tmp_path / "other.pth", seed=1)
    other_weights = keys(f"model.encoders.image.checkpoint_path={other}")
    assert other_weights["image/train"] != base["image/train"]
    assert other_weights["text/train"] == base["text/train"]
    other_task = keys("data.task=unique_text")
    assert not set(other_task.values()) & set(base.values())


def test_corrupt_entry_is_recomputed(frozen_cfg, tmp_path, caplog):
    first = train(frozen_cfg("feature_cache.enabled=true", run_name="a"))
    entry = tmp_path / "cache" / f"image-{first['feature_cache']['image/val']['key']}.safetensors"
    entry.write_bytes(b"not a safetensors file")
    again = train(frozen_cfg("feature_cache.enabled=true", run_name="b"))
    assert again["feature_cache"]["image/val"]["reused"] is False
    assert "unreadable" in caplog.text
    assert load_file(str(entry))["pooled"].shape[0] == 32


def test_trainable_or_augmenting_encoders_are_refused_before_training(frozen_cfg):
    with pytest.raises(ValueError, match=r"model.encoders.text: its backbone trains"):
        train(frozen_cfg("feature_cache.enabled=true", "model.encoders.text.freeze=none"))
    with pytest.raises(ValueError, match=r"model.encoders.image: its preprocessing augments"):
        train(frozen_cfg("feature_cache.enabled=true", "model.encoders.image.augment=true"))


def test_building_the_cache_leaves_the_run_as_a_later_cached_run(frozen_cfg):
    """Building the cache draws no random numbers the run would draw: metrics are equal."""
    overrides = ("feature_cache.enabled=true", "fusion=gated", "model.head.dropout=0.3")
    building = train(frozen_cfg(*overrides, run_name="a"))
    reusing = train(frozen_cfg(*overrides, run_name="b"))
    assert not any(entry["reused"] for entry in building["feature_cache"].values())
    assert all(entry["reused"] for entry in reusing["feature_cache"].values())
    assert building["metrics"] == reusing["metrics"]


def test_missing_modalities_and_robustness_run_on_cached_features(frozen_cfg, tmp_path):
    # data.missing marks cached samples as it marks raw ones, and the robustness grid's
    # removing pass scores the cached features: the run with the cache ends where the one
    # without it does (cached features agree with the towers' to float tolerance).
    missing = ("data/missing=case", "data.missing.rate=0.5", "robustness=missing")
    cached = train(frozen_cfg("feature_cache.enabled=true", *missing, run_name="cached"))
    direct = train(frozen_cfg(*missing, run_name="direct"))
    assert cached["feature_cache"] and "feature_cache" not in direct
    grids = {
        name: json.loads(Path(run["robustness"]["file"]).read_text())["conditions"]
        for name, run in (("cached", cached), ("direct", direct))
    }
    assert set(grids["cached"]) == set(grids["direct"]) and len(grids["cached"]) == 23
    for condition, entry in grids["direct"].items():
        assert grids["cached"][condition]["metrics"]["acc"] == pytest.approx(
            entry["metrics"]["acc"], abs=0.03
        ), condition
