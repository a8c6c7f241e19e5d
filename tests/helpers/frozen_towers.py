"""Fixtures: frozen towers with fixed weights (a timm checkpoint file and a saved BERT).

Registered for every test module through ``pytest_plugins`` in ``tests/conftest.py``.
"""

import pytest
import torch

from tests.helpers.tiny_models import TINY_VIT, tiny_vit_backbone, write_tiny_bert

FROZEN_TOWERS = [
    "data.num_train=96",
    "data.num_val=32",
    "data.num_test=32",
    "data.batch_size=16",
    "trainer.max_epochs=1",
    "model/encoders/image=timm",
    f"model.encoders.image.name={TINY_VIT['name']}",
    "model.encoders.image.pretrained=false",
    f"model.encoders.image.img_size={TINY_VIT['img_size']}",
    "+model.encoders.image.model_kwargs.depth=2",
    "model.encoders.image.freeze=frozen",
    "model/encoders/text=hf",
    "model.encoders.text.freeze=frozen",
]


def write_vit_weights(path, seed):
    """Save a randomly initialised tiny ViT (``seed``) as a timm checkpoint file."""
    torch.manual_seed(seed)
    torch.save(tiny_vit_backbone().state_dict(), path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return write_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def vit_weights(tmp_path_factory):
    return write_vit_weights(tmp_path_factory.mktemp("vit") / "vit.pth", seed=0)


@pytest.fixture
def frozen_cfg(make_train_cfg, bert_dir, vit_weights, tmp_path):
    """``frozen_cfg(*overrides, run_name=...)``: a run config over the two frozen towers."""

    def make(*overrides, run_name="run"):
        return make_train_cfg(
            *FROZEN_TOWERS,
            f"model.encoders.text.name_or_path={bert_dir}",
            f"model.encoders.image.checkpoint_path={vit_weights}",
            f"feature_cache.dir={tmp_path / 'cache'}",
            *overrides,
            run_name=run_name,
        )

    return make
