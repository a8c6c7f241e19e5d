"""open_clip's image and text towers as mmexp encoders, with open_clip's own preprocessing.

``model/encoders/image=open_clip`` and ``model/encoders/text=open_clip`` build the towers of
``open_clip.create_model_and_transforms(name, pretrained=...)``; what they return is described
in :mod:`mmexp.encoders.clip_towers` (the pooled vector is ``encode_image`` /
``encode_text``). Both towers of one model are loaded once
(:data:`mmexp.encoders.clip_towers.TOWERS`).

Preprocessing: images go through open_clip's train transform on the training split (with
``augment``, the default: a mild random resized crop) and its validation transform otherwise
(resize, centre crop, normalise); texts through ``open_clip.get_tokenizer(name)``, padded to
the model's context length.

``init=open_clip`` builds both towers from the model and, for ``objective=contrastive``,
starts the loss from the model's logit scale (and SigLIP bias) through
:func:`open_clip_temperature` and :func:`open_clip_logit_bias`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmexp.encoders.clip_towers import (
    TOWERS,
    ClipTowerEncoder,
    check_projection,
    temperature_of,
)
from mmexp.encoders.open_clip_load import (
    embed_dim,
    end_of_text_id,
    load_tokenizer,
    loader,
    looks_like_file,
    model_key,
)
from mmexp.encoders.processors import TransformImageProcessor


def without_weights(options: Mapping[str, Any]) -> dict[str, Any]:
    """The same model without its weights (``pretrained`` null), its preprocessing kept.

    A tag's preprocessing (mean, std, resize) stays through ``preprocess_tag``.
    """
    changed = dict(options)
    pretrained = changed.get("pretrained")
    if pretrained and changed.get("preprocess_tag") is None and not looks_like_file(pretrained):
        changed["preprocess_tag"] = pretrained
    changed["pretrained"] = None
    return changed


class OpenClipTextProcessor:
    """``open_clip.get_tokenizer(name)`` on a batch, with the mask of the real tokens.

    The ids are padded to the model's context length, as open_clip's models expect. The mask
    marks the tokens up to and including the end-of-text token, after which open_clip's CLIP
    tokenizer pads (the token CLIP pools at); with other tokenizers (SigLIP's, Hugging Face
    ones) every position counts as real, as those towers attend to all of them.

    Pickled by name, so loader workers rebuild the tokenizer and its word cache never enters
    the feature cache's key.

    Args:
        name: open_clip model name.
        model_config: Its model config file, for a custom model.
        key: Config prefix of the encoder, named in errors.
    """

    def __init__(
        self, name: str, model_config: str | None = None, key: str = "model.encoders.text"
    ) -> None:
        self.name = name
        self.model_config = model_config
        self.key = key
        self.tokenizer = load_tokenizer(name, model_config, key)
        self.end_of_text = end_of_text_id(self.tokenizer)

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name, "model_config": self.model_config, "key": self.key}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __call__(self, raw: str) -> str:
        """Return the text unchanged: tokenization is cheaper on a whole batch."""
        return raw

    def collate(self, items: Sequence[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` ``[B, context_length]`` and ``attention_mask`` (real tokens)."""
        ids = self.tokenizer(list(items))
        if self.end_of_text is None:
            mask = torch.ones_like(ids, dtype=torch.bool)
        else:
            # The tokenizer ends every text with it, truncated or not.
            last = (ids == self.end_of_text).int().argmax(dim=1)
            mask = torch.arange(ids.shape[1])[None, :] <= last[:, None]
        return {"input_ids": ids, "attention_mask": mask}


class OpenClipEncoder(ClipTowerEncoder):
    """Base of the open_clip towers: loading, width check and trainability.

    Args:
        out_dim: ``model.width``; with ``projection: clip`` it must be the embedding width.
        name: open_clip model name (``open_clip.list_models()``), e.g. ``ViT-B-32``.
        pretrained: A pretrained tag (``open_clip.list_pretrained_tags_by_model(name)``),
            a local weights file, or ``None`` for random weights.
        model_config: A model config JSON to register first (a custom model; ``name`` is
            its file name without ``.json``).
        preprocess_tag: The tag whose preprocessing a local weights file gets (its mean,
            std, resize mode); ``None`` keeps the model config's defaults.
        projection: ``clip`` (the embedding as it is) or ``linear`` (a trained linear map to
            ``out_dim`` after it); see :mod:`mmexp.encoders.clip_towers`.
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Blocks that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.
    """

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """With a ``pretrained`` tag or file."""
        return bool(options.get("pretrained"))

    @classmethod
    def without_pretrained_weights(cls, options: dict[str, Any]) -> dict[str, Any]:
        """``pretrained`` null, a tag's preprocessing kept (:func:`without_weights`)."""
        return without_weights(options)

    def __init__(
        self,
        out_dim: int = 512,
        name: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        model_config: str | None = None,
        preprocess_tag: str | None = None,
        projection: str = "clip",
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        key = f"model.encoders.{self.modality}"
        # Names, tag and width are checked before any weights are read.
        load = loader(name, pretrained, model_config, preprocess_tag, key)
        width = embed_dim(name)
        check_projection(projection, width, out_dim, key, f"open_clip model {name!r}")
        cache_key = model_key(name, pretrained, model_config, preprocess_tag)
        tower, model = TOWERS.take(cache_key, self.modality, load)
        self.name = name
        self.model_config = model_config
        self.pretrained = bool(pretrained)
        self.keep_extras(model.extras)
        self.attach_tower(tower, width, projection, freeze, trainable_blocks, lora)

    def keep_extras(self, extras: Mapping[str, Any]) -> None:
        """Keep what this tower needs of the loaded model's extras (its transforms)."""


class OpenClipImageEncoder(OpenClipEncoder):
    """open_clip's image tower: ``encode_image`` as pooled, projected patch tokens.

    Args:
        augment: open_clip's train transform (random resized crop, scale 0.9-1) on the
            training split; ``false`` uses the validation transform everywhere (needed by
            the feature cache).
        **options: See :class:`OpenClipEncoder`.
    """

    modality = "image"

    def __init__(self, augment: bool = True, **options: Any) -> None:
        super().__init__(**options)
        self.augment = augment

    def keep_extras(self, extras: Mapping[str, Any]) -> None:
        """open_clip's train and validation transforms for the model."""
        self.train_transform = extras["train_transform"]
        self.eval_transform = extras["eval_transform"]

    def processor(self, train: bool) -> TransformImageProcessor:
        """open_clip's train transform (training split, with ``augment``) or its val transform."""
        transform = self.train_transform if train and self.augment else self.eval_transform
        return TransformImageProcessor(transform)

    def tower_outputs(
        self, inputs: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Embedding, projected patch tokens and an all-real mask of ``[B, 3, H, W]`` images."""
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(inputs.shape)}")
        pooled, tokens = self.backbone(inputs)
        if tokens is None:
            return pooled, None, None
        return pooled, tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


class OpenClipTextEncoder(OpenClipEncoder):
    """open_clip's text tower: ``encode_text`` as pooled, projected final-layer tokens.

    The pooled vector is taken where open_clip takes it (the end-of-text token for CLIP,
    found as the highest id); the mask marks the tokens up to it
    (:class:`OpenClipTextProcessor`). Callable on ``processor(False).collate(texts)``.

    Args:
        **options: See :class:`OpenClipEncoder`.
    """

    modality = "text"

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._processor = OpenClipTextProcessor(self.name, self.model_config)

    def processor(self, train: bool) -> OpenClipTextProcessor:
        """open_clip's tokenizer for the model (the same for every split)."""
        return self._processor

    def tower_outputs(
        self, inputs: Mapping[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Embedding, projected tokens and the real-token mask of a tokenized batch."""
        pooled, tokens = self.backbone(inputs["input_ids"])
        if tokens is None:
            return pooled, None, None
        return pooled, tokens, inputs["attention_mask"].bool()


def open_clip_temperature(
    name: str,
    pretrained: str | None = None,
    model_config: str | None = None,
    preprocess_tag: str | None = None,
) -> float:
    """The temperature ``1 / exp(logit_scale)`` of an open_clip model, for a loss's init.

    open_clip stores the logit scale as a log already, so the loss's log logit scale starts
    at the model's. Read from the model the encoders loaded (arguments as theirs), so the
    weights are read once.
    """
    key = model_key(name, pretrained, model_config, preprocess_tag)
    scale, _ = TOWERS.logits(
        key, loader(name, pretrained, model_config, preprocess_tag, "logit_init")
    )
    return temperature_of(scale)


def open_clip_logit_bias(
    name: str,
    pretrained: str | None = None,
    model_config: str | None = None,
    preprocess_tag: str | None = None,
    default: float = -10.0,
) -> float:
    """The logit bias of an open_clip SigLIP model; ``default`` for a model without one."""
    key = model_key(name, pretrained, model_config, preprocess_tag)
    _, bias = TOWERS.logits(
        key, loader(name, pretrained, model_config, preprocess_tag, "logit_init")
    )
    return default if bias is None else bias


# mmexp-eval builds these values without the weights (the checkpoint holds the loss's own),
# as it builds the encoders (mmexp.resolve.skip_pretrained_weights).
open_clip_temperature.without_pretrained_weights = without_weights  # type: ignore[attr-defined]
open_clip_logit_bias.without_pretrained_weights = without_weights  # type: ignore[attr-defined]
