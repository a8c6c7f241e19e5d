"""Tiny Hugging Face video models written with save_pretrained, for tests without downloads."""

from __future__ import annotations

from pathlib import Path

import torch

FRAMES, SIZE = 4, 32
TOWER = {
    "hidden_size": 32,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}


def _image_processor():
    from transformers import VideoMAEImageProcessor

    return VideoMAEImageProcessor(
        size={"shortest_edge": SIZE}, crop_size={"height": SIZE, "width": SIZE}
    )


def write_tiny_video_model(folder: Path, kind: str) -> Path:
    """A randomly initialised ``videomae``, ``timesformer`` or ``xclip`` model and processor."""
    from transformers import (
        TimesformerConfig,
        TimesformerModel,
        VideoMAEConfig,
        VideoMAEModel,
        XCLIPConfig,
        XCLIPModel,
    )

    torch.manual_seed(0)
    patches = {"image_size": SIZE, "patch_size": 8, "num_frames": FRAMES}
    if kind == "videomae":
        model = VideoMAEModel(VideoMAEConfig(**patches, tubelet_size=2, **TOWER))
    elif kind == "timesformer":
        model = TimesformerModel(TimesformerConfig(**patches, **TOWER))
    else:
        vision = {**patches, **TOWER, "mit_hidden_size": 16, "mit_intermediate_size": 32}
        vision.update(mit_num_hidden_layers=1, mit_num_attention_heads=2)
        model = XCLIPModel(
            XCLIPConfig(text_config=TOWER, vision_config=vision, projection_dim=16, prompt_layers=1)
        )
    model.save_pretrained(folder)
    _image_processor().save_pretrained(folder)
    return folder
