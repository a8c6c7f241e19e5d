"""Typed schemas of the keys without ``_target_``: strict types, named by key path."""

import dataclasses

import pytest
from omegaconf import OmegaConf

from mmexp.config_check import ConfigError, check_config
from mmexp.config_schema import (
    FeatureCacheSchema,
    ModelSchema,
    ObjectiveSchema,
    RunSchema,
    check_schemas,
)
from mmexp.train import train
from tests.helpers.configs import CONF, FAST_OVERRIDES, compose_config, problems


def schema_problems(config: dict) -> list[str]:
    found: list[str] = []
    check_schemas(OmegaConf.create(config), found)
    return found


def test_a_non_integer_width_is_named(make_train_cfg):
    assert problems(make_train_cfg("model.width=abc")) == [
        "model.width: expected int, got 'abc' (str)"
    ]
    assert problems(make_train_cfg("model.width=1.5")) == [
        "model.width: expected int, got 1.5 (float)"
    ]


@pytest.mark.parametrize("value", ["no", "false-ish", "0", "'true'"])
def test_only_real_booleans_are_booleans(make_train_cfg, value):
    found = problems(make_train_cfg(f"model.save_frozen_weights={value}"))
    assert len(found) == 1 and found[0].startswith("model.save_frozen_weights: expected bool")
    check_config(make_train_cfg("model.save_frozen_weights=false"))


def test_wrong_types_in_data_trainer_and_feature_cache(make_train_cfg):
    found = problems(
        make_train_cfg(
            "data.on_bad_sample=ignore",
            "trainer.accelerator=3",
            "feature_cache.enabled=no",
            "feature_cache.tokens=sometimes",
        )
    )
    assert sorted(found) == [
        "data.on_bad_sample: expected 'raise' | 'skip', got 'ignore' (str)",
        "feature_cache.enabled: expected bool, got 'no' (str)",
        "feature_cache.tokens: expected 'auto' | bool, got 'sometimes' (str)",
        "trainer.accelerator: expected str, got 3 (int)",
    ]


def test_batch_sizes_and_workers_out_of_range_are_named(make_train_cfg):
    found = problems(
        make_train_cfg("data.batch_size=-3", "data.eval_batch_size=0", "data.num_workers=-1")
    )
    assert sorted(found) == [
        "data.batch_size: must be >= 1, got -3",
        "data.eval_batch_size: must be >= 1, got 0",
        "data.num_workers: must be >= 0, got -1",
    ]
    # the bounds are inclusive, and null still fits an optional count
    check_config(make_train_cfg("data.batch_size=1", "data.num_workers=0"))
    check_config(make_train_cfg("data.eval_batch_size=null"))
    # a wrong type is named once, as a wrong type
    (wrong,) = problems(make_train_cfg("data.eval_batch_size=abc"))
    assert wrong.startswith("data.eval_batch_size: expected int")


def test_top_level_and_objective_keys_are_typed(make_train_cfg):
    found = problems(make_train_cfg("seed=abc", "test=no", "objective.uses_fusion=yes"))
    assert sorted(found) == [
        "objective.uses_fusion: expected bool, got 'yes' (str)",
        "seed: expected int | None, got 'abc' (str)",
        "test: expected bool, got 'no' (str)",
    ]


def test_null_or_missing_where_a_value_is_required(make_train_cfg):
    found = problems(make_train_cfg("model.width=null", "feature_cache.dir=null"))
    assert sorted(found) == [
        "feature_cache.dir: expected str, got None (NoneType)",
        "model.width: expected int, got None (NoneType)",
    ]
    assert problems(make_train_cfg("~model.width")) == ["model.width: missing, expected int"]
    # null is allowed where the code reads it as "none": seed, feature_cache as a whole
    check_config(make_train_cfg("seed=null", "feature_cache=null"))


def test_unknown_keys_of_closed_nodes_are_named(make_train_cfg):
    assert problems(make_train_cfg("+model.chanels_last=true")) == [
        "model.chanels_last: unknown key; did you mean 'channels_last'?"
    ]
    # data sets take keys of their own (shapes: task, num_train ...); their signature judges
    check_config(make_train_cfg("data.task=synergy", "data.num_train=100"))


def test_a_key_the_signature_check_names_is_not_named_twice(make_train_cfg):
    # data.pin_memory is typed by ShapesDataModule and by DataSchema
    assert problems(make_train_cfg("data.pin_memory=no")) == [
        "data.pin_memory: expected bool, got 'no' (str)"
    ]


def test_types_are_strict_and_values_unchanged():
    model = {"encoders": {}, "width": 8, "head": {"_target_": "x"}, "optimizer": {}}
    assert schema_problems({"model": {**model, "compile": 1}}) == [
        "model.compile: expected bool, got 1 (int)"
    ]
    assert schema_problems({"model": {**model, "width": True}}) == [
        "model.width: expected int, got True (bool)"
    ]
    # an int is a float; true is not 1 for a Literal
    assert schema_problems({"data": {"modalities": ["image"], "train_subset": 0.5}}) == []
    assert schema_problems({"feature_cache": {"dir": "d", "tokens": True}}) == []
    assert schema_problems({"tags": ["a", 2]}) == ["tags: expected list[str], got ['a', 2] (list)"]
    assert schema_problems({"data": {"modalities": ["a"], "feature_dims": {"a": "x"}}}) == [
        "data.feature_dims: expected dict[str, int] | None, got {'a': 'x'} (dict)"
    ]
    # ??? and interpolations that do not resolve are left to Hydra
    assert schema_problems({"seed": "???", "study": "${nope}"}) == []


def test_checking_leaves_a_valid_config_as_it_was(make_train_cfg):
    cfg = make_train_cfg("trainer.devices=1", "data.train_subset=0.5")
    before = OmegaConf.to_yaml(cfg)
    check_config(cfg)
    assert OmegaConf.to_yaml(cfg) == before
    assert cfg.data.train_subset == 0.5 and cfg.model.save_frozen_weights is True


def test_train_names_the_key_instead_of_failing_in_the_builder(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    cfg = compose_config("train", [*FAST_OVERRIDES, "model.width=abc"], tmp_path / "run", data_dir)
    with pytest.raises(ConfigError, match=r"model\.width: expected int, got 'abc'"):
        train(cfg)
    assert list(data_dir.iterdir()) == []


@pytest.mark.parametrize("overrides", [[], ["experiment=frozen_fusion_ablation"]])
def test_bench_config_validates_clean(tmp_path, data_dir, overrides):
    check_config(compose_config("bench", overrides, tmp_path / "bench", data_dir))


def test_schema_keys_exist_in_the_shipped_configs(tmp_path, data_dir):
    # A key renamed in conf/ but not here would silently go unchecked.
    def keys(config: str, overrides: list[str]) -> dict:
        cfg = compose_config(config, overrides, tmp_path / "probe", data_dir)
        return OmegaConf.to_container(cfg, resolve=False)

    runs = [keys("train", []), keys("eval", []), keys("bench", [])]
    objectives = [
        keys("train", [f"objective={p.stem}"]) for p in (CONF / "objective").glob("*.yaml")
    ]
    expected = {
        RunSchema: runs,
        ModelSchema: [runs[0]["model"]],
        FeatureCacheSchema: [runs[0]["feature_cache"]],
        ObjectiveSchema: [run["objective"] for run in objectives],
    }
    for schema, nodes in expected.items():
        for spec in dataclasses.fields(schema):
            assert any(spec.name in node for node in nodes), (schema.__name__, spec.name)
