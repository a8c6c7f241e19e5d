import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mmexp.encoders import HFTextEncoder, TimmImageEncoder, count_parameters
from mmexp.encoders.freezing import Trainability, find_blocks
from mmexp.lit.callbacks import ParameterCountLogger, parameter_counts
from tests.helpers.tiny_models import TINY_VIT, write_tiny_bert

OUT = 16


def vit(**kwargs) -> TimmImageEncoder:
    torch.manual_seed(0)
    return TimmImageEncoder(out_dim=OUT, pretrained=False, **TINY_VIT, **kwargs)


def step(encoder: nn.Module, inputs) -> None:
    """One AdamW step on the trainable parameters, as the LightningModule does."""
    optimizer = torch.optim.AdamW([p for p in encoder.parameters() if p.requires_grad], lr=0.1)
    encoder.train()
    out = encoder(inputs)
    (out.tokens.square().mean() + out.pooled.square().mean()).backward()
    optimizer.step()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> set[str]:
    return {
        name for name, value in module.state_dict().items() if not torch.equal(before[name], value)
    }


def projection_size(in_dim: int) -> int:
    return in_dim * OUT + OUT


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_count_parameters_counts_trainable_and_total():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    assert count_parameters(model) == (4 * 2 + 2, 3 * 4 + 4 + 4 * 2 + 2)


def test_none_trains_everything():
    encoder = vit()
    trainable, total = encoder.parameter_counts()
    assert trainable == total == count_parameters(encoder.backbone)[1] + 2 * projection_size(192)


def test_frozen_backbone_does_not_change_while_the_projection_learns():
    encoder = vit(freeze="frozen")
    before = snapshot(encoder)
    step(encoder, torch.randn(2, 3, 32, 32))
    assert all(p.grad is None and not p.requires_grad for p in encoder.backbone.parameters())
    assert changed(before, encoder) == {
        "proj.weight",
        "proj.bias",
        "pool_proj.weight",
        "pool_proj.bias",
    }
    assert encoder.parameter_counts()[0] == 2 * projection_size(192)


def test_frozen_backbone_stays_in_eval_mode_so_batchnorm_statistics_do_not_move():
    torch.manual_seed(0)
    encoder = TimmImageEncoder(out_dim=OUT, name="resnet10t", pretrained=False, freeze="frozen")
    encoder.train()
    assert encoder.training and encoder.proj.training and not encoder.backbone.training
    assert not any(m.training for m in encoder.backbone.modules())
    before = snapshot(encoder.backbone)
    step(encoder, torch.randn(2, 3, 32, 32))
    assert not changed(before, encoder.backbone)  # running means and variances included


def test_last_n_trains_only_the_last_blocks_and_the_projection():
    encoder = vit(freeze="last_n", trainable_blocks=1)
    step(encoder, torch.randn(2, 3, 32, 32))
    grads = {name for name, p in encoder.named_parameters() if p.grad is not None}
    backbone_grads = {name for name in grads if name.startswith("backbone.")}
    assert backbone_grads and all(n.startswith("backbone.blocks.1.") for n in backbone_grads)
    assert grads - backbone_grads == {
        "proj.weight",
        "proj.bias",
        "pool_proj.weight",
        "pool_proj.bias",
    }
    assert encoder.backbone.blocks[1].training and not encoder.backbone.blocks[0].training
    encoder.eval()
    assert not encoder.backbone.blocks[1].training


def test_lora_trains_only_the_adapters_and_the_projection():
    r = 4
    encoder = vit(lora={"r": r, "alpha": 8, "target_modules": ["qkv"]})
    embed = 192
    lora_size = 2 * r * (embed + 3 * embed)  # two blocks, qkv: 192 -> 576
    assert encoder.parameter_counts()[0] == lora_size + 2 * projection_size(embed)
    before = snapshot(encoder)
    step(encoder, torch.randn(2, 3, 32, 32))
    moved = changed(before, encoder)
    assert moved and all("lora_" in name or "proj" in name for name in moved)
    assert any("lora_B" in name for name in moved)


def test_lora_defaults_to_peft_targets_for_known_transformers(bert_dir):
    r = 2
    encoder = HFTextEncoder(out_dim=OUT, name_or_path=str(bert_dir), lora={"r": r})
    lora_size = 2 * 2 * r * (32 + 32)  # 2 layers x (query, value), 32 -> 32
    assert encoder.parameter_counts()[0] == lora_size + projection_size(32)


def test_last_n_finds_the_blocks_of_hf_and_resnet_backbones(bert_dir):
    encoder = HFTextEncoder(
        out_dim=OUT, name_or_path=str(bert_dir), freeze="last_n", trainable_blocks=1
    )
    trainable = {n for n, p in encoder.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("encoder.layer.1.") for n in trainable)
    resnet = TimmImageEncoder(out_dim=OUT, name="resnet10t", pretrained=False).backbone
    assert find_blocks(resnet, "k") == ["layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"freeze": "partly"}, r"model\.encoders\.image\.freeze must be one of"),
        ({"freeze": "last_n"}, r"trainable_blocks >= 1"),
        ({"trainable_blocks": 2}, r"only applies with model\.encoders\.image\.freeze=last_n"),
        ({"freeze": "last_n", "trainable_blocks": 3}, r"has only 2 blocks"),
        ({"lora": {"rank": 4}}, r"model\.encoders\.image\.lora has unknown keys \['rank'\]"),
        ({"lora": {"r": 4}}, r"lora\.target_modules is required.*'qkv'"),
        ({"lora": {"r": 4, "target_modules": ["nope"]}}, r"target_modules=\['nope'\].*'qkv'"),
    ],
)
def test_invalid_settings_name_the_key(kwargs, match):
    with pytest.raises(ValueError, match=match):
        vit(**kwargs)


def test_blocks_not_found_names_the_key():
    with pytest.raises(ValueError, match=r"model\.encoders\.audio\.freeze=last_n: found no"):
        Trainability("last_n", 1, key="model.encoders.audio").apply(nn.Linear(2, 2))


class RecordingLogger:
    def __init__(self) -> None:
        self.hparams: dict = {}

    def log_hyperparams(self, params: dict) -> None:
        self.hparams.update(params)


def test_parameter_count_logger_writes_counts_of_every_part_to_the_loggers():
    module = nn.Module()
    module.encoders = nn.ModuleDict({"image": vit(freeze="frozen")})
    module.fusion = nn.Linear(OUT, OUT)
    module.head = nn.Linear(OUT, 3)
    logger = RecordingLogger()
    ParameterCountLogger().on_fit_start(SimpleNamespace(loggers=[logger]), module)
    image_trainable, image_total = module.encoders["image"].parameter_counts()
    assert logger.hparams["params/encoders.image/trainable"] == image_trainable
    assert logger.hparams["params/encoders.image/total"] == image_total
    assert logger.hparams["params/head/total"] == OUT * 3 + 3
    expected_total = image_trainable + (OUT * OUT + OUT) + (OUT * 3 + 3)
    assert logger.hparams["params/total/trainable"] == expected_total
    assert set(parameter_counts(module)) == {"encoders.image", "fusion", "head", "total"}


def test_parameter_count_logger_prints_size_and_modes_lightnings_summary_showed(caplog):
    module = nn.Module()
    module.encoders = nn.ModuleDict({"image": vit(freeze="frozen")})
    module.head = nn.Linear(OUT, 3).to(torch.float64)
    module.train()
    with caplog.at_level(logging.INFO, logger="mmexp.lit.callbacks"):
        ParameterCountLogger().on_fit_start(SimpleNamespace(loggers=[]), module)
    image = sum(p.numel() for p in module.encoders.parameters())
    megabytes = (image * 4 + (OUT * 3 + 3) * 8) / 1e6
    frozen = len(list(module.encoders["image"].backbone.modules()))  # eval: the backbone
    everything = len(list(module.modules()))
    assert (
        f"{megabytes:.3f} MB of parameters; modules: {everything - frozen} in train mode, "
        f"{frozen} in eval mode"
    ) in caplog.text
    assert f"{image:,} total" in caplog.text


def test_encoder_configs_build_with_freezing_keys_from_the_command_line(
    make_train_cfg, bert_dir, tmp_path
):
    from mmexp.builders import build_encoders
    from tests.helpers.tiny_models import write_tiny_wav2vec2

    audio_dir = write_tiny_wav2vec2(tmp_path / "wav2vec2")
    cfg = make_train_cfg(
        "data.modalities=[image,text,audio]",
        "model/encoders/image=timm",
        "model.encoders.image.name=vit_tiny_patch16_224",
        "model.encoders.image.pretrained=false",
        "model.encoders.image.img_size=32",
        "model.encoders.image.model_kwargs={depth: 2}",
        "model.encoders.image.lora={r: 2, alpha: 4, target_modules: [qkv]}",
        "model/encoders/text=hf",
        f"model.encoders.text.name_or_path={bert_dir}",
        "model.encoders.text.freeze=last_n",
        "model.encoders.text.trainable_blocks=1",
        "model/encoders/audio=hf",
        f"model.encoders.audio.name_or_path={audio_dir}",
        "model.encoders.audio.freeze=frozen",
    )
    encoders = build_encoders(cfg)
    width = int(cfg.model.width)
    lora_size, projections = 2 * 2 * (192 + 576), 2 * (192 * width + width)
    assert encoders["image"].parameter_counts()[0] == lora_size + projections
    text = encoders["text"]
    assert all(
        n.startswith("encoder.layer.1.")
        for n, p in text.backbone.named_parameters()
        if p.requires_grad
    )
    assert encoders["audio"].parameter_counts()[0] == 32 * width + width
