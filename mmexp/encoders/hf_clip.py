"""Hugging Face ``CLIPModel`` / ``SiglipModel`` towers as mmexp encoders.

``model/encoders/image=hf_clip`` and ``model/encoders/text=hf_clip`` build the towers of a
hub model or a ``save_pretrained`` folder; what they return is described in
:mod:`mmexp.encoders.clip_towers` (the pooled vector is ``get_image_features`` /
``get_text_features``). Both towers of one model are loaded once.

Preprocessing is the model's own: its image processor (resize, centre crop, normalise; the
same on every split, as transformers has no training augmentation) and its tokenizer. CLIP
texts are padded to the longest of the batch (its pooled token is the end-of-text token,
with the padding masked); SigLIP texts are padded to ``max_length`` (64 tokens for the
published models, ``text_config.max_position_embeddings``), because SigLIP pools the last
position and was trained that way (``padding="max_length"`` in the reference usage).

``init=hf_clip`` builds both towers from the model and, for ``objective=contrastive``,
starts the loss from its logit scale (and SigLIP's bias) through :func:`hf_clip_temperature`
and :func:`hf_clip_logit_bias`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from PIL import Image

from mmexp.encoders.clip_towers import (
    TOWERS,
    ClipTowerEncoder,
    check_projection,
    temperature_of,
)
from mmexp.encoders.hf_clip_load import embed_dims, load_config, loader, model_key
from mmexp.encoders.hub import hf_from_pretrained
from mmexp.encoders.processors import MaxLengthTextProcessor, TextProcessor


class HFImageProcessor:
    """A transformers image processor per image and a stack per batch.

    Args:
        image_processor: The model's ``AutoImageProcessor``.
    """

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor

    def __call__(self, raw: Image.Image) -> torch.Tensor:
        """``[3, H, W]`` pixel values of one image (converted to RGB)."""
        return self.image_processor(images=raw.convert("RGB"), return_tensors="pt")["pixel_values"][
            0
        ]

    def collate(self, items: Sequence[torch.Tensor]) -> torch.Tensor:
        """Stack images into ``[B, 3, H, W]``."""
        return torch.stack(list(items))


class HFClipEncoder(ClipTowerEncoder):
    """Base of the Hugging Face CLIP / SigLIP towers: loading, width check, trainability.

    Args:
        out_dim: ``model.width``; with ``projection: clip`` it must be the embedding width.
        name_or_path: Hub name (``openai/clip-vit-base-patch32``,
            ``google/siglip-base-patch16-224``) or a folder written by ``save_pretrained``
            holding the model and its processor (image processor and tokenizer).
        projection: ``clip`` (the embedding as it is) or ``linear`` (a trained linear map to
            ``out_dim`` after it); see :mod:`mmexp.encoders.clip_towers`.
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Layers that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.
    """

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Always: the weights come from ``name_or_path`` (``from_pretrained``)."""
        return True

    def __init__(
        self,
        out_dim: int = 512,
        name_or_path: str = "openai/clip-vit-base-patch32",
        projection: str = "clip",
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        self.key = f"model.encoders.{self.modality}"
        self.name_or_path = str(name_or_path)
        # The config alone says the kind of model and its width: checked before the weights.
        config = load_config(self.name_or_path, self.key)
        width = embed_dims(config)[self.modality]
        check_projection(projection, width, out_dim, self.key, f"{self.name_or_path!r}")
        load = loader(self.name_or_path, f"{self.key}.name_or_path")
        tower, _ = TOWERS.take(model_key(self.name_or_path), self.modality, load)
        self.model_type = config.model_type
        self.pretrained = True
        self.attach_tower(tower, width, projection, freeze, trainable_blocks, lora)
        self.load_preprocessing(config)

    def load_preprocessing(self, config: Any) -> None:
        """Load this tower's preprocessing from ``name_or_path``."""
        raise NotImplementedError


class HFClipImageEncoder(HFClipEncoder):
    """The image tower of a Hugging Face CLIP / SigLIP: ``get_image_features`` as pooled.

    Args:
        **options: See :class:`HFClipEncoder`.
    """

    modality = "image"

    def load_preprocessing(self, config: Any) -> None:
        """The model's ``AutoImageProcessor``."""
        from transformers import AutoImageProcessor

        self.image_processor = hf_from_pretrained(
            AutoImageProcessor.from_pretrained, self.name_or_path, f"{self.key}.name_or_path"
        )

    def processor(self, train: bool) -> HFImageProcessor:
        """The model's image processor (the same on every split)."""
        return HFImageProcessor(self.image_processor)

    def tower_outputs(
        self, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Embedding, patch tokens and an all-real mask of ``[B, 3, H, W]`` pixel values."""
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(inputs.shape)}")
        pooled, tokens = self.backbone(inputs)
        return pooled, tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class HFClipTextEncoder(HFClipEncoder):
    """The text tower of a Hugging Face CLIP / SigLIP: ``get_text_features`` as pooled.

    Callable on ``processor(False).collate(texts)``; see the module docstring for padding.

    Args:
        **options: See :class:`HFClipEncoder`.
    """

    modality = "text"

    def load_preprocessing(self, config: Any) -> None:
        """The model's tokenizer, truncating at its position table's length."""
        from transformers import AutoTokenizer

        self.tokenizer = hf_from_pretrained(
            AutoTokenizer.from_pretrained, self.name_or_path, f"{self.key}.name_or_path"
        )
        self.max_length = int(config.text_config.max_position_embeddings)

    def processor(self, train: bool) -> TextProcessor:
        """CLIP: padded per batch; SigLIP: padded to ``max_length`` (as it was trained)."""
        padded = MaxLengthTextProcessor if self.model_type == "siglip" else TextProcessor
        return padded(self.tokenizer, self.max_length)

    def tower_outputs(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Embedding, projected tokens and the tokenizer's mask of a tokenized batch."""
        mask = inputs["attention_mask"].bool()
        pooled, tokens = self.backbone(inputs["input_ids"], mask)
        return pooled, tokens, mask


def hf_clip_temperature(name_or_path: str) -> float:
    """The temperature ``1 / exp(logit_scale)`` of a Hugging Face CLIP / SigLIP model.

    transformers stores the logit scale as a log, as the losses do. Read from the model the
    encoders loaded, so the weights are read once.
    """
    scale, _ = TOWERS.logits(model_key(name_or_path), loader(name_or_path, "logit_init"))
    return temperature_of(scale)


def hf_clip_logit_bias(name_or_path: str, default: float = -10.0) -> float:
    """SigLIP's logit bias; ``default`` for a CLIP model, which has none."""
    _, bias = TOWERS.logits(model_key(name_or_path), loader(name_or_path, "logit_init"))
    return default if bias is None else bias
