"""Every option of every config group composes and instantiates on CPU."""

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning import Callback

from mmexp.assemble import assemble
from mmexp.builders import build_module, instantiate_datamodule, tower_modalities
from mmexp.encoders.freezing import count_parameters
from mmexp.resolve import resolve_run_config
from mmexp.utils.instantiate import instantiate_group
from tests.helpers.configs import CONF, FAST_OVERRIDES, compose_config


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_default_train_config_has_the_documented_keys(make_train_cfg):
    cfg = make_train_cfg()
    for key in ("task_name", "tags", "seed", "ckpt_path", "train", "test", "monitor"):
        assert key in cfg
    assert cfg.data.modalities == ["image", "text"]
    assert cfg.fusion._target_ == "mmexp.fusion.ConcatFusion"


@pytest.mark.parametrize("trainer", options("trainer"))
def test_trainer_configs_compose(make_train_cfg, trainer):
    cfg = make_train_cfg(f"trainer={trainer}")
    assert cfg.trainer._target_ == "pytorch_lightning.Trainer"
    if trainer in ("cpu", "default", "ddp_cpu"):
        trainer_object = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        expected = 2 if trainer == "ddp_cpu" else 1
        assert trainer_object.num_devices == expected


@pytest.mark.parametrize("logger", options("logger"))
def test_logger_configs_instantiate(make_train_cfg, logger):
    cfg = make_train_cfg(f"logger={logger}")
    loggers = [instantiate(node) for node in cfg.logger.values()]
    assert loggers and all(hasattr(lg, "log_metrics") for lg in loggers)


@pytest.mark.parametrize("callbacks", options("callbacks"))
def test_callback_configs_instantiate(make_train_cfg, callbacks):
    cfg = make_train_cfg(f"callbacks={callbacks}")
    built = instantiate_group(cfg.callbacks, "callbacks")
    assert all(isinstance(callback, Callback) for callback in built)
    assert len(built) == sum(node is not None for node in (cfg.callbacks or {}).values())


@pytest.mark.parametrize("debug", options("debug"))
def test_debug_configs_compose(make_train_cfg, debug):
    cfg = make_train_cfg(f"debug={debug}")
    assert cfg.task_name == "debug" and cfg.logger.get("wandb") is None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_configs_build_a_model(tmp_path, data_dir, experiment):
    # An experiment on a published data set has no shapes sizes to shrink: only the fast
    # settings its data config has apply.
    pinned = compose_config("train", [f"experiment={experiment}"], tmp_path / "probe", data_dir)
    fast = [
        o
        for o in FAST_OVERRIDES
        if not o.startswith("data.") or o.split("=")[0].split(".", 1)[1] in pinned.data
    ]
    image = pinned.model.encoders.get("image")
    if image is not None and image.get("pretrained"):
        fast.append("model.encoders.image.pretrained=false")  # no hub downloads in tests
    cfg = compose_config("train", [*fast, f"experiment={experiment}"], tmp_path / "run", data_dir)
    module = build_module(cfg, num_classes=4)
    assert set(module.encoders) == set(tower_modalities(cfg))
    # a captioner encodes every data modality but the caption it generates
    generated = {"text"} if cfg.objective.module._target_.endswith("MultimodalCaptioner") else set()
    assert set(module.encoders) == set(cfg.data.modalities) - generated


@pytest.mark.parametrize("objective", options("objective"))
def test_objective_configs_build_their_module(make_train_cfg, objective):
    # objective=prompt classifies images, its text tower embedding the class names
    images_only = ["data.modalities=[image]"] if objective == "prompt" else []
    cfg = make_train_cfg(f"objective={objective}", "fusion=cross_attention", *images_only)
    module = build_module(cfg, num_classes=4, label_names=["a", "b", "c", "d"])
    assert type(module).__name__ == cfg.objective.module._target_.rsplit(".", 1)[1]
    assert cfg.monitor == cfg.objective.monitor


@pytest.mark.parametrize("init", ["scratch", "minilm"])
# the prompt protocols freeze both towers of a prompt classifier (coop needs a text tower
# with a prompt adapter, not MiniLM): tests/finetune/test_coop.py, test_zeroshot_protocol.py
@pytest.mark.parametrize(
    "protocol", [p for p in options("finetune") if p not in ("coop", "zeroshot")]
)
def test_finetune_protocols_apply_to_each_init(make_train_cfg, protocol, init):
    cfg = resolve_run_config(make_train_cfg(f"finetune={protocol}", f"init={init}"), "train")
    run = assemble(cfg, "bench")
    module, lineage = run.module, run.lineage
    assert lineage["towers"] == (["image", "text"] if init == "scratch" else ["text"])
    trainable_text = count_parameters(module.encoders["text"])[0]
    assert (trainable_text == count_parameters(module.encoders["text"])[1]) == (protocol == "full")


def test_init_without_a_protocol_is_refused(make_train_cfg):
    with pytest.raises(ValueError, match="no finetuning protocol is chosen"):
        resolve_run_config(make_train_cfg("init=scratch"), "train")


@pytest.mark.parametrize("modalities", ["[image]", "[text]", "[audio]", "[image,text,audio]"])
def test_model_builds_for_each_modality_set(make_train_cfg, modalities):
    cfg = make_train_cfg(f"data.modalities={modalities}")
    module = build_module(cfg, num_classes=3)
    assert list(module.encoders) == list(cfg.data.modalities)


def test_missing_encoder_for_a_modality_is_named(make_train_cfg):
    cfg = make_train_cfg("data.modalities=[image,audio]", "~model/encoders/audio")
    with pytest.raises(KeyError, match=r"model.encoders.audio is not set"):
        build_module(cfg, num_classes=2)


@pytest.mark.parametrize("data", options("data"))
def test_data_configs_instantiate(tmp_path, data_dir, data):
    cfg = compose_config("train", [f"data={data}"], tmp_path / "run", data_dir)
    for key in ("root", "path"):  # where the data live: mandatory for all but shapes
        if key in list(cfg.data) and OmegaConf.is_missing(cfg.data, key):
            cfg.data[key] = str(tmp_path)
    datamodule = instantiate_datamodule(cfg)
    assert list(datamodule.modalities) == list(cfg.data.modalities)


def test_eval_config_requires_a_checkpoint(tmp_path, data_dir):
    from omegaconf.errors import InterpolationResolutionError

    cfg = compose_config("eval", [], tmp_path / "eval", data_dir)
    with pytest.raises(InterpolationResolutionError, match=r"ckpt_path is required: give a"):
        _ = cfg.ckpt_path
    built = compose_config("eval", ["ckpt_path=null"], tmp_path / "eval", data_dir)
    assert built.ckpt_path is None and built.data.task == "redundant"
