"""Tiny CLIP models for the prompt-learning tests: open_clip and Hugging Face ``CLIPModel``.

Unlike :mod:`tests.helpers.tiny_clip`, the text towers keep CLIP's full 77-token context, so
that 16 context vectors and a class name fit in one prompt.

Both have CLIP's real tokenizer (open_clip's BPE vocabulary, which ships with open_clip, so
no download) and one-layer, 32-wide towers on 32 px images, randomly initialised and saved
as the files a user points the encoders at: an open_clip model config JSON and a weights
file, or a ``save_pretrained`` folder with the tokenizer and image processor.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

#: Name of the tiny open_clip model (open_clip names a custom config after its file).
OPEN_CLIP_NAME = "tiny-clip-prompts"
#: Its config: CLIP's vocabulary and context length, tiny towers.
OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def write_tiny_open_clip(folder: Path, seed: int = 0) -> dict[str, str]:
    """The tiny open_clip model's config and weights; the encoder options that load them."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{OPEN_CLIP_NAME}.json"
    config.write_text(json.dumps(OPEN_CLIP_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(seed)
    model = open_clip.create_model(OPEN_CLIP_NAME, pretrained=None)
    weights = folder / "open_clip_model.pt"
    torch.save(model.state_dict(), weights)
    return {"name": OPEN_CLIP_NAME, "model_config": str(config), "pretrained": str(weights)}


def clip_tokenizer():  # noqa: ANN201 - transformers type, imported lazily
    """A Hugging Face ``CLIPTokenizer`` over open_clip's copy of CLIP's BPE vocabulary."""
    import open_clip
    from transformers import CLIPTokenizer

    simple = open_clip.SimpleTokenizer()
    specials = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {specials.get(token, token): index for token, index in simple.encoder.items()}
    merges = [pair for pair, _ in sorted(simple.bpe_ranks.items(), key=lambda item: item[1])]
    return CLIPTokenizer(vocab=vocab, merges=merges)


def write_tiny_hf_clip(folder: Path, seed: int = 0) -> Path:
    """A tiny ``CLIPModel`` with CLIP's tokenizer and an image processor, ``save_pretrained``."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = clip_tokenizer()
    layers = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    config = CLIPConfig(
        text_config={
            **layers,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 77,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={**layers, "image_size": 32, "patch_size": 16},
        projection_dim=32,
    )
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    images.save_pretrained(folder)
    return folder
