"""Absent modalities are not encoded, and ModDrop drops them in training only.

The dropout rates are checked against binomial tolerances (four standard deviations) on
draws from a seeded torch generator.
"""

import math

import pytest
import torch

from mmexp.builders import build_data_and_model, build_module
from mmexp.encoders import SmallConvEncoder, SmallTextTransformer
from mmexp.encoders.base import CachedFeatures
from mmexp.lit.presence import ModalityDropout, encode_present, select_rows
from mmexp.utils.checkpoints import load_checkpoint
from tests.helpers.tiny_runs import TINY_OVERRIDES, train_tiny

MODALITIES = ["image", "text"]
COUNT = 20000
TEXTS = ["a red square", "the big blue circle on the left of a small triangle", "a", "green"]


def within(fraction, expected, count=COUNT):
    return abs(float(fraction) - expected) <= 4 * math.sqrt(expected * (1 - expected) / count)


def everything(count=COUNT, modalities=MODALITIES):
    return {m: torch.ones(count, dtype=torch.bool) for m in modalities}


def stacked(present, modalities=MODALITIES):
    return torch.stack([present[m] for m in modalities], dim=1)


def test_select_rows_takes_the_rows_of_every_kind_of_batch():
    rows = torch.tensor([2, 0])
    images = torch.arange(24.0).view(4, 2, 3)
    assert torch.equal(select_rows(images, rows, 4), images[[2, 0]])
    text = {"input_ids": torch.arange(8).view(4, 2), "attention_mask": torch.ones(4, 2)}
    chosen = select_rows(text, rows, 4)
    assert type(chosen) is dict and torch.equal(chosen["input_ids"], text["input_ids"][[2, 0]])
    cached = CachedFeatures(pooled=torch.randn(4, 5), tokens=torch.randn(4, 3, 5))
    chosen = select_rows(cached, rows, 4)
    assert isinstance(chosen, CachedFeatures)  # the encoder still skips its frozen part
    assert torch.equal(chosen["tokens"], cached["tokens"][[2, 0]])
    audio = {"waveform": torch.randn(4, 10), "lengths": torch.tensor([10, 9, 8, 7]), "rate": 8000}
    chosen = select_rows(audio, rows, 4)
    assert chosen["lengths"].tolist() == [8, 10] and chosen["rate"] == 8000
    assert select_rows(["a", "b", "c", "d"], rows, 4) == ["c", "a"]
    assert select_rows(("a", "b", "c", "d"), rows, 4) == ("c", "a")
    shared = torch.ones(7)  # not one row per sample: shared by all
    assert select_rows(shared, rows, 4) is shared
    assert select_rows(torch.tensor(3.0), rows, 4).item() == 3.0
    assert select_rows("abcd", rows, 4) == "abcd" and select_rows(16000, rows, 4) == 16000


class CountingConv(SmallConvEncoder):
    """The built-in image encoder, counting the samples of each call."""

    def __init__(self, **options):
        super().__init__(**options)
        self.calls = []

    def forward(self, inputs):
        self.calls.append(len(inputs))
        return super().forward(inputs)


@pytest.fixture
def image_encoder():
    torch.manual_seed(0)
    return CountingConv(out_dim=16, channels=[8, 16], image_size=32).eval()


def assert_absent_rows(output, absent, length):
    assert not output.present[absent].any()
    assert not output.mask[absent].any() and output.mask.shape[1] == length
    assert not output.pooled[absent].any()


def test_only_the_present_images_are_encoded(image_encoder):
    images = torch.randn(5, 3, 32, 32)
    present = torch.tensor([True, False, True, True, False])
    output = encode_present(image_encoder, images, present, 5)
    alone = image_encoder(images[present])  # the present rows, encoded on their own
    assert image_encoder.calls == [3, 3]
    torch.testing.assert_close(output.pooled[present], alone.pooled)
    torch.testing.assert_close(output.tokens[present], alone.tokens)
    assert torch.equal(output.mask[present], alone.mask) and output.present[present].all()
    assert_absent_rows(output, ~present, alone.tokens.shape[1])


def test_only_the_present_texts_are_encoded_whatever_the_padding():
    torch.manual_seed(0)
    encoder = SmallTextTransformer(out_dim=16, width=32, depth=1, heads=2, max_length=48).eval()
    processor = encoder.processor(train=False)
    values = [processor(text) for text in TEXTS]
    present = torch.tensor([False, True, False, True])
    output = encode_present(encoder, processor.collate(values), present, 4)
    # collated alone, the sub-batch is padded to its own longest text
    alone = encoder(processor.collate([values[1], values[3]]))
    torch.testing.assert_close(output.pooled[present], alone.pooled, rtol=1e-5, atol=1e-5)
    length = alone.tokens.shape[1]
    assert torch.equal(output.mask[present][:, :length], alone.mask)
    assert not output.mask[present][:, length:].any()
    torch.testing.assert_close(
        output.tokens[present][:, :length][alone.mask], alone.tokens[alone.mask]
    )
    assert_absent_rows(output, ~present, output.tokens.shape[1])


def test_a_modality_no_sample_has_is_not_encoded(image_encoder):
    images = torch.randn(4, 3, 32, 32)
    output = encode_present(image_encoder, images, torch.zeros(4, dtype=torch.bool), 4)
    assert image_encoder.calls == []
    assert output.tokens.shape == (4, 1, 16) and output.pooled.dtype == torch.float32
    assert_absent_rows(output, torch.ones(4, dtype=torch.bool), 1)
    for whole in (None, torch.ones(4, dtype=torch.bool)):  # every sample: the plain call
        output = encode_present(image_encoder, images, whole, 4)
        torch.testing.assert_close(output.pooled, image_encoder(images).pooled)
    assert image_encoder.calls == [4, 4, 4, 4]


def test_rate_zero_keeps_every_modality_and_rate_one_exactly_one():
    torch.manual_seed(0)
    assert stacked(ModalityDropout(0.0)(everything(), MODALITIES)).all()
    for modalities in (MODALITIES, ["image", "text", "audio"]):
        kept = stacked(
            ModalityDropout(1.0)(everything(modalities=modalities), modalities), modalities
        )
        assert kept.sum(dim=1).eq(1).all()
        for column in kept.T:  # the one kept is drawn uniformly
            assert within(column.float().mean(), 1 / len(modalities))


@pytest.mark.parametrize("rate", [0.3, 0.5, 0.8])
def test_the_drop_rate_counts_the_samples_given_back_a_modality(rate):
    # A modality is dropped when its own draw drops it and the other's does not, p (1 - p),
    # or when both draws drop and the one restored is the other, p^2 / 2: p - p^2 / 2.
    torch.manual_seed(0)
    kept = stacked(ModalityDropout(rate)(everything(), MODALITIES))
    for column in kept.T:
        assert within((~column).float().mean(), rate - rate**2 / 2)
    assert within(kept.all(dim=1).float().mean(), (1 - rate) ** 2)
    assert kept.any(dim=1).all()


def test_a_rate_per_modality_and_what_the_data_already_lack():
    torch.manual_seed(0)
    kept = ModalityDropout({"text": 0.4})(everything(), MODALITIES)
    assert kept["image"].all() and within((~kept["text"]).float().mean(), 0.4)
    # a sample lacking its image keeps its text whatever the rate, and never gets the image
    lacking = {"image": torch.rand(COUNT) < 0.5, "text": torch.ones(COUNT, dtype=torch.bool)}
    kept = ModalityDropout(1.0)(lacking, MODALITIES)
    assert kept["text"][~lacking["image"]].all() and not kept["image"][~lacking["image"]].any()
    random = {m: torch.rand(COUNT) < 0.7 for m in MODALITIES}
    random["text"] |= ~random["image"]  # every sample has one modality at least
    kept = ModalityDropout({"image": 0.9, "text": 0.6})(random, MODALITIES)
    assert stacked(kept).any(dim=1).all()
    assert not (stacked(kept) & ~stacked(random)).any()


@pytest.mark.parametrize(
    ("rate", "option", "message"),
    [
        (1.5, "1.5", r"model\.modality_dropout=1\.5 is outside \[0, 1\]"),
        ({"text": -0.2}, "{text: -0.2}", r"model\.modality_dropout\.text=-0\.2 is outside"),
        ({"audio": 0.3}, "{audio: 0.3}", r"model\.modality_dropout names \['audio'\]"),
    ],
)
def test_bad_dropout_is_refused_naming_the_key(make_train_cfg, rate, option, message):
    with pytest.raises(ValueError, match=message):
        ModalityDropout(rate).check(MODALITIES)
    with pytest.raises(ValueError, match=message):  # from the config, before anything trains
        build_module(make_train_cfg(f"model.modality_dropout={option}"), num_classes=3)


def test_a_single_modality_cannot_be_dropped(make_train_cfg):
    message = r"data\.modalities=\['text'\]: dropping the only modality"
    with pytest.raises(ValueError, match=message):
        ModalityDropout(0.5).check(["text"])
    cfg = make_train_cfg("data.modalities=[text]", "fusion=unimodal", "model.modality_dropout=0.5")
    with pytest.raises(ValueError, match=message):
        build_module(cfg, num_classes=3)


def test_a_contrastive_objective_refuses_modality_dropout(make_train_cfg):
    cfg = make_train_cfg("objective=contrastive", "model.modality_dropout=0.5")
    with pytest.raises(ValueError, match=r"model\.modality_dropout: ContrastivePretrainer needs"):
        build_module(cfg, num_classes=3)


def test_dropout_applies_in_training_mode_only(make_train_cfg):
    datamodule, module = build_data_and_model(
        make_train_cfg(*TINY_OVERRIDES, "model.modality_dropout=1.0")
    )
    datamodule.setup("validate")
    batch = next(iter(datamodule.val_dataloader()))
    encoded = []
    for encoder in module.encoders.values():
        encoder.register_forward_pre_hook(lambda _, args: encoded.append(rows_of(args[0])))
    module.train()
    assert stacked(module.presence(batch)).sum(dim=1).eq(1).all()
    module(batch)
    assert sum(encoded) == len(batch["label"])  # each sample encoded once, in one tower
    module.eval()
    assert module.presence(batch) is None
    encoded.clear()
    with torch.no_grad():
        logits = module(batch)
        module.modality_dropout = None
        assert torch.equal(module(batch), logits)
    assert encoded == [len(batch["label"])] * 4


def rows_of(inputs):
    return len(inputs) if isinstance(inputs, torch.Tensor) else len(inputs["input_ids"])


def test_a_tower_dropped_from_every_training_sample_never_changes(tmp_path, data_dir, monkeypatch):
    import mmexp.assemble

    built, modes = {}, []
    build = mmexp.assemble.build_data_and_model

    def keep_initial(cfg):
        datamodule, module = build(cfg)
        built.update({k: v.clone() for k, v in module.state_dict().items()})
        return datamodule, module

    forward = SmallConvEncoder.forward

    def record(self, inputs):
        modes.append(self.training)
        return forward(self, inputs)

    monkeypatch.setattr(mmexp.assemble, "build_data_and_model", keep_initial)
    monkeypatch.setattr(SmallConvEncoder, "forward", record)
    result = train_tiny(tmp_path / "run", data_dir, "model.modality_dropout={image: 1.0}")
    assert modes and not any(modes)  # images encoded in validation and test only
    trained = load_checkpoint(result["last_checkpoint"])["state_dict"]
    for key, initial in built.items():
        if key.startswith("encoders.image."):  # weights and BatchNorm statistics alike
            assert torch.equal(trained[key], initial), key
    text = [k for k in built if k.startswith("encoders.text.") and built[k].is_floating_point()]
    assert any(not torch.equal(trained[k], built[k]) for k in text)
