"""Tiny tokenizers and a tiny GPT-2 written to disk, for the caption decoders' tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.helpers.tiny_models import WORDS

END = "<|endoftext|>"


def tiny_word_tokenizer(end: str | None = END):
    """A GPT-2 style word-level tokenizer over :data:`WORDS` (no pad; bos = eos = ``end``).

    Args:
        end: The end token, or ``None`` for a tokenizer without any end token.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {word: i for i, word in enumerate(["<unk>", *WORDS])}
    if end is not None:
        vocab[end] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    special = {"unk_token": "<unk>"}
    if end is not None:
        special.update(bos_token=end, eos_token=end)
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)


def tiny_bert_tokenizer(folder: Path):
    """A BERT word-piece tokenizer over :data:`WORDS` ([CLS]/[SEP], [PAD], no bos/eos)."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    return BertTokenizer(str(vocab))


def write_tiny_gpt2(folder: Path, init_std: float = 0.02) -> Path:
    """A 2-layer, 32-wide GPT-2 and the word-level tokenizer, saved with ``save_pretrained``.

    Args:
        folder: Where to save them.
        init_std: Standard deviation of the random weights; larger than GPT-2's 0.02, the
            model's choices depend more on its inputs (and generations end at varied steps).
    """
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = tiny_word_tokenizer()
    end = tokenizer.convert_tokens_to_ids(END)
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=2,
        initializer_range=init_std,
        bos_token_id=end,
        eos_token_id=end,
    )
    GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
