"""Recurrent text encoders (text=lstm, text=gru): padding, the packed recurrence, training."""

import pytest
import torch
from torch import nn

from mmexp.builders import build_module
from mmexp.encoders import GRUTextEncoder, LSTMTextEncoder, SmallTextTransformer
from mmexp.encoders.base import CachedFeatures
from mmexp.encoders.freezing import Trainability
from mmexp.train import train

ENCODERS = [LSTMTextEncoder, GRUTextEncoder]
SHORT, LONGER = "a red box", "a much longer caption than the first one"


def small(cls, **options):
    torch.manual_seed(0)
    return cls(out_dim=24, embed_dim=8, hidden_size=12, **options).eval()


def batch(encoder, texts):
    processor = encoder.processor(train=False)
    return processor.collate([processor(text) for text in texts])


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize(("layers", "pooling"), [(1, "mean"), (1, "final"), (2, "final")])
def test_a_text_alone_and_beside_longer_texts_gets_the_same_features(cls, layers, pooling):
    encoder = small(cls, num_layers=layers, pooling=pooling)
    alone = encoder(batch(encoder, [SHORT]))
    padded = encoder(batch(encoder, [LONGER, SHORT, "x"]))
    length = int(alone.mask.sum())
    assert alone.mask.all() and padded.mask[1].sum() == length
    torch.testing.assert_close(padded.pooled[1], alone.pooled[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.tokens[1, :length], alone.tokens[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls", ENCODERS)
@pytest.mark.parametrize("pooling", ["mean", "final"])
def test_pad_token_values_never_change_the_outputs(cls, pooling):
    encoder = small(cls, pooling=pooling)
    inputs = batch(encoder, [LONGER, SHORT])
    changed = {**inputs, "input_ids": inputs["input_ids"].clone()}
    pads = ~inputs["attention_mask"]
    assert pads.any()
    changed["input_ids"][pads] = torch.randint(3, 259, (int(pads.sum()),))
    a, b = encoder(inputs), encoder(changed)
    assert torch.equal(a.pooled, b.pooled) and torch.equal(a.tokens, b.tokens)


@pytest.mark.parametrize("cls", ENCODERS)
def test_tokens_mask_and_pooled_shapes(cls):
    encoder = small(cls)
    inputs = batch(encoder, [LONGER, SHORT])
    out = encoder(inputs)
    length = inputs["input_ids"].shape[1]
    assert out.tokens.shape == (2, length, 24) and out.pooled.shape == (2, 24)
    assert torch.equal(out.mask, inputs["attention_mask"])
    # ByT5: one token per byte and the end-of-sequence token
    assert out.mask.sum(dim=1).tolist() == [len(LONGER) + 1, len(SHORT) + 1]


@pytest.mark.parametrize(("cls", "cell"), [(LSTMTextEncoder, nn.LSTM), (GRUTextEncoder, nn.GRU)])
@pytest.mark.parametrize("pooling", ["mean", "final"])
def test_features_are_the_projected_cell_run_on_the_unpadded_text(cls, cell, pooling):
    encoder = small(cls, pooling=pooling)
    out = encoder(batch(encoder, [LONGER, SHORT]))
    reference = cell(8, 12, batch_first=True, bidirectional=True)
    reference.load_state_dict(encoder.recurrence.rnn.state_dict())
    ids = batch(encoder, [SHORT])["input_ids"]
    steps, state = reference(encoder.embed(ids))
    hidden = state[0] if isinstance(state, tuple) else state
    length = ids.shape[1]
    tokens = encoder.proj(steps[0])
    torch.testing.assert_close(out.tokens[1, :length], tokens, atol=1e-5, rtol=0)
    if pooling == "mean":
        expected = tokens.mean(dim=0)
    else:  # forward after the last byte, backward after the first
        expected = encoder.proj(torch.cat([hidden[0, 0], hidden[1, 0]]))
    torch.testing.assert_close(out.pooled[1], expected, atol=1e-5, rtol=0)


def test_the_recurrent_encoders_read_the_transformers_tokenizer():
    lstm, transformer = small(LSTMTextEncoder), SmallTextTransformer(out_dim=8, width=8, heads=2)
    texts = [SHORT, "déjà vu"]
    mine, theirs = batch(lstm, texts), batch(transformer, texts)
    assert torch.equal(mine["input_ids"], theirs["input_ids"])
    assert lstm.embed.num_embeddings == transformer.embed.num_embeddings


def test_split_in_two_for_a_feature_cache_the_encoder_computes_the_same_features():
    encoder = small(LSTMTextEncoder)
    encoder.set_trainability(Trainability("frozen"))
    assert encoder.cache_blocker() is None  # frozen: its outputs can be cached
    inputs = batch(encoder, [LONGER, SHORT])
    whole = encoder(inputs)
    split = encoder(CachedFeatures(encoder.frozen_features(inputs, tokens=True)))
    assert torch.equal(split.pooled, whole.pooled) and torch.equal(split.tokens, whole.tokens)
    assert "trains" in small(GRUTextEncoder).cache_blocker()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"hidden_size": 0}, "hidden_size"),
        ({"num_layers": 0}, "num_layers"),
        ({"embed_dim": 0}, "embed_dim"),
        ({"max_length": 0}, "max_length"),
        ({"dropout": -0.1}, "dropout"),
        ({"pooling": "max"}, "pooling"),
    ],
)
def test_bad_settings_are_named_by_key(options, key):
    with pytest.raises(ValueError, match=rf"^model\.encoders\.text\.{key} must be"):
        GRUTextEncoder(out_dim=8, **options)


@pytest.mark.parametrize(("choice", "cls"), [("lstm", LSTMTextEncoder), ("gru", GRUTextEncoder)])
def test_the_config_builds_and_trains_with_token_level_fusion(make_train_cfg, choice, cls):
    cfg = make_train_cfg(
        f"model/encoders/text={choice}",
        "model.encoders.text.hidden_size=16",
        "model.encoders.text.embed_dim=8",
        "fusion=cross_attention",
        "data.num_train=64",
        "data.num_val=32",
        "data.num_test=32",
        "trainer.max_epochs=1",
    )
    module = build_module(cfg, num_classes=3)
    assert type(module.encoders["text"]) is cls
    assert module.encoders["text"].recurrence.rnn.bidirectional
    record = train(cfg)
    assert record["status"] == "completed"
    assert 0.0 <= record["metrics"]["test/acc"] <= 1.0
