"""resolve_run_config decides every config change before building; assemble builds once."""

import inspect
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from mmexp import CONFIG_DIR
from mmexp.assemble import assemble
from mmexp.encoders import HFTextEncoder, SmallConvEncoder, TimmImageEncoder
from mmexp.encoders.hf_text import minilm_encoder
from mmexp.resolve import EVAL_CHECKPOINT_KEY, built_class, resolve_run_config
from mmexp.train import train


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_dir):
    """A contrastive pretraining run with a 64-wide text tower (not the default)."""
    from tests.helpers.configs import FAST_OVERRIDES, compose_config

    cfg = compose_config(
        "train",
        [
            *FAST_OVERRIDES,
            "objective=contrastive",
            "trainer.max_epochs=1",
            "model.encoders.text.width=64",
        ],
        tmp_path_factory.mktemp("pretrain"),
        data_dir,
    )
    return train(cfg)


def as_dict(cfg):
    return OmegaConf.to_container(cfg, resolve=False)


def test_resolving_leaves_the_composed_config_unchanged(make_train_cfg, pretrained):
    cfg = make_train_cfg("finetune=frozen", f"finetune.checkpoint={pretrained['last_checkpoint']}")
    before = as_dict(cfg)
    resolved = resolve_run_config(cfg, "train")
    assert as_dict(cfg) == before
    assert cfg.model.encoders.text.width != 64
    assert resolved.model.encoders.text.width == 64  # the pretraining run's tower
    assert list(resolved.finetune.towers) == ["image", "text"]


@pytest.mark.parametrize(("init", "towers"), [("scratch", ["image", "text"]), ("minilm", ["text"])])
def test_the_towers_a_protocol_applies_to_are_in_the_resolved_config(make_train_cfg, init, towers):
    resolved = resolve_run_config(make_train_cfg("finetune=frozen", f"init={init}"), "train")
    assert list(resolved.finetune.towers) == towers
    run = assemble(resolved, "bench")
    assert run.lineage["towers"] == towers
    frozen = [
        m
        for m, e in run.module.encoders.items()
        if not any(p.requires_grad for p in e.parameters())
    ]
    assert frozen == towers


def test_the_saved_config_is_the_resolved_one(make_train_cfg, pretrained):
    cfg = make_train_cfg(
        "finetune=frozen",
        f"finetune.checkpoint={pretrained['last_checkpoint']}",
        "trainer.max_epochs=1",
    )
    result = train(cfg)
    saved = yaml.safe_load((Path(cfg.paths.output_dir) / "config.yaml").read_text())
    assert saved["model"]["encoders"]["text"]["width"] == 64
    assert saved["finetune"]["towers"] == ["image", "text"]
    assert result["pretrained_from"]["towers"] == ["image", "text"]


def test_eval_resolves_the_run_of_its_checkpoint(tmp_path, data_dir, pretrained):
    from tests.helpers.configs import compose_config

    ckpt = pretrained["last_checkpoint"]
    eval_cfg = compose_config(
        "eval",
        [f"ckpt_path={ckpt}", "overrides=['data.eval_batch_size=16']"],
        tmp_path / "eval",
        data_dir,
    )
    eval_before = as_dict(eval_cfg)
    run_cfg = resolve_run_config(eval_cfg, "eval")
    assert as_dict(eval_cfg) == eval_before
    assert run_cfg.data.eval_batch_size == 16
    assert run_cfg[EVAL_CHECKPOINT_KEY].endswith(".ckpt")
    assert run_cfg.objective.module._target_.endswith("ContrastivePretrainer")


def test_assemble_refuses_an_unknown_purpose_and_an_unresolved_eval(make_train_cfg):
    cfg = resolve_run_config(make_train_cfg(), "train")
    with pytest.raises(ValueError, match="purpose must be one of"):
        assemble(cfg, "predict")
    with pytest.raises(ValueError, match=EVAL_CHECKPOINT_KEY):
        assemble(cfg, "eval")
    with pytest.raises(ValueError, match="purpose must be one of"):
        resolve_run_config(make_train_cfg(), "predict")


def test_built_class_reads_factories_and_classes():
    assert built_class(TimmImageEncoder) is TimmImageEncoder
    assert built_class(minilm_encoder) is HFTextEncoder
    assert built_class(len) is None


def test_loads_pretrained_agrees_with_the_built_encoders():
    assert TimmImageEncoder.loads_pretrained({}) is True  # the signature's default
    assert TimmImageEncoder.loads_pretrained({"pretrained": False}) is False
    assert TimmImageEncoder.loads_pretrained({"pretrained": False, "checkpoint_path": "w.pt"})
    assert inspect.signature(TimmImageEncoder).parameters["pretrained"].default is True
    assert SmallConvEncoder.loads_pretrained({}) is False
    assert SmallConvEncoder(out_dim=8).pretrained is False
    node = yaml.safe_load((Path(CONFIG_DIR) / "model/encoders/text/minilm.yaml").read_text())
    node.pop("_target_")
    assert minilm_encoder(out_dim=8, **node).pretrained is HFTextEncoder.loads_pretrained(node)


def test_eval_builds_encoders_without_their_weights_as_each_class_says():
    from mmexp.resolve import skip_pretrained_weights

    run_cfg = OmegaConf.create(
        {
            "model": {
                "encoders": {
                    "image": {
                        "_target_": "mmexp.encoders.TimmImageEncoder",
                        "name": "resnet18",
                        "pretrained": True,
                        "checkpoint_path": "/weights.safetensors",
                    },
                    "text": {
                        "_target_": "mmexp.encoders.hf_text.minilm_encoder",
                        "pooling": "mean",
                    },
                    "audio": {"_target_": "mmexp.encoders.TimmImageEncoder", "pretrained": True},
                }
            }
        }
    )
    skip_pretrained_weights(run_cfg, keep=["audio"])
    image = run_cfg.model.encoders.image
    assert image.pretrained is False and image.checkpoint_path is None and image.name == "resnet18"
    assert dict(run_cfg.model.encoders.text) == {
        "_target_": "mmexp.encoders.hf_text.minilm_encoder",
        "pooling": "mean",
    }
    assert run_cfg.model.encoders.audio.pretrained is True  # its weights were left out
