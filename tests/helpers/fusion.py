"""Every fusion config, instantiated as the builder does, over random padded features."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from mmexp.encoders import EncoderOutput
from mmexp.fusion import FusionStrategy, UnimodalFusion
from mmexp.fusion.cost import fusion_cost

CONF = Path(__file__).resolve().parents[2] / "conf" / "fusion"
CONFIGS = sorted(CONF.glob("*.yaml"))
LENGTHS = {"image": 5, "text": 7, "audio": 4}
MODALITY_SETS = [("image", "text"), ("image", "text", "audio")]
DIM, BATCH, NUM_CLASSES = 16, 4, 3


def strategy_class(path: Path) -> type[FusionStrategy]:
    return get_class(OmegaConf.load(path)._target_)


def strategy_cases() -> list:
    """A ``(config path, modalities)`` param for every config and modality set it accepts."""
    params = []
    for path in CONFIGS:
        fixed = OmegaConf.load(path).get("modality")  # unimodal_<m>: only sets with <m>
        for modalities in MODALITY_SETS:
            if fixed is not None and fixed not in modalities:
                continue
            if len(modalities) >= strategy_class(path).min_modalities:
                params.append(pytest.param(path, modalities, id=f"{path.stem}-{len(modalities)}"))
    return params


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


def run_eval(fusion: FusionStrategy, features) -> torch.Tensor:
    with torch.no_grad():
        return fusion(features)


def check_shape_finite_and_gradients(path, modalities) -> None:
    torch.manual_seed(0)
    fusion = build(path, modalities)
    features = make_features(modalities, grad=True)
    out = fusion(features)
    assert out.shape == (BATCH, fusion.out_dim)
    assert torch.isfinite(out).all()
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    for name, feats in features.items():
        grads = [t.grad for t in (feats.tokens, feats.pooled) if t.grad is not None]
        total = sum(float(g.abs().sum()) for g in grads)
        if isinstance(fusion, UnimodalFusion) and name != fusion.modality:
            assert total == 0.0, name
        else:
            assert total > 0.0, name
        if feats.tokens.grad is not None:  # padded positions never receive gradient
            assert feats.tokens.grad[~feats.mask].abs().sum() == 0.0, name


def check_padding_does_not_change_output(path, modalities) -> None:
    torch.manual_seed(0)
    fusion = build(path, modalities).eval()
    features = make_features(modalities)
    reference = run_eval(fusion, features)
    generator = torch.Generator().manual_seed(2)
    for feats in features.values():
        noise = 100 * torch.randn(feats.tokens.shape, generator=generator)
        feats.tokens[~feats.mask] = noise[~feats.mask]
    torch.testing.assert_close(run_eval(fusion, features), reference, atol=1e-5, rtol=1e-5)


def check_absent_modality_is_ignored(path, modalities) -> None:
    torch.manual_seed(0)
    fusion = build(path, modalities).eval()
    for absent in modalities:
        features = make_features(modalities)
        features[absent].present = torch.tensor([True, False, True, True])
        reference = run_eval(fusion, features)
        assert torch.isfinite(reference).all()
        generator = torch.Generator().manual_seed(3)
        features[absent].tokens[1] = 100 * torch.randn(LENGTHS[absent], DIM, generator=generator)
        features[absent].pooled[1] = 100 * torch.randn(DIM, generator=generator)
        changed = run_eval(fusion, features)
        # Stronger than required: no sample (not only sample 1) may see the placeholder.
        torch.testing.assert_close(changed, reference, atol=1e-5, rtol=1e-5, msg=absent)


def check_sample_without_any_modality_stays_finite(path, modalities) -> None:
    torch.manual_seed(0)
    fusion = build(path, modalities).eval()
    features = make_features(modalities)
    for feats in features.values():
        feats.present = torch.tensor([True, True, False, True])
    assert torch.isfinite(run_eval(fusion, features)).all()


def check_fusion_cost(path) -> None:
    torch.manual_seed(0)
    modalities = MODALITY_SETS[-1]  # all three, so that every unimodal_<m> config applies
    fusion = build(path, modalities).train()
    cost = fusion_cost(fusion, {m: LENGTHS[m] for m in modalities}, DIM)
    assert cost["params"] == sum(p.numel() for p in fusion.parameters())
    if cost["params"] > 0:
        assert cost["flops_per_sample"] > 0
    else:
        assert cost["flops_per_sample"] == 0
    assert fusion.training  # mode restored
