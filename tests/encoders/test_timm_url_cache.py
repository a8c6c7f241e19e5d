import timm
import torch

from mmexp.encoders.timm_image import _url_cached

# Weights timm fetches from a URL (unless the Hugging Face hub serves them).
URL_MODEL = "resnet18.tv_in1k"


def test_url_weights_count_as_cached_once_in_the_torch_hub_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    url = timm.models.get_pretrained_cfg(URL_MODEL).url
    assert url.endswith("/resnet18-f37072fd.pth")
    assert not _url_cached(URL_MODEL)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert torch.hub.get_dir() == str(tmp_path / "torch" / "hub")
    folder.mkdir(parents=True)
    (folder / "resnet18-f37072fd.pth").write_bytes(b"weights")
    assert _url_cached(URL_MODEL)


def test_models_without_url_weights_are_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert not timm.models.get_pretrained_cfg("resnet18d.ra4_e3600_r224_in1k").url  # hub only
    assert not _url_cached("resnet18d.ra4_e3600_r224_in1k")
    assert not _url_cached("resnet18.no_such_tag")
