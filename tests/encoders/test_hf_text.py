import pickle
from pathlib import Path

import pytest
import torch
import yaml

from mmexp.encoders import HFTextEncoder, masked_mean, minilm_encoder
from mmexp.encoders.hf_text import minilm_model_dir
from mmexp.train import train
from tests.helpers.tiny_models import write_tiny_bert

TEXTS = ["a red square", "a big blue circle left of the green triangle", "shape"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_tokens_mask_and_cls_or_mean_pooling(bert_dir):
    torch.manual_seed(0)
    cls = HFTextEncoder(out_dim=16, name_or_path=str(bert_dir), pooling="cls").eval()
    processor = pickle.loads(pickle.dumps(cls.processor(train=False)))
    batch = processor.collate([processor(text) for text in TEXTS])
    out = cls(batch)
    length = batch["input_ids"].shape[1]
    assert out.tokens.shape == (3, length, 16) and out.pooled.shape == (3, 16)
    assert torch.equal(out.mask, batch["attention_mask"].bool())
    assert out.mask.sum(1).tolist() == [5, 11, 3]  # [CLS] words [SEP]
    assert torch.allclose(out.pooled, out.tokens[:, 0])

    mean = HFTextEncoder(out_dim=16, name_or_path=str(bert_dir), pooling="mean").eval()
    mean.load_state_dict(cls.state_dict())
    out_mean = mean(batch)
    assert torch.allclose(out_mean.tokens, out.tokens)
    assert torch.allclose(out_mean.pooled, masked_mean(out.tokens, out.mask), atol=1e-6)
    assert not torch.allclose(out_mean.pooled, out.pooled)


def test_every_trainable_parameter_gets_a_gradient(bert_dir):
    # DDP rejects parameters that never get a gradient (BERT's unused pooler head).
    encoder = HFTextEncoder(out_dim=16, name_or_path=str(bert_dir), pooling="mean")
    processor = encoder.processor(train=True)
    encoder(processor.collate([processor(t) for t in TEXTS])).pooled.sum().backward()
    without = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert without == []


def test_padding_does_not_change_the_features_of_a_text(bert_dir):
    encoder = HFTextEncoder(out_dim=8, name_or_path=str(bert_dir), pooling="mean").eval()
    processor = encoder.processor(train=False)
    alone = encoder(processor.collate(TEXTS[:1]))
    padded = encoder(processor.collate(TEXTS[:2]))
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)


def test_invalid_pooling_and_missing_folder_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"model\.encoders\.text\.pooling"):
        HFTextEncoder(out_dim=8, name_or_path=str(tmp_path), pooling="max")
    for missing in (str(tmp_path / "nope"), "./no_such_model_folder"):
        with pytest.raises(FileNotFoundError, match=r"model\.encoders\.text\.name_or_path"):
            HFTextEncoder(out_dim=8, name_or_path=missing)


def test_hub_name_offline_says_to_pass_a_local_folder(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="could not be fetched") as info:
        HFTextEncoder(out_dim=8, name_or_path="mmexp-tests/no-such-model")
    assert "save_pretrained" in str(info.value)
    assert "model.encoders.text.name_or_path=" in str(info.value)


def test_minilm_matches_the_model_loaded_directly():
    from transformers import AutoModel, AutoTokenizer

    encoder = minilm_encoder(out_dim=16).eval()
    assert encoder.pooling == "mean"
    folder = minilm_model_dir()
    model = AutoModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = tokenizer(TEXTS, padding=True, truncation=True, return_tensors="pt")
    batch = encoder.processor(train=False).collate(TEXTS)
    with torch.no_grad():
        hidden, mask = encoder.backbone_features(batch)
        expected = model(**reference).last_hidden_state
        out = encoder(batch)
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.allclose(hidden, expected, atol=1e-5)
    # The sentence embedding is the mean over real tokens (then normalised).
    weights = reference["attention_mask"].unsqueeze(-1).float()
    sentence = (expected * weights).sum(1) / weights.sum(1)
    assert torch.allclose(masked_mean(hidden, mask), sentence, atol=1e-5)
    assert torch.allclose(out.pooled, encoder.proj(sentence), atol=1e-5)


def test_train_end_to_end_with_minilm_text_encoder(make_train_cfg):
    cfg = make_train_cfg(
        "model/encoders/text=minilm",
        "++trainer.limit_train_batches=2",
        "++trainer.limit_val_batches=1",
        "++trainer.limit_test_batches=1",
        "trainer.max_epochs=1",
        "data.eval_batch_size=32",  # one small validation and test batch
    )
    result = train(cfg)
    assert result["status"] == "completed"
    assert 0.0 <= result["metrics"]["test/acc"] <= 1.0
    hparams = yaml.safe_load((Path(cfg.paths.output_dir) / "csv" / "hparams.yaml").read_text())
    trainable = hparams["params/encoders.text/trainable"]
    assert trainable == hparams["params/encoders.text/total"] > 22_000_000  # MiniLM-L6
