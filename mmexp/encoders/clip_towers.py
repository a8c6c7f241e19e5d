"""The towers of public vision-language models (CLIP, SigLIP) as mmexp encoders.

Each tower of such a model maps its input to an embedding in the space both towers share.
The encoders built on this module (open_clip models in :mod:`mmexp.encoders.open_clip_towers`,
Hugging Face ``CLIPModel`` / ``SiglipModel`` in :mod:`mmexp.encoders.hf_clip`) keep that
embedding as it is, so a public init continues from exactly the model that was published:

* ``pooled`` is the tower's embedding as its library computes it (open_clip's
  ``encode_image`` / ``encode_text``, transformers' ``get_image_features`` /
  ``get_text_features``): after the model's own projection, not normalised (the contrastive
  module normalises).
* ``tokens`` are the final-layer token features mapped by the same projection where that is
  a linear map of each token (CLIP's projection matrices, SigLIP's text head), so tokens and
  pooled vector share one space; where the pooling is not per token (SigLIP's attention
  pooling head) the tokens are the normalised final-layer features, which have the
  embedding's width. Towers without per-token outputs give the embedding as one token.
* ``mask`` marks the real tokens: all image patches, the text tokens up to and including the
  end-of-text token (the tokenizer's padding after it is masked).

Width. ``model.width`` is the fusion width (the builders pass it as ``out_dim``). With
``projection: clip`` (default) the embedding is the output, so ``model.width`` must equal the
tower's embedding width: :class:`TowerWidthError` says which key to set, before any weights
are read. ``projection: linear`` adds a trained ``nn.Linear`` from the embedding to
``model.width`` after the model's projection.

Trainability. The tower, its pretrained projection included, is the ``backbone`` that
``freeze`` / ``lora`` and the finetuning protocols act on; an added linear projection always
trains. The feature cache stores the tower's outputs (the embedding and its tokens) and runs
only the added projection after them.

Loading. Both towers come from one model: :data:`TOWERS` loads it once for the two encoders
and hands each tower out once, so each encoder owns only its own tower's modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, project_features
from mmexp.encoders.freezing import BackboneEncoder

#: ``projection`` choices: the model's own embedding, or a trained linear map after it.
PROJECTIONS = ("clip", "linear")


class TowerWidthError(ValueError):
    """A tower's embedding width differs from ``model.width`` and no projection maps it."""


def check_projection(projection: str, embed_dim: int, out_dim: int, key: str, model: str) -> None:
    """Refuse an unknown ``projection`` or an embedding that ``model.width`` cannot take.

    Args:
        projection: ``"clip"`` or ``"linear"``.
        embed_dim: Width of the tower's embedding.
        out_dim: ``model.width``, the width the encoder must return.
        key: Config prefix of the encoder (``model.encoders.image``).
        model: The model's name, for the message.

    Raises:
        ValueError: An unknown ``projection``.
        TowerWidthError: ``projection="clip"`` with ``embed_dim != out_dim``.
    """
    if projection not in PROJECTIONS:
        raise ValueError(f"{key}.projection must be one of {PROJECTIONS}, got {projection!r}")
    if projection == "clip" and embed_dim != out_dim:
        raise TowerWidthError(
            f"{key}: {model} embeds in {embed_dim} dimensions but model.width={out_dim}; set "
            f"model.width={embed_dim} to use the embedding as it is, or {key}.projection=linear "
            "to map it to model.width with a trained linear layer"
        )


class MatrixProjection(nn.Module):
    """``x @ weight``: a CLIP projection matrix ``[in, out]`` moved out of its tower.

    The product is the one open_clip computes, so the embedding is the same to the bit.
    """

    def __init__(self, weight: nn.Parameter) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, features: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return features @ self.weight


@dataclass
class LoadedModel:
    """A loaded vision-language model, split into its towers.

    Attributes:
        towers: Tower modules by modality (``image``, ``text``) not handed out yet.
        logit_scale: The model's learned logit scale, as stored (a log: ``exp`` of it
            multiplies the cosine similarities).
        logit_bias: SigLIP's learned logit bias; ``None`` for a model without one.
        extras: What the encoders need besides the tower (transforms, tokenizer).
    """

    towers: dict[str, nn.Module]
    logit_scale: float
    logit_bias: float | None
    extras: dict[str, Any] = field(default_factory=dict)


class TowerCache:
    """The latest loaded model, its towers handed out once each, and every model's logits.

    The image and text encoders of one run ask for the same model; the first loads it and the
    second takes the other tower. A tower asked for again (a second encoder of the same
    modality) loads a fresh model, so no two encoders share modules. Only the latest model
    is kept, so a tower nobody takes is dropped when another model loads; the logit scale and
    bias of every loaded model are kept (two floats each) for the loss's initial values.
    """

    def __init__(self) -> None:
        self._key: Hashable | None = None
        self._model: LoadedModel | None = None
        self._logits: dict[Hashable, tuple[float, float | None]] = {}

    def _load(self, key: Hashable, load: Callable[[], LoadedModel]) -> LoadedModel:
        model = load()
        self._key, self._model = key, model
        self._logits[key] = (model.logit_scale, model.logit_bias)
        return model

    def take(
        self, key: Hashable, modality: str, load: Callable[[], LoadedModel]
    ) -> tuple[nn.Module, LoadedModel]:
        """The ``modality`` tower of the model ``key`` (loaded with ``load`` if needed).

        Returns:
            The tower, now owned by the caller, and the loaded model (for its extras).
        """
        model = self._model
        if self._key != key or model is None or modality not in model.towers:
            model = self._load(key, load)
        tower = model.towers.pop(modality)
        if not model.towers:  # both handed out: nothing left to keep
            self._key, self._model = None, None
        return tower, model

    def logits(self, key: Hashable, load: Callable[[], LoadedModel]) -> tuple[float, float | None]:
        """``(logit_scale, logit_bias)`` of the model ``key``, loading it if it never was."""
        if key not in self._logits:
            self._load(key, load)
        return self._logits[key]


#: The towers of the latest model loaded by any vision-language encoder, and all logits.
TOWERS = TowerCache()


def temperature_of(logit_scale: float) -> float:
    """The temperature a loss takes (``1 / exp(logit_scale)``) for a stored log logit scale."""
    return 1.0 / math.exp(logit_scale)


class ClipTowerEncoder(BackboneEncoder):
    """Base of the encoders around one tower of a vision-language model.

    The ``backbone`` is the tower, called through :meth:`tower_outputs`; see the module
    docstring for what the outputs are. Subclasses load the tower, then call
    :meth:`attach_tower`.
    """

    embed_dim: int

    def attach_tower(
        self,
        tower: nn.Module,
        embed_dim: int,
        projection: str,
        freeze: str,
        trainable_blocks: int,
        lora: Mapping[str, Any] | None,
    ) -> None:
        """Keep ``tower`` as the backbone with its trainability, then the projection.

        Args:
            tower: The tower module (its forward is read by :meth:`tower_outputs`).
            embed_dim: Width of its embedding.
            projection: ``"clip"`` (identity) or ``"linear"`` (a trained map to ``out_dim``),
                already checked by :func:`check_projection`.
            freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
            trainable_blocks: Blocks that train with ``freeze=last_n``.
            lora: LoRA settings or ``None``.
        """
        self.embed_dim = embed_dim
        self.projection = projection
        self.attach_backbone(tower, freeze, trainable_blocks, lora)
        self.proj = nn.Linear(embed_dim, self.out_dim) if projection == "linear" else nn.Identity()

    def tower_outputs(
        self, inputs: Any
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """The tower's embedding ``[B, E]``, its tokens ``[B, T, E]`` and their mask ``[B, T]``.

        Tokens and mask are ``None`` for a tower without per-token outputs.
        """
        raise NotImplementedError

    def frozen_features(self, inputs: Any, tokens: bool) -> dict[str, torch.Tensor]:
        """The tower's embedding (and its tokens with their mask, if asked and it has them)."""
        pooled, token_features, mask = self.tower_outputs(inputs)
        if pooled.ndim != 2:
            raise ValueError(
                f"model.encoders.{self.modality}: the tower returned an embedding of shape "
                f"{tuple(pooled.shape)}, not [batch, width]; its pooling is not supported"
            )
        features = {"pooled": pooled}
        if tokens and token_features is not None and mask is not None:
            features.update(tokens=token_features, mask=mask)
        return features

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """The added projection (identity with ``projection: clip``) on pooled and tokens."""
        return project_features(self.proj, features)
