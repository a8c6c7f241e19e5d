"""Every fusion config, instantiated as the builder does, over random padded features."""

from __future__ import annotations

import inspect
from itertools import combinations
from pathlib import Path

import pytest
import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from mmexp.encoders import EncoderOutput
from mmexp.fusion import FusionStrategy, UnimodalFusion
from mmexp.fusion.base import takes_modalities
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
            if takes_modalities(strategy_class(path), len(modalities)):
                params.append(pytest.param(path, modalities, id=f"{path.stem}-{len(modalities)}"))
    return params


def widest_modalities(config: str | Path) -> tuple[str, ...]:
    """The largest of :data:`MODALITY_SETS` that a strategy config takes.

    ``config`` is a shipped strategy's name (``conf/fusion/<name>.yaml``) or the path of any
    strategy config (a guide's own). Three modalities where it is defined for them, else two
    (the bilinear poolings).
    """
    path = config if isinstance(config, Path) else CONF / f"{config}.yaml"
    cls = strategy_class(path)
    return next(m for m in reversed(MODALITY_SETS) if takes_modalities(cls, len(m)))


def modalities_override(modalities) -> str:
    """The ``data.modalities=[...]`` override of ``modalities``."""
    return f"data.modalities=[{','.join(modalities)}]"


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


def presence_rows(modalities) -> list[tuple[bool, ...]]:
    """Every presence pattern with at least one modality, as rows of a ``[B, M]`` matrix."""
    count = len(modalities)
    return [
        tuple(i in subset for i in range(count))
        for size in range(1, count + 1)
        for subset in combinations(range(count), size)
    ]


def rows_without(modalities, absent) -> list[tuple[bool, ...]]:
    """Every pattern of the other modalities with at least one of them; ``absent`` in none."""
    rest = [m for m in modalities if m not in absent]
    return [
        tuple(row[rest.index(m)] if m in rest else False for m in modalities)
        for row in presence_rows(rest)
    ]


def as_present(features, value: float) -> dict[str, EncoderOutput]:
    """Every modality marked present, absent pooled vectors replaced by ``value``."""
    return {
        m: EncoderOutput(f.tokens, f.mask, f.pooled.masked_fill(~f.present[:, None], value))
        for m, f in features.items()
    }


def placeholder(kind: str, shape, seed: int = 0) -> torch.Tensor:
    """Values a data path may leave where features are missing: NaN, noise or near-overflow."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "nan":
        return torch.full(shape, float("nan"))
    if kind == "zeros":
        return torch.zeros(shape)
    noise = torch.randn(shape, generator=generator)
    if kind == "random":
        return 100 * noise
    if kind == "huge":  # a product of two overflows to inf, and inf * 0 is NaN
        return 1e38 * noise.sign()
    raise ValueError(f"unknown placeholder kind {kind!r}")


def subset_features(
    modalities, rows, fill: str = "nan", empty_absent: bool = False, seed: int = 0
) -> dict[str, EncoderOutput]:
    """One sample per presence row, padded, with ``fill`` in padded tokens and absent rows.

    The real values depend on ``seed`` only, so two calls that differ in ``fill`` or
    ``empty_absent`` differ in placeholders alone. ``empty_absent`` also gives absent rows
    no real token (all-False mask), as when the encoder did not run on them.
    """
    generator = torch.Generator().manual_seed(seed)
    present = torch.tensor(rows, dtype=torch.bool)
    batch = len(rows)
    features = {}
    for index, name in enumerate(modalities):
        length = LENGTHS[name]
        mask = torch.arange(length)[None, :] < 1 + torch.arange(batch)[:, None] % length
        tokens = torch.randn(batch, length, DIM, generator=generator)
        pooled = torch.randn(batch, DIM, generator=generator)
        absent = ~present[:, index]
        if empty_absent:
            mask[absent] = False
        tokens = torch.where(mask[..., None], tokens, placeholder(fill, tokens.shape, seed + 1))
        tokens[absent] = placeholder(fill, tokens[absent].shape, seed + 2)
        pooled[absent] = placeholder(fill, pooled[absent].shape, seed + 3)
        features[name] = EncoderOutput(tokens, mask, pooled, present[:, index].clone())
    return features


def absent_placeholder(batch: int, fill: str = "zeros") -> EncoderOutput:
    """A modality absent from the whole batch, built without its encoder: one masked token."""
    return EncoderOutput(
        placeholder(fill, (batch, 1, DIM)),
        torch.zeros(batch, 1, dtype=torch.bool),
        placeholder(fill, (batch, DIM)),
        torch.zeros(batch, dtype=torch.bool),
    )


def select_rows(features, index) -> dict[str, EncoderOutput]:
    """The samples ``index`` (a slice or boolean mask) of every modality's features."""
    return {
        name: EncoderOutput(f.tokens[index], f.mask[index], f.pooled[index], f.present[index])
        for name, f in features.items()
    }


def sample_alone(features, index: int) -> dict[str, EncoderOutput]:
    """Sample ``index`` as a batch of its own would bring it: padded to its own length only.

    A modality the sample lacks becomes the one-token placeholder of an absent modality.
    """
    alone = {}
    for name, f in features.items():
        if not f.present[index]:
            alone[name] = absent_placeholder(1, "nan")
            continue
        length = int(f.mask[index].sum())  # real tokens come first
        row = slice(index, index + 1)
        alone[name] = EncoderOutput(
            f.tokens[row, :length], f.mask[row, :length], f.pooled[row], f.present[row]
        )
    return alone


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
    # All three where the strategy takes them, so that every unimodal_<m> config applies.
    modalities = widest_modalities(path)
    fusion = build(path, modalities).train()
    cost = fusion_cost(fusion, {m: LENGTHS[m] for m in modalities}, DIM)
    assert cost["params"] == sum(p.numel() for p in fusion.parameters())
    if cost["params"] > 0:
        assert cost["flops_per_sample"] > 0
    else:
        assert cost["flops_per_sample"] == 0
    assert fusion.training  # mode restored
