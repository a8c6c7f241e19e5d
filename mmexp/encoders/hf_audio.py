"""Any Hugging Face audio encoder (wav2vec2, HuBERT, AST, Whisper) with its feature extractor."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mmexp.encoders.audio_features import HFAudioProcessor
from mmexp.encoders.base import EncoderOutput, lengths_mask, masked_mean, project_features
from mmexp.encoders.freezing import BackboneEncoder
from mmexp.encoders.hub import hf_from_pretrained

KEY = "model.encoders.audio"
POOLINGS = ("mean",)


class HFAudioEncoder(BackboneEncoder):
    """A pretrained audio Transformer: its output frames as tokens, mean pooled.

    Waveform models (wav2vec2, HuBERT) read ``input_values`` and report how many frames each
    clip produced (``_get_feat_extract_output_lengths``), so padding frames are masked.
    Spectrogram models read the extractor's fixed-length features: AST's patch tokens are
    all real; for Whisper only the encoder is kept and frames past the clip are masked.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        name_or_path: Hub name (``facebook/wav2vec2-base``) or a folder written by
            ``save_pretrained`` holding the model and its feature extractor.
        max_seconds: Clips are cropped to this duration (``None``: keep whole clips).
        pooling: ``"mean"`` over real frames.
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Layers that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.
    """

    modality = "audio"

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Always: the weights come from ``name_or_path`` (``from_pretrained``)."""
        return True

    def __init__(
        self,
        out_dim: int = 128,
        name_or_path: str = "facebook/wav2vec2-base",
        max_seconds: float | None = 10.0,
        pooling: str = "mean",
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        if pooling not in POOLINGS:
            raise ValueError(f"{KEY}.pooling must be one of {POOLINGS}, got {pooling!r}")
        from transformers import AutoFeatureExtractor, AutoModel

        key = f"{KEY}.name_or_path"
        self.name_or_path = str(name_or_path)
        self.max_seconds = max_seconds
        self.pretrained = True  # from_pretrained weights
        self.feature_extractor = hf_from_pretrained(
            AutoFeatureExtractor.from_pretrained, self.name_or_path, key
        )
        backbone = hf_from_pretrained(AutoModel.from_pretrained, self.name_or_path, key)
        if getattr(backbone.config, "is_encoder_decoder", False):
            backbone = backbone.get_encoder()  # Whisper: the decoder is for text generation
        accepted = inspect.signature(backbone.forward).parameters
        self.input_names = [n for n in self.feature_extractor.model_input_names if n in accepted]
        # Spectrogram inputs (Whisper) count length in feature frames, not samples.
        spectrogram = "input_features" in self.input_names
        self.input_hop = int(self.feature_extractor.hop_length) if spectrogram else 1
        self.attach_backbone(backbone, freeze, trainable_blocks, lora)
        self.proj = nn.Linear(backbone.config.hidden_size, out_dim)

    def processor(self, train: bool) -> HFAudioProcessor:
        """Resample to the extractor's rate, crop, and featurize per batch."""
        return HFAudioProcessor(self.feature_extractor, self.max_seconds)

    def frame_mask(self, lengths: torch.Tensor, frames: int) -> torch.Tensor:
        """``[B, frames]`` mask of the output frames that cover real audio.

        Args:
            lengths: ``[B]`` clip lengths in samples at the extractor's rate.
            frames: Output frames of the backbone.
        """
        output_lengths = getattr(self.backbone, "_get_feat_extract_output_lengths", None)
        if output_lengths is None:  # fixed-length patch tokens (AST): all real
            return torch.ones(lengths.shape[0], frames, dtype=torch.bool, device=lengths.device)
        real = output_lengths(lengths // self.input_hop).clamp(1, frames)
        return lengths_mask(real, frames)

    def backbone_features(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone frames ``[B, T, H]`` and their mask ``[B, T]``, before projection."""
        model_inputs = {name: inputs[name] for name in self.input_names if name in inputs}
        hidden = self.backbone(**model_inputs).last_hidden_state
        return hidden, self.frame_mask(inputs["lengths"].to(hidden.device), hidden.shape[1])

    def frozen_features(
        self, inputs: Mapping[str, torch.Tensor], tokens: bool
    ) -> dict[str, torch.Tensor]:
        """Mean of the real frames (and the frames with their mask if asked)."""
        hidden, mask = self.backbone_features(inputs)
        # The mean before the (affine) projection equals the mean after it.
        pooled = masked_mean(hidden, mask)
        return {"pooled": pooled, "tokens": hidden, "mask": mask} if tokens else {"pooled": pooled}

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """Project frames to ``[B, T, D]`` tokens and the mean to ``[B, D]``."""
        return project_features(self.proj, features)
