"""Tiny pretrained-style models written to disk, so that loading code runs without a network.

Each ``write_*`` function saves a randomly initialised model and its preprocessor with
``save_pretrained`` (or a timm state dict), exactly the files a user would point the
encoders at.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [
    "a",
    "red",
    "green",
    "blue",
    "square",
    "circle",
    "triangle",
    "left",
    "right",
    "of",
    "the",
    "on",
    "small",
    "big",
    "shape",
]

# Tiny timm ViT: 2 blocks on 32 px images (2 x 2 patches + a class token).
TINY_VIT = {"name": "vit_tiny_patch16_224", "img_size": 32, "model_kwargs": {"depth": 2}}


def tiny_vit_backbone() -> torch.nn.Module:
    """The timm model :data:`TINY_VIT` describes, headless, randomly initialised."""
    import timm

    return timm.create_model(
        TINY_VIT["name"],
        pretrained=False,
        num_classes=0,
        img_size=TINY_VIT["img_size"],
        **TINY_VIT["model_kwargs"],
    )


def write_tiny_bert(folder: Path) -> Path:
    """A 2-layer, 32-wide BERT and a word-piece tokenizer over a small vocabulary."""
    from transformers import BertConfig, BertModel, BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    tokenizer = BertTokenizer(str(vocab), model_max_length=64)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_tiny_wav2vec2(folder: Path) -> Path:
    """A 2-layer, 32-wide wav2vec2 (total conv stride 320, as the real one) and its extractor.

    Built like wav2vec2-large-lv60 (layer norm in the feature encoder, attention mask), the
    variant whose outputs do not depend on the padding of the batch.
    """
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 8, 8),
        conv_kernel=(10, 8, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0,
        feat_extract_norm="layer",
        do_stable_layer_norm=True,
    )
    Wav2Vec2Model(config).save_pretrained(folder)
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1,
        sampling_rate=16000,
        padding_value=0.0,
        do_normalize=True,
        return_attention_mask=True,
    )
    extractor.save_pretrained(folder)
    return folder


def write_tiny_ast(folder: Path) -> Path:
    """A 1-layer Audio Spectrogram Transformer over 32 mel bins x 64 frames and its extractor."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTModel

    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=16,
        frequency_stride=16,
        time_stride=16,
        max_length=64,
        num_mel_bins=32,
    )
    ASTModel(config).save_pretrained(folder)
    ASTFeatureExtractor(num_mel_bins=32, max_length=64).save_pretrained(folder)
    return folder


def write_tiny_whisper(folder: Path) -> Path:
    """A 1-layer, 16-wide Whisper (its 30 s window: 3000 mel frames) and its extractor."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    torch.manual_seed(0)
    config = WhisperConfig(
        vocab_size=64,
        num_mel_bins=16,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
    )
    WhisperModel(config).save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=16).save_pretrained(folder)
    return folder
