"""Config validation at start: unknown keys, wrong types and widths, named by key path."""

import json
import re

import pytest
import yaml

from mmexp.builders import build_module
from mmexp.config_check import ConfigError, check_config
from mmexp.train import train
from tests.helpers.configs import CONF, FAST_OVERRIDES, compose_config, problems

# Every option of these groups is composed once; the groups are independent, so the n-th
# options of all of them share one composition (about 20 instead of 80, 0.5 s each).
GROUPS = [
    "data",
    "fusion",
    "objective",
    "trainer",
    "model/encoders/image",
    "model/encoders/text",
    "model/encoders/audio",
    "finetune",
    "init",
    "callbacks",
    "logger",
    "debug",
    "training",
]
# Options coupled to other groups are composed on their own: finetune=coop selects
# objective=prompt, which classifies images only (data.modalities=[image]); the inits of
# public or pretrained towers choose their encoders (an explicit other encoder contradicts
# them, and is refused by name); objective=caption generates the text of data with text.
TOWER_INITS = {"hf_clip", "minilm", "open_clip"}
ALONE = {"finetune": {"coop"}, "objective": {"prompt", "caption"}, "init": TOWER_INITS}
DECODERS = sorted(p.stem for p in (CONF / "objective" / "decoder").glob("*.yaml"))
OPTIONS = {
    group: sorted(
        p.stem for p in (CONF / group).glob("*.yaml") if p.stem not in ALONE.get(group, ())
    )
    for group in GROUPS
}
COMBINED = [
    # vision and video are in no default encoder group; data=mosi|mosei need vision
    # (experiment=mosi adds it), data=cremad|ave video
    [
        "+model/encoders/vision=features",
        "+model/encoders/video=frames",
        *(f"{group}={names[i]}" for group, names in OPTIONS.items() if i < len(names)),
    ]
    for i in range(max(map(len, OPTIONS.values())))
]
# an experiment overrides groups: each is composed on its own
EXPERIMENTS = [[f"experiment={p.stem}"] for p in sorted((CONF / "experiment").glob("*.yaml"))]
COUPLED = [
    ["finetune=coop"],
    ["objective=prompt", "data.modalities=[image]"],
    *([f"init={name}", "finetune=full"] for name in sorted(TOWER_INITS)),
    *(["objective=caption", f"objective/decoder={name}"] for name in DECODERS),
]
SHIPPED = [
    *COMBINED,
    *EXPERIMENTS,
    *COUPLED,
    ["hparams_search=shapes_optuna"],
    ["+model/encoders/video=hf", "data.modalities=[image,video]"],
    ["launcher=slurm"],
]


@pytest.mark.parametrize(
    "overrides", SHIPPED, ids=lambda overrides: ",".join(overrides[1:3] or overrides)
)
def test_every_shipped_config_validates_clean(tmp_path, data_dir, overrides):
    # composed as is: data.root=??? and other mandatory values are left unresolved
    check_config(compose_config("train", overrides, tmp_path / "run", data_dir))


def test_eval_config_validates_clean(tmp_path, data_dir):
    check_config(compose_config("eval", [], tmp_path / "eval", data_dir))


def test_unknown_key_is_named_with_the_closest_parameter(make_train_cfg):
    found = problems(make_train_cfg("fusion=gated", "+fusion.hiden_dim=8"))
    assert found == [
        "fusion.hiden_dim: unknown key for mmexp.fusion.GatedFusion; did you mean 'hidden_dim'?"
    ]
    found = problems(make_train_cfg("+trainer.max_epoch=3"))
    assert found == [
        "trainer.max_epoch: unknown key for pytorch_lightning.Trainer; did you mean 'max_epochs'?"
    ]
    found = problems(make_train_cfg("+data.zzz=1"))
    assert found == ["data.zzz: unknown key for mmexp.data.shapes_datamodule.ShapesDataModule"]


def test_keys_passed_on_to_the_parent_class_are_known(make_train_cfg):
    # ShapesDataModule takes **loader_options and hands them to ManifestDataModule
    check_config(make_train_cfg("data.batch_size=16", "data.on_bad_sample=skip"))
    found = problems(make_train_cfg("+data.batch_sise=16"))
    assert found[0].startswith("data.batch_sise: unknown key") and "'batch_size'" in found[0]


def test_wrong_types_are_named(make_train_cfg):
    assert problems(make_train_cfg("trainer.max_epochs=ten")) == [
        "trainer.max_epochs: expected int | None, got 'ten' (str)"
    ]
    found = problems(
        make_train_cfg(
            "data.modalities=image",
            "model.head.dropout=true",
            "model.encoders.image.channels=[16,x]",
        )
    )
    assert "data.modalities: expected Sequence[str], got 'image' (str)" in found
    assert "model.head.dropout: expected float, got True (bool)" in found  # bool is not a number
    assert any(p.startswith("model.encoders.image.channels: expected") for p in found)
    check_config(make_train_cfg("model.head.dropout=0", "trainer.gradient_clip_val=null"))


def test_missing_required_parameter_unless_the_code_injects_it(make_train_cfg):
    found = problems(
        make_train_cfg(
            "+callbacks.extra._target_=pytorch_lightning.callbacks.LearningRateMonitor",
            "+callbacks.stop._target_=mmexp.fusion.ConcatFusion",
        )
    )
    # fusion's modalities and dim are injected by the builder, not a callback's
    assert found == [
        "callbacks.stop.modalities: missing, required by mmexp.fusion.ConcatFusion",
        "callbacks.stop.dim: missing, required by mmexp.fusion.ConcatFusion",
    ]


def test_unimportable_target_is_named(make_train_cfg):
    found = problems(make_train_cfg("++callbacks.lr_monitor._target_=mmexp.nope.Nope"))
    assert len(found) == 1 and found[0].startswith("callbacks.lr_monitor._target_: cannot import")


def _exported_strategies() -> list[str]:
    import mmexp.fusion

    return [name for name in mmexp.fusion.__all__ if name != "FusionStrategy"]


def test_an_unknown_fusion_target_lists_the_strategies_of_mmexp_fusion(make_train_cfg):
    found = problems(make_train_cfg("fusion._target_=mmexp.fusion.Nope"))
    assert len(found) == 1
    assert found[0].startswith("fusion._target_: cannot import 'mmexp.fusion.Nope'")
    listed = re.findall(r"mmexp\.fusion\.(\w+) \(fusion=(\w+)\)", found[0])
    assert sorted(name for name, _ in listed) == sorted(_exported_strategies())
    # each choice is a config of the fusion group that builds that class
    for name, choice in listed:
        config = yaml.safe_load((CONF / "fusion" / f"{choice}.yaml").read_text())
        assert config["_target_"] == f"mmexp.fusion.{name}"


def test_a_fusion_target_that_is_no_strategy_lists_them_too(make_train_cfg):
    with pytest.raises(TypeError, match="is not a FusionStrategy") as caught:
        build_module(make_train_cfg("fusion._target_=torch.nn.Identity"), num_classes=3)
    for name in _exported_strategies():
        assert f"mmexp.fusion.{name} (fusion=" in str(caught.value)


def test_mismatched_widths_name_both_keys(tmp_path, data_dir, make_train_cfg):
    assert problems(make_train_cfg("fusion=early_tokens", "fusion.heads=3")) == [
        "fusion.heads: 3 heads do not divide model.width=128"
    ]
    check_config(make_train_cfg("fusion=mult", "model.width=100"))  # 4 heads divide 100
    assert problems(make_train_cfg("model.encoders.text.heads=5")) == [
        "model.encoders.text.heads: 5 heads do not divide model.encoders.text.width=96"
    ]
    cfg = compose_config(
        "train",
        ["experiment=mosi", "model.encoders.audio.input_dim=10", "model.encoders.vision.heads=3"],
        tmp_path / "run",
        data_dir,
    )
    assert problems(cfg) == [
        "model.encoders.audio.input_dim=10 does not match data.feature_dims.audio=5",
        "model.encoders.vision.heads: 3 heads do not divide model.width=64",
    ]
    assert problems(make_train_cfg("data.modalities=[image,audio]", "~model/encoders/audio")) == [
        "data.modalities: includes 'audio' but model.encoders.audio is not set"
    ]


def test_every_problem_is_reported_at_once(make_train_cfg):
    found = problems(
        make_train_cfg(
            "fusion=early_tokens",
            "fusion.heads=3",
            "+fusion.hiden_dim=8",
            "trainer.max_epochs=ten",
            "+callbacks.early_stopping.patiance=2",
        )
    )
    assert sorted(p.split(":")[0] for p in found) == [
        "callbacks.early_stopping.patiance",
        "fusion.heads",
        "fusion.hiden_dim",
        "trainer.max_epochs",
    ]


def test_train_fails_before_generating_data(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cfg = compose_config(
        "train", [*FAST_OVERRIDES, "+trainer.max_epoch=3"], tmp_path / "run", data_dir
    )
    with pytest.raises(ConfigError, match=r"trainer\.max_epoch: unknown key"):
        train(cfg)
    assert list(data_dir.iterdir()) == []
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["status"] == "failed" and "trainer.max_epoch" in saved["error"]
    assert not (tmp_path / "run" / "checkpoints").exists()
