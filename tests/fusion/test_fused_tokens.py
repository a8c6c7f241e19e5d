"""The fused token sequence a caption decoder can cross-attend to (fusion=early_tokens)."""

import pytest
import torch

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion import ConcatFusion, EarlyTokenFusion


def features(batch=3, lengths=(4, 6), dim=16):
    torch.manual_seed(0)
    out = {}
    for name, length in zip(("image", "text"), lengths, strict=True):
        mask = torch.ones(batch, length, dtype=torch.bool)
        mask[0, -2:] = False
        tokens = torch.randn(batch, length, dim)
        out[name] = EncoderOutput(tokens, mask, tokens.mean(1))
    return out


def test_the_first_fused_token_is_what_the_strategy_outputs():
    fusion = EarlyTokenFusion(["image", "text"], 16, depth=1, heads=2).eval()
    inputs = features()
    tokens, mask = fusion.fuse_tokens(inputs)
    assert tokens.shape == (3, 1 + 4 + 6, 16) and mask.shape == (3, 11)
    assert mask[0].tolist() == [True] + [True, True, False, False] + [True] * 4 + [False] * 2
    torch.testing.assert_close(tokens[:, 0], fusion(inputs))


def test_padded_tokens_change_no_real_fused_token():
    fusion = EarlyTokenFusion(["image", "text"], 16, depth=2, heads=2).eval()
    inputs = features()
    tokens, mask = fusion.fuse_tokens(inputs)
    inputs["image"].tokens[0, -2:] = 1e3  # padding of sample 0
    changed, _ = fusion.fuse_tokens(inputs)
    torch.testing.assert_close(changed[mask], tokens[mask])


def test_a_strategy_without_fused_tokens_says_which_has_them():
    fusion = ConcatFusion(["image", "text"], 16)
    assert not fusion.gives_tokens
    with pytest.raises(NotImplementedError, match="early_tokens"):
        fusion.fuse_tokens(features())
