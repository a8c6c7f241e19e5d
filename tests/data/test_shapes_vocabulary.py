"""Shapes' closed caption vocabulary: every generated caption is in it and decodes back."""

import json

import pytest

from mmexp.data.shapes import generate_shapes
from mmexp.data.shapes.render import caption_tokenizer, caption_words
from mmexp.decoders.tokenizers import word_tokenizer


def test_every_caption_and_reference_tokenizes_without_unknown_words(tmp_path):
    folder = generate_shapes(tmp_path, "redundant", {"train": 300}, seed=5)
    tokenizer = caption_tokenizer()
    assert len(tokenizer) == 4 + len(caption_words())
    for line in (folder / "manifest.jsonl").open():
        row = json.loads(line)
        for caption in [row["text"], *row["captions"]]:
            ids = tokenizer(caption, add_special_tokens=False)["input_ids"]
            assert tokenizer.unk_token_id not in ids, caption
            # the decoded text differs at most in the space before a colon, which the
            # caption toolkit's tokenizer removes with the colon
            assert tokenizer.decode(ids).replace(" :", ":") == caption


def test_word_tokenizer_frames_nothing_and_maps_unknown_words():
    tokenizer = word_tokenizer(["a", "red", "box", ","])
    ids = tokenizer("A red, purple box", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids) == ["a", "red", ",", "[UNK]", "box"]
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 2, 3)
    with pytest.raises(ValueError, match="empty"):
        word_tokenizer([" "])
