"""``uses_tokens`` tells the feature cache the truth: only token readers react to tokens."""

import pytest
import torch
from omegaconf import OmegaConf

from mmexp.encoders import EncoderOutput
from tests.helpers.fusion import CONFIGS, build, make_features, strategy_class


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_output_depends_on_tokens_exactly_when_the_strategy_says_so(path):
    only = OmegaConf.load(path).get("modality")  # unimodal_<m> reads <m> alone
    modalities = ("image", only if only not in (None, "image") else "text")
    fixed = strategy_class(path)
    torch.manual_seed(0)
    fusion = build(path, modalities).eval()
    features = make_features(modalities)
    other_tokens = {
        name: EncoderOutput(torch.randn_like(f.tokens), f.mask, f.pooled)
        for name, f in features.items()
    }
    with torch.no_grad():
        changed = not torch.allclose(fusion(features), fusion(other_tokens))
    assert changed == fixed.uses_tokens
