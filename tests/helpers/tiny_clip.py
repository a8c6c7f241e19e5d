"""Tiny vision-language models written to disk: an open_clip model and HF CLIP / SigLIP.

Loaded through the same code paths as the published weights: a registered open_clip model
config with a ``torch.save``'d state dict passed as ``pretrained=<file>``, and folders
written by ``save_pretrained``. The learned logit scale (and bias) are set to values no
initialisation gives, so a test that finds them in a loss knows where they came from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

# Both towers 32 wide with 2 blocks, 32 px images in 8 px patches (16 patches), 16-token
# texts over open_clip's BPE vocabulary, a 16-dimensional embedding.
EMBED_DIM = 16
CONTEXT_LENGTH = 16
OPEN_CLIP_CONFIG = {
    "embed_dim": EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {
        "context_length": CONTEXT_LENGTH,
        "vocab_size": 49408,
        "width": 32,
        "heads": 2,
        "layers": 2,
    },
}
LOGIT_SCALE = math.log(1 / 0.031)
LOGIT_BIAS = -6.5


@dataclass(frozen=True)
class TinyOpenClip:
    """A written open_clip model: its name, model config file and weights file."""

    name: str
    model_config: Path
    weights: Path

    def options(self) -> dict[str, str]:
        """The encoder options that load it."""
        return {
            "name": self.name,
            "model_config": str(self.model_config),
            "pretrained": str(self.weights),
        }

    def overrides(self) -> list[str]:
        """The overrides that make ``init=open_clip`` load it (``model.width`` its width)."""
        return [
            "init=open_clip",
            f"model.encoders.image.name={self.name}",
            f"model.encoders.image.model_config={self.model_config}",
            f"model.encoders.image.pretrained={self.weights}",
            f"model.width={EMBED_DIM}",
        ]


def write_tiny_open_clip(
    folder: Path, name: str = "mmexp-tiny-clip", bias: bool = False
) -> TinyOpenClip:
    """Register and save a tiny open_clip model (``bias``: with a SigLIP logit bias)."""
    import open_clip

    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.json"
    config.write_text(
        json.dumps({**OPEN_CLIP_CONFIG, **({"init_logit_bias": -10.0} if bias else {})})
    )
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(name)
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        if bias:
            model.logit_bias.fill_(LOGIT_BIAS)
    weights = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), weights)
    return TinyOpenClip(name, config, weights)


def write_clip_tokenizer(folder: Path) -> None:
    """A ``CLIPTokenizer`` over open_clip's BPE vocabulary, saved into ``folder``."""
    from open_clip import SimpleTokenizer
    from transformers import CLIPTokenizer

    bpe = SimpleTokenizer()
    # open_clip names the special tokens differently from transformers; same ids.
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): index for token, index in bpe.encoder.items()}
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    files = folder / "bpe"
    files.mkdir(parents=True, exist_ok=True)
    (files / "vocab.json").write_text(json.dumps(vocab))
    lines = "\n".join(" ".join(pair) for pair in merges)
    (files / "merges.txt").write_text(f"#version: 0.2\n{lines}\n")
    tokenizer = CLIPTokenizer(
        str(files / "vocab.json"), str(files / "merges.txt"), model_max_length=CONTEXT_LENGTH
    )
    tokenizer.save_pretrained(folder)


def write_tiny_hf_clip(folder: Path, kind: str = "clip") -> Path:
    """A tiny ``CLIPModel`` (``kind="clip"``) or ``SiglipModel`` with processor, saved."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
    )

    text = {
        "vocab_size": 49408,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "max_position_embeddings": CONTEXT_LENGTH,
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 49407,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,
    }
    torch.manual_seed(0)
    if kind == "clip":
        model = CLIPModel(
            CLIPConfig(text_config=text, vision_config=vision, projection_dim=EMBED_DIM)
        )
        processor = CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        )
    else:
        # SigLIP embeds at the vision width; the text head maps to the same.
        config = SiglipConfig(text_config={**text, "projection_size": 32}, vision_config=vision)
        model = SiglipModel(config)
        processor = SiglipImageProcessor(size={"height": 32, "width": 32})
    with torch.no_grad():
        model.logit_scale.fill_(LOGIT_SCALE)
        if kind != "clip":
            model.logit_bias.fill_(LOGIT_BIAS)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    write_clip_tokenizer(folder)
    return folder
