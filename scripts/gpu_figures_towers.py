"""Write randomly initialised BERT-style text towers as ``save_pretrained`` folders.

``scripts/gpu_figures.sh`` times text towers of real sizes on a machine without network, so
it cannot download ``bert-base-uncased`` or MiniLM. It writes a folder with a config of the
same size, random weights and a word-piece tokenizer instead, and points
``model.encoders.text.name_or_path`` at it: the same loading path as a hub name.

    python scripts/gpu_figures_towers.py base /tmp/towers/bert-base
    python scripts/gpu_figures_towers.py minilm /tmp/towers/minilm
    python scripts/gpu_figures_towers.py tiny /tmp/towers/tiny      # CPU check of the plumbing
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mmexp.data.shapes.attributes import COLOURS, POSITIONS, SHAPES, SIZES

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
# Words of the shapes captions, so that they tokenize into words rather than [UNK].
CAPTION_WORDS = ["a", "an", "the", "of", "in", "at", "with", "and", "is", "there", "shape"]

# BERT-base (bert-base-uncased) and MiniLM-L6 (all-MiniLM-L6-v2) sizes; vocab_size is the
# embedding table's, filled with placeholder word pieces past the caption words.
SIZES_BY_NAME: dict[str, dict[str, Any]] = {
    "base": {
        "vocab_size": 30522,
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "max_position_embeddings": 512,
    },
    "minilm": {
        "vocab_size": 30522,
        "hidden_size": 384,
        "num_hidden_layers": 6,
        "num_attention_heads": 12,
        "intermediate_size": 1536,
        "max_position_embeddings": 512,
    },
    "tiny": {
        "vocab_size": None,  # just the caption words
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 64,
    },
}


def vocabulary(size: int | None) -> list[str]:
    """Special tokens, the caption words, then ``[unusedN]`` pieces up to ``size`` entries."""
    words = [*SPECIAL]
    for phrase in (*SHAPES, *COLOURS, *SIZES, *POSITIONS, *CAPTION_WORDS):
        words += [w for w in phrase.split() if w not in words]
    if size is not None:
        if size < len(words):
            raise ValueError(f"vocab_size {size} is below the {len(words)} caption words")
        words += [f"[unused{i}]" for i in range(size - len(words))]
    return words


def write_tower(size: str, folder: Path, seed: int = 0) -> Path:
    """Save a randomly initialised BERT of ``size`` and its tokenizer into ``folder``.

    Raises:
        ValueError: An unknown size name (listing the known ones).
    """
    if size not in SIZES_BY_NAME:
        raise ValueError(f"text tower size {size!r}: choose from {sorted(SIZES_BY_NAME)}")
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    options = dict(SIZES_BY_NAME[size])
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(vocabulary(options.pop("vocab_size"))) + "\n")
    tokenizer = BertTokenizer(str(vocab), model_max_length=options["max_position_embeddings"])
    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tokenizer), **options)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    """Command line: ``gpu_figures_towers.py SIZE FOLDER``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size", choices=sorted(SIZES_BY_NAME))
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(write_tower(args.size, args.folder))


if __name__ == "__main__":
    main()
