"""Loading Hugging Face ``CLIPModel`` / ``SiglipModel``, split into towers.

The one module that knows the structure of transformers' CLIP and SigLIP models. A tower
wraps the model's tower submodule under its name in the full model (``vision_model``,
``text_model``) with the projection that follows it (CLIP's ``visual_projection`` /
``text_projection``; SigLIP has its heads inside the towers), so a tower's weights have the
full model's key names and its blocks sit at ``vision_model.encoder.layers``.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from torch import nn

from mmexp.encoders.clip_towers import LoadedModel
from mmexp.encoders.hub import hf_from_pretrained

#: ``config.model_type`` of the models these towers come from.
MODEL_TYPES = ("clip", "siglip")


def _checkpointing(module: Any, enable: bool) -> None:
    if enable:
        # Non-reentrant checkpointing works with frozen inputs and under DDP.
        module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        module.gradient_checkpointing_disable()


class HFVisionTower(nn.Module):
    """The image tower: ``get_image_features`` as the embedding, and the patch tokens.

    CLIP: the class token's features, post-layernorm, through ``visual_projection``; its
    patch tokens get the same layernorm and projection. SigLIP: the attention-pooling head's
    output; its patch tokens are the post-layernorm features (the head is not per token).

    Args:
        vision_model: ``CLIPVisionModel`` or ``SiglipVisionModel`` (with its head).
        visual_projection: CLIP's projection, ``None`` for SigLIP.
    """

    def __init__(self, vision_model: nn.Module, visual_projection: nn.Module | None) -> None:
        super().__init__()
        self.vision_model = vision_model
        self.is_clip = visual_projection is not None
        self.visual_projection = visual_projection if self.is_clip else nn.Identity()

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding ``[B, E]`` and patch tokens ``[B, N, E]``."""
        out = self.vision_model(pixel_values=pixel_values)
        pooled = self.visual_projection(out.pooler_output)
        if not self.is_clip:
            return pooled, out.last_hidden_state
        patches = self.vision_model.post_layernorm(out.last_hidden_state[:, 1:])
        return pooled, self.visual_projection(patches)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the tower, transformers' own."""
        _checkpointing(self.vision_model, enable)


class HFTextTower(nn.Module):
    """The text tower: ``get_text_features`` as the embedding, and the projected tokens.

    CLIP pools at the end-of-text token with a causal mask and the attention mask over the
    padding, then ``text_projection``. SigLIP pools the last position through its linear
    ``head`` and was trained on sequences padded to ``max_length`` with no attention mask,
    so its tower gets none (as in the reference usage); its tokens go through the same head.

    Args:
        text_model: ``CLIPTextModel`` or ``SiglipTextModel``.
        text_projection: CLIP's projection, ``None`` for SigLIP.
    """

    def __init__(self, text_model: nn.Module, text_projection: nn.Module | None) -> None:
        super().__init__()
        self.text_model = text_model
        self.is_clip = text_projection is not None
        self.text_projection = text_projection if self.is_clip else nn.Identity()

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embedding ``[B, E]`` and tokens ``[B, L, E]`` of tokenized texts."""
        if not self.is_clip:
            out = self.text_model(input_ids=input_ids)
            return out.pooler_output, self.text_model.head(out.last_hidden_state)
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask.long())
        return self.text_projection(out.pooler_output), self.text_projection(out.last_hidden_state)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of the tower, transformers' own."""
        _checkpointing(self.text_model, enable)


def load_config(name_or_path: str, key: str) -> Any:
    """The model's config (no weights read), checked to be a CLIP or SigLIP model.

    Raises:
        ValueError: Another kind of model.
        FileNotFoundError, RuntimeError: See :func:`~mmexp.encoders.hub.hf_from_pretrained`.
    """
    from transformers import AutoConfig

    config = hf_from_pretrained(AutoConfig.from_pretrained, name_or_path, f"{key}.name_or_path")
    if config.model_type not in MODEL_TYPES:
        raise ValueError(
            f"{key}.name_or_path={name_or_path!r} is a {config.model_type!r} model; hf_clip "
            f"takes CLIPModel or SiglipModel (model_type {' or '.join(MODEL_TYPES)})"
        )
    if config.model_type == "siglip" and not config.vision_config.vision_use_head:
        raise ValueError(
            f"{key}.name_or_path={name_or_path!r}: this SigLIP has no vision head, so no "
            "image embedding (vision_config.vision_use_head is false)"
        )
    return config


def embed_dims(config: Any) -> dict[str, int]:
    """The embedding width of each tower (both the same for the published models)."""
    if config.model_type == "clip":
        return {"image": int(config.projection_dim), "text": int(config.projection_dim)}
    return {
        "image": int(config.vision_config.hidden_size),
        "text": int(config.text_config.projection_size),
    }


def model_key(name_or_path: str) -> Hashable:
    """The key of a model in :data:`~mmexp.encoders.clip_towers.TOWERS`."""
    return ("hf_clip", str(name_or_path))


def loader(name_or_path: str, key: str) -> Callable[[], LoadedModel]:
    """What loads the model and splits it into its towers (run at most once per model)."""

    def load() -> LoadedModel:
        from transformers import AutoModel

        model = hf_from_pretrained(AutoModel.from_pretrained, name_or_path, key)
        bias = getattr(model, "logit_bias", None)
        return LoadedModel(
            towers={
                "image": HFVisionTower(
                    model.vision_model, getattr(model, "visual_projection", None)
                ),
                "text": HFTextTower(model.text_model, getattr(model, "text_projection", None)),
            },
            logit_scale=float(model.logit_scale.detach().reshape(-1)[0]),
            logit_bias=float(bias.detach().reshape(-1)[0]) if bias is not None else None,
        )

    return load
