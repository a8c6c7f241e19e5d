import pickle

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.data import resolve_model_data_config

from mmexp.encoders import TimmImageEncoder
from tests.helpers.tiny_models import TINY_VIT, tiny_vit_backbone


def _images(n: int = 2, size: tuple[int, int] = (48, 40)) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)) for _ in range(n)
    ]


def tiny_vit_encoder(**kwargs) -> TimmImageEncoder:
    return TimmImageEncoder(out_dim=16, pretrained=False, **TINY_VIT, **kwargs)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_path_loads_the_saved_weights(tmp_path, suffix):
    source = tiny_vit_backbone()
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    encoder = tiny_vit_encoder(checkpoint_path=str(path))
    loaded = encoder.backbone.state_dict()
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_vit_gives_prefix_and_patch_tokens_and_a_projected_pooled_vector():
    encoder = tiny_vit_encoder().eval()
    processor = encoder.processor(train=False)
    batch = processor.collate([processor(image) for image in _images()])
    assert batch.shape == (2, 3, 32, 32)
    out = encoder(batch)
    assert out.tokens.shape == (2, 1 + 4, 16)  # class token + 2 x 2 patches of 16 px
    assert out.mask.all() and out.pooled.shape == (2, 16)
    features = encoder.backbone.forward_features(batch)
    expected = encoder.pool_proj(encoder.backbone.forward_head(features, pre_logits=True))
    assert torch.allclose(out.pooled, expected)


def test_cnn_feature_map_cells_are_tokens_and_img_size_sets_the_input_size():
    # resnet10t has no img_size argument: the size only reaches the preprocessing.
    encoder = TimmImageEncoder(out_dim=8, name="resnet10t", pretrained=False, img_size=64).eval()
    processor = encoder.processor(train=False)
    batch = processor.collate([processor(image) for image in _images(3)])
    assert batch.shape == (3, 3, 64, 64)
    out = encoder(batch)
    assert out.tokens.shape == (3, 2 * 2, 8)  # stride 32
    assert out.mask.all() and out.pooled.shape == (3, 8)


def test_processor_follows_the_model_data_config_and_pickles():
    encoder = TimmImageEncoder(out_dim=8, name="resnet10t", pretrained=False)
    config = resolve_model_data_config(encoder.backbone)
    assert encoder.data_config == config
    processor = pickle.loads(pickle.dumps(encoder.processor(train=False)))
    image = _images(1, size=(300, 200))[0]
    pixels = processor(image)
    assert pixels.shape == config["input_size"]
    normalize = processor.transform.transforms[-1]
    assert tuple(normalize.mean.tolist()) == pytest.approx(config["mean"])
    assert tuple(normalize.std.tolist()) == pytest.approx(config["std"])
    # Without augment the training split gets the evaluation transform.
    assert repr(encoder.processor(train=True).transform) == repr(processor.transform)


def test_augment_uses_timm_training_transform_on_the_training_split_only():
    encoder = TimmImageEncoder(
        out_dim=8, name="resnet10t", pretrained=False, img_size=48, augment=True
    )
    train = pickle.loads(pickle.dumps(encoder.processor(train=True)))
    assert "RandomResizedCrop" in repr(train.transform)
    assert "RandomResizedCrop" not in repr(encoder.processor(train=False).transform)
    assert train(_images(1)[0]).shape == (3, 48, 48)


def test_unknown_name_names_the_key_and_suggests_close_names():
    with pytest.raises(
        ValueError, match=r"model\.encoders\.image\.name='vit_smal_patch16_224'"
    ) as info:
        TimmImageEncoder(out_dim=8, name="vit_smal_patch16_224", pretrained=False)
    assert "vit_small_patch16_224" in str(info.value)


def test_missing_checkpoint_file_names_the_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.encoders\.image\.checkpoint_path"):
        TimmImageEncoder(out_dim=8, name="resnet10t", checkpoint_path=str(tmp_path / "no.pth"))


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_pretrained_offline_without_cached_weights_says_how_to_load_a_local_copy(empty_caches):
    with pytest.raises(RuntimeError, match="could not be fetched") as info:
        TimmImageEncoder(out_dim=8, name="resnet10t", pretrained=True)
    message = str(info.value)
    assert "'resnet10t'" in message and "model.encoders.image.checkpoint_path=" in message
    assert "HF_HUB_OFFLINE" in message


def test_pretrained_offline_loads_weights_from_the_hub_cache(empty_caches):
    # Lay out the cache as huggingface_hub does: refs/main -> snapshots/<commit>/<file>.
    hub_id = timm.models.get_pretrained_cfg(TINY_VIT["name"]).hf_hub_id
    repo = empty_caches / f"models--{hub_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    source = tiny_vit_backbone()
    save_file(source.state_dict(), str(repo / "snapshots" / commit / "model.safetensors"))
    encoder = TimmImageEncoder(out_dim=8, pretrained=True, **TINY_VIT)
    assert torch.equal(encoder.backbone.blocks[1].mlp.fc1.weight, source.blocks[1].mlp.fc1.weight)
