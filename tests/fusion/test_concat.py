import pytest
import torch

from mmexp.encoders import EncoderOutput
from mmexp.fusion import ConcatFusion


def features(batch: int, dim: int, names=("image", "text")) -> dict[str, EncoderOutput]:
    return {
        name: EncoderOutput(
            torch.randn(batch, 3, dim),
            torch.ones(batch, 3, dtype=torch.bool),
            torch.randn(batch, dim),
        )
        for name in names
    }


def test_concat_orders_modalities_as_configured():
    feats = features(4, 8)
    fused = ConcatFusion(["text", "image"], dim=8)(feats)
    assert fused.shape == (4, 16)
    assert torch.equal(fused[:, :8], feats["text"].pooled)


def test_concat_names_missing_modality_and_wrong_width():
    with pytest.raises(KeyError, match="audio"):
        ConcatFusion(["image", "audio"], dim=8)(features(2, 8))
    with pytest.raises(ValueError, match="width 8, expected 16"):
        ConcatFusion(["image", "text"], dim=16)(features(2, 8))


def test_encoder_output_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="mask shape"):
        EncoderOutput(torch.zeros(2, 3, 4), torch.ones(2, 5, dtype=torch.bool), torch.zeros(2, 4))
