"""Audio encoders over log-mel frames (audio=lstm, audio=cnn1d): padding, masks, training."""

import numpy as np
import pytest
import torch
from torch import nn

from mmexp.builders import build_module
from mmexp.encoders import LogMelConv1dEncoder, LogMelLSTMEncoder
from mmexp.encoders.base import CachedFeatures
from mmexp.encoders.freezing import Trainability, find_blocks
from mmexp.train import train

ENCODERS = [LogMelLSTMEncoder, LogMelConv1dEncoder]
RATE, HOP = 8000, 80
KEY = "model.encoders.audio"


def small(cls, **options):
    torch.manual_seed(0)
    sizes = {"hidden_size": 12} if issubclass(cls, LogMelLSTMEncoder) else {"channels": (8, 16)}
    return cls(out_dim=24, sample_rate=RATE, n_mels=16, **sizes, **options)


# Each audio encoder, the LSTM with both its poolings.
VARIANTS = [
    (LogMelLSTMEncoder, {"pooling": "mean"}),
    (LogMelLSTMEncoder, {"pooling": "final"}),
    (LogMelConv1dEncoder, {}),
]


def clips(*lengths: int) -> list[tuple[np.ndarray, int]]:
    rng = np.random.default_rng(0)
    return [(0.3 * rng.standard_normal(n).astype(np.float32), RATE) for n in lengths]


def batch(encoder, raw):
    processor = encoder.processor(train=False)
    return processor.collate([processor(item) for item in raw])


def settled(encoder):
    """The encoder after a training step's worth of batch statistics, in eval mode."""
    encoder.train()
    with torch.no_grad():
        encoder(batch(encoder, clips(4000, 3000, 2500)))
    return encoder.eval()


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
def test_a_clip_alone_and_beside_longer_clips_gets_the_same_features(cls, options):
    encoder = settled(small(cls, **options))
    short, *_ = raw = clips(1234, 8000, 4000)
    alone = encoder(batch(encoder, [short]))
    padded = encoder(batch(encoder, [raw[1], short, raw[2]]))
    length = int(alone.mask.sum())
    assert alone.mask.all() and padded.mask[1].sum() == length
    assert not padded.mask[1, length:].any()
    torch.testing.assert_close(padded.pooled[1], alone.pooled[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.tokens[1, :length], alone.tokens[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("cls", "options"), VARIANTS)
@pytest.mark.parametrize("training", [False, True])
def test_padding_never_changes_the_outputs(cls, options, training):
    # In training too: batch statistics are taken over the real frames only, so neither
    # what the padding holds nor how much of it there is changes a thing.
    encoder = settled(small(cls, **options)).train(training)
    inputs = batch(encoder, clips(8000, 1500, 3100))
    longer = torch.randn(3, 8000 + 2345)
    real = torch.arange(longer.shape[1]) < inputs["lengths"].unsqueeze(1)
    longer[real] = inputs["waveform"][real[:, :8000]]
    changed = {**inputs, "waveform": longer}
    with torch.no_grad():
        a, b = encoder(inputs), encoder(changed)
    assert b.tokens.shape[1] > a.tokens.shape[1]
    assert torch.equal(a.mask.sum(dim=1), b.mask.sum(dim=1))
    torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.tokens[a.mask], b.tokens[b.mask], atol=1e-5, rtol=0)


def test_lstm_tokens_are_frames_and_the_mask_follows_each_clip_length():
    encoder = small(LogMelLSTMEncoder).eval()
    out = encoder(batch(encoder, clips(8000, 2000, 0)))
    frames = 8000 // HOP + 1
    assert out.tokens.shape == (3, frames, 24) and out.pooled.shape == (3, 24)
    # an empty clip still has the one frame its centred framing gives it
    assert out.mask.sum(dim=1).tolist() == [frames, 2000 // HOP + 1, 1]


@pytest.mark.parametrize(("kernel_size", "stride"), [(5, 2), (3, 3), (4, 2), (1, 1)])
def test_cnn1d_mask_is_downsampled_as_its_strides_downsample_the_frames(kernel_size, stride):
    torch.manual_seed(0)
    encoder = LogMelConv1dEncoder(
        out_dim=8,
        sample_rate=RATE,
        n_mels=8,
        channels=(4, 4),
        kernel_size=kernel_size,
        stride=stride,
    ).eval()
    lengths = [8000, 1000, 50, 0]
    out = encoder(batch(encoder, clips(*lengths)))
    for row, samples in enumerate(lengths):
        # Each clip alone: its token count is the convolutions' own output length.
        alone = encoder(batch(encoder, clips(samples)))
        assert alone.mask.all()
        assert int(out.mask[row].sum()) == alone.tokens.shape[1], (row, samples)
        assert out.mask[row, : alone.tokens.shape[1]].all()
    assert out.tokens.shape[1] == out.mask.shape[1] == int(out.mask[0].sum())


@pytest.mark.parametrize("pooling", ["mean", "final"])
def test_lstm_features_are_the_projected_cell_run_on_the_unpadded_frames(pooling):
    encoder = settled(small(LogMelLSTMEncoder, pooling=pooling))
    short, long = clips(2345, 8000)
    out = encoder(batch(encoder, [long, short]))
    inputs = batch(encoder, [short])
    frames, mask = encoder.frames(inputs["waveform"], inputs["lengths"])
    assert mask.all()
    reference = nn.LSTM(16, 12, batch_first=True, bidirectional=True)
    reference.load_state_dict(encoder.recurrence.rnn.state_dict())
    steps, (hidden, _) = reference(frames)
    length = frames.shape[1]
    tokens = encoder.proj(steps[0])
    torch.testing.assert_close(out.tokens[1, :length], tokens, atol=1e-5, rtol=0)
    if pooling == "mean":
        expected = tokens.mean(dim=0)
    else:  # forward after the last frame, backward after the first
        expected = encoder.proj(torch.cat([hidden[0, 0], hidden[1, 0]]))
    torch.testing.assert_close(out.pooled[1], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", ENCODERS)
def test_split_in_two_for_a_feature_cache_the_encoder_computes_the_same_features(cls):
    encoder = settled(small(cls))
    assert "trains" in encoder.cache_blocker()
    encoder.set_trainability(Trainability("frozen"))
    encoder.train()  # frozen parts stay in eval mode
    assert encoder.cache_blocker() is None
    inputs = batch(encoder, clips(8000, 3000))
    whole = encoder(inputs)
    split = encoder(CachedFeatures(encoder.frozen_features(inputs, tokens=True)))
    assert torch.equal(split.pooled, whole.pooled) and torch.equal(split.tokens, whole.tokens)


def test_cnn1d_stages_are_the_blocks_a_partial_finetuning_trains():
    encoder = LogMelConv1dEncoder(out_dim=8, sample_rate=RATE, channels=(4, 4, 4))
    assert find_blocks(encoder, KEY) == ["stages.0", "stages.1", "stages.2"]
    encoder.set_trainability(Trainability("last_n", 1, key=KEY, after_blocks=True))
    trainable = {name for name, p in encoder.named_parameters() if p.requires_grad}
    assert trainable == {
        "stages.2.conv.weight",
        "stages.2.norm.weight",
        "stages.2.norm.bias",
        "proj.weight",
        "proj.bias",
    }


@pytest.mark.parametrize(
    ("cls", "options", "key"),
    [
        (LogMelLSTMEncoder, {"hidden_size": 0}, "hidden_size"),
        (LogMelLSTMEncoder, {"num_layers": 0}, "num_layers"),
        (LogMelLSTMEncoder, {"n_mels": 0}, "n_mels"),
        (LogMelLSTMEncoder, {"pooling": "last"}, "pooling"),
        (LogMelConv1dEncoder, {"channels": []}, "channels"),
        (LogMelConv1dEncoder, {"channels": [8, 0]}, r"channels\[1\]"),
        (LogMelConv1dEncoder, {"kernel_size": 0}, "kernel_size"),
        (LogMelConv1dEncoder, {"stride": 0}, "stride"),
        (LogMelConv1dEncoder, {"hop_length": 0}, "hop_length"),
    ],
)
def test_bad_settings_are_named_by_key(cls, options, key):
    with pytest.raises(ValueError, match=rf"^model\.encoders\.audio\.{key} must"):
        cls(out_dim=8, sample_rate=RATE, **options)


@pytest.mark.parametrize(
    ("choice", "cls", "sizes"),
    [
        ("lstm", LogMelLSTMEncoder, "model.encoders.audio.hidden_size=16"),
        ("cnn1d", LogMelConv1dEncoder, "model.encoders.audio.channels=[8,16]"),
    ],
)
def test_the_config_builds_and_trains_with_token_level_fusion(make_train_cfg, choice, cls, sizes):
    cfg = make_train_cfg(
        "data.modalities=[image,audio]",
        f"model/encoders/audio={choice}",
        sizes,
        "fusion=cross_attention",
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
    )
    module = build_module(cfg, num_classes=3)
    assert type(module.encoders["audio"]) is cls
    assert module.encoders["audio"].sample_rate == cfg.data.sample_rate
    record = train(cfg)
    assert record["status"] == "completed"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
