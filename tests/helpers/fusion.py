"""Every fusion config, instantiated as the builder does, over random padded features."""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from mmexp.encoders import EncoderOutput
from mmexp.fusion import FusionStrategy

CONF = Path(__file__).resolve().parents[2] / "conf" / "fusion"
CONFIGS = sorted(CONF.glob("*.yaml"))
LENGTHS = {"image": 5, "text": 7, "audio": 4}
MODALITY_SETS = [("image", "text"), ("image", "text", "audio")]
DIM, BATCH, NUM_CLASSES = 16, 4, 3


def strategy_class(path: Path) -> type[FusionStrategy]:
    return get_class(OmegaConf.load(path)._target_)


def build(path: Path, modalities, direct: bool = False, **overrides) -> FusionStrategy:
    """Instantiate a config as the builder does; ``direct`` skips Hydra's exception wrapping."""
    kwargs = {"modalities": list(modalities), "dim": DIM, **overrides}
    cls = strategy_class(path)
    if "num_classes" in inspect.signature(cls).parameters:
        kwargs["num_classes"] = NUM_CLASSES
    config = OmegaConf.to_container(OmegaConf.load(path))
    config.pop("match_params", None)  # a builder option (parameter budget), not an argument
    if direct:
        config.pop("_target_")
        return cls(**{**config, **kwargs})
    return instantiate(config, **kwargs)


def make_features(modalities, seed: int = 0, grad: bool = False) -> dict[str, EncoderOutput]:
    """Random features with padding: sample lengths T, T-2, 1, T-1 (some False mask entries)."""
    generator = torch.Generator().manual_seed(seed)
    features = {}
    for name in modalities:
        length = LENGTHS[name]
        lengths = torch.tensor([length, length - 2, 1, length - 1])
        mask = torch.arange(length)[None, :] < lengths[:, None]
        tokens = torch.randn(BATCH, length, DIM, generator=generator, requires_grad=grad)
        pooled = torch.randn(BATCH, DIM, generator=generator, requires_grad=grad)
        features[name] = EncoderOutput(tokens, mask, pooled)
    return features
