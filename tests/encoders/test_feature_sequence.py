"""Encoders for array data: feature sequences (MOSI/MOSEI) and one-channel arrays (AV-MNIST)."""

import numpy as np
import pytest
import torch

from mmexp.encoders.array_image import LeNetEncoder
from mmexp.encoders.feature_sequence import FeatureSequenceEncoder


def batch_of(encoder, *lengths, width=6, seed=0):
    rng = np.random.default_rng(seed)
    processor = encoder.processor(train=False)
    return processor.collate([processor(rng.normal(size=(n, width))) for n in lengths])


def test_processor_pads_at_the_end_and_masks_real_steps():
    encoder = FeatureSequenceEncoder(out_dim=8, input_dim=6, heads=2)
    batch = batch_of(encoder, 3, 5, 0)
    assert batch["features"].shape == (3, 5, 6)
    assert batch["mask"].sum(1).tolist() == [3, 5, 1]  # an empty sequence: one zero step
    assert not batch["features"][0, 3:].any() and not batch["features"][2].any()


@pytest.mark.parametrize("kind", ["transformer", "gru"])
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_padding_does_not_change_the_features_of_a_sequence(kind, pooling):
    torch.manual_seed(0)
    encoder = FeatureSequenceEncoder(
        out_dim=16, input_dim=6, kind=kind, depth=2, heads=2, pooling=pooling
    ).eval()
    alone = encoder(batch_of(encoder, 4))
    padded = encoder(batch_of(encoder, 4, 9))  # same first sequence (same seed), padded to 9
    assert padded.tokens.shape == (2, 9, 16) and padded.mask[0].sum() == 4
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)
    assert torch.allclose(alone.tokens[0], padded.tokens[0, :4], atol=1e-5)


def test_last_pooling_takes_the_last_real_step():
    encoder = FeatureSequenceEncoder(out_dim=8, input_dim=6, kind="gru", pooling="last").eval()
    out = encoder(batch_of(encoder, 2, 5))
    assert torch.equal(out.pooled[0], out.tokens[0, 1])
    assert torch.equal(out.pooled[1], out.tokens[1, 4])


def test_processor_refuses_another_feature_width_and_truncates():
    processor = FeatureSequenceEncoder(out_dim=8, input_dim=5, max_length=3).processor(True)
    with pytest.raises(ValueError, match=r"\[T, 5\] feature sequence, got shape \[50, 74\]"):
        processor(np.zeros((50, 74), np.float32))
    assert processor(np.ones((10, 5), np.float32)).shape == (3, 5)


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureSequenceEncoder(out_dim=8, modality="audio", input_dim=5, kind="lstm")


@pytest.mark.parametrize(
    ("modality", "side", "layers", "channels"), [("image", 28, 3, 48), ("audio", 112, 5, 192)]
)
def test_lenet_reduces_multibench_inputs_to_one_cell(modality, side, layers, channels):
    encoder = LeNetEncoder(
        out_dim=32, modality=modality, input_size=(side, side), additional_layers=layers
    )
    assert encoder.proj.in_features == channels  # 48 + 192 = MultiBench's 240 features
    processor = encoder.processor(train=True)
    arrays = [np.random.default_rng(i).uniform(0, 1, side * side) for i in range(3)]
    out = encoder(processor.collate([processor(a) for a in arrays]))
    assert out.tokens.shape == (3, 1, 32) and out.mask.all() and encoder.modality == modality


def test_lenet_refuses_wrong_sizes():
    processor = LeNetEncoder(out_dim=8).processor(train=False)
    with pytest.raises(ValueError, match=r"expected a 28x28 array, got shape \[112, 112\]"):
        processor(np.zeros((112, 112), np.float32))
    with pytest.raises(ValueError, match="below one cell"):
        LeNetEncoder(out_dim=8, input_size=(28, 28), additional_layers=5)


def test_batch_standardisation_ignores_padding_and_takes_one_step():
    encoder = FeatureSequenceEncoder(out_dim=8, input_dim=6, heads=2).train()
    batch = batch_of(encoder, 3, 7)
    batch["features"][:, :, 0] += 1000.0 * batch["mask"]  # a feature on another scale
    encoder(batch)
    # One update (momentum 0.1) from the 10 real steps at ~1000; with the 4 padding steps
    # the mean would be ~714 and the running mean ~71.
    assert float(encoder.norm_in.running_mean[0]) == pytest.approx(100.0, abs=1.0)
    single = batch_of(encoder, 1)
    assert encoder(single).pooled.isfinite().all()
