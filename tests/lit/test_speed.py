"""Speed options: channels-last, activation checkpointing and compilation keep the maths."""

import pytest
import torch

from mmexp.encoders import HFTextEncoder, TimmImageEncoder
from mmexp.encoders.image_cnn import SmallConvEncoder
from mmexp.lit.speed import apply_speed_options, enable_gradient_checkpointing
from mmexp.train import train
from tests.helpers.tiny_models import TINY_VIT, write_tiny_bert


def _gradients(encoder, inputs):
    encoder.zero_grad()
    encoder(inputs).pooled.square().sum().backward()
    return {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}


def test_channels_last_stores_weights_nhwc_and_gives_the_same_output():
    torch.manual_seed(0)
    encoder = SmallConvEncoder(out_dim=16).eval()
    images = torch.randn(3, 3, 32, 32)
    expected = encoder(images).pooled
    module = torch.nn.Module()
    module.encoders = torch.nn.ModuleDict({"image": encoder})
    applied = apply_speed_options(module, channels_last=True)
    assert applied == {"channels_last": ["image"]}
    conv = next(m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(encoder(images).pooled, expected, rtol=1e-4, atol=1e-5)


def test_timm_checkpointing_recomputes_with_identical_gradients():
    torch.manual_seed(0)
    encoder = TimmImageEncoder(out_dim=16, pretrained=False, **TINY_VIT)
    images = torch.randn(2, 3, 32, 32)
    reference = _gradients(encoder, images)
    assert encoder.set_grad_checkpointing() is True
    assert encoder.backbone.grad_checkpointing
    checkpointed = _gradients(encoder, images)
    assert reference.keys() == checkpointed.keys()
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_hugging_face_checkpointing_recomputes_with_identical_gradients(tmp_path):
    folder = write_tiny_bert(tmp_path / "bert")
    torch.manual_seed(0)
    encoder = HFTextEncoder(out_dim=16, name_or_path=str(folder)).train()
    # no dropout, so that the recomputed forward is the same function
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    processor = encoder.processor(train=True)
    inputs = processor.collate([processor(t) for t in ["a red square", "the big blue circle"]])
    reference = _gradients(encoder, inputs)
    assert enable_gradient_checkpointing({"text": encoder}) == ["text"]
    assert encoder.backbone.is_activation_checkpointing
    checkpointed = _gradients(encoder, inputs)
    for name, grad in reference.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_checkpointing_that_no_encoder_supports_is_refused():
    with pytest.raises(ValueError, match="none of the encoders .*'image'.* supports it"):
        enable_gradient_checkpointing({"image": SmallConvEncoder(out_dim=8)})


def test_unknown_compile_mode_is_named():
    module = torch.nn.Module()
    module.encoders = torch.nn.ModuleDict()
    with pytest.raises(ValueError, match="model.compile_mode must be one of"):
        apply_speed_options(module, compile=True, compile_mode="fastest")


@pytest.mark.slow
def test_compiled_training_runs_records_the_option_and_saves_plain_parameter_names(make_train_cfg):
    result = train(
        make_train_cfg(
            "model.compile=true",
            "trainer.max_epochs=1",
            "data.num_train=64",
            "data.num_val=32",
            "data.num_test=32",
        )
    )
    assert result["speed_options"] == {"compile": "forward"}
    assert result["metrics"]["test/acc"] >= 0
    state = torch.load(result["last_checkpoint"], weights_only=False)["state_dict"]
    assert not any("_orig_mod" in key for key in state)
