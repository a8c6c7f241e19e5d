"""Any timm image model as an encoder, with the preprocessing its weights were trained with.

The transform is resolved from the model's own data config (input size, interpolation, crop,
mean and std), so switching ``name`` can never leave the data normalised for another model.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput, output_from
from mmexp.encoders.freezing import BackboneEncoder
from mmexp.encoders.hub import fetch_failed_message, hub_offline
from mmexp.encoders.processors import TransformImageProcessor

KEY = "model.encoders.image"


class TimmImageProcessor(TransformImageProcessor):
    """A timm transform per image and a stack per batch; picklable for loader workers.

    Args:
        transform: Callable from an RGB PIL image to a ``[3, H, W]`` tensor.
    """


def _check_name(name: str) -> None:
    import timm

    if name.startswith(("hf-hub:", "hf_hub:", "local-dir:")) or timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; did you mean one of {close}?" if close else "; see timm.list_models()"
    raise ValueError(f"{KEY}.name={name!r} is not a timm model{hint}")


def _cached_hub_file(name: str) -> str | None:
    """Path of the model's hub weights in the local Hugging Face cache, if they are there."""
    from huggingface_hub import try_to_load_from_cache
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:  # an unknown pretrained tag
        return None
    if cfg is None or not cfg.hf_hub_id:
        return None
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    filenames = [cfg.hf_hub_filename] if cfg.hf_hub_filename else []
    for filename in [*filenames, "model.safetensors", "pytorch_model.bin"]:
        path = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(path, str):
            return path
    return None


def _url_cached(name: str) -> bool:
    """Whether the model's URL weights are in torch's hub cache, where timm downloads them.

    timm fetches URL weights into ``<torch.hub.get_dir()>/checkpoints`` (with
    ``torch.hub.load_state_dict_from_url``, or its own download for ``custom_load``
    models), named after the URL's last path segment unless the config names the file. A
    file found there is loaded as it is: torch checks the hash in the name on download only.
    """
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        return False
    if cfg is None or not cfg.url:
        return False
    if isinstance(cfg.url, (list, tuple)):  # (url, file name)
        filename = cfg.url[1]
    else:
        filename = os.path.basename(urlparse(cfg.url).path)
    return (Path(torch.hub.get_dir()) / "checkpoints" / filename).is_file()


def create_timm_backbone(
    name: str,
    pretrained: bool,
    checkpoint_path: str | None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, num_classes=0)`` with weights from the hub or a local file.

    Args:
        name: timm model name (optionally with a pretrained tag).
        pretrained: Load the model's default pretrained weights.
        checkpoint_path: Local weights file; loaded through the same path as hub weights
            (``pretrained_cfg_overlay``), so classifier keys are dropped the same way.
        **kwargs: More ``create_model`` arguments (``img_size``, ``drop_path_rate``, ...).

    Raises:
        ValueError: Unknown model name.
        FileNotFoundError: ``checkpoint_path`` does not exist.
        RuntimeError: Pretrained weights are neither cached nor downloadable.
    """
    import timm

    _check_name(name)
    if checkpoint_path is not None:
        path = Path(checkpoint_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{KEY}.checkpoint_path={checkpoint_path!r}: no such file")
        overlay = {"file": str(path)}
        return timm.create_model(
            name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs
        )
    hint = f"Point {KEY}.checkpoint_path=/path/to/weights.safetensors (or .pth) at a local copy"
    if pretrained and hub_offline():
        # huggingface_hub may have read HF_HUB_OFFLINE before it was set: decide here, and
        # load a cached copy as a local file rather than let the download be retried.
        cached = _cached_hub_file(name)
        if cached is not None:
            overlay = {"file": cached}
            return timm.create_model(
                name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay, **kwargs
            )
        if not _url_cached(name):
            raise RuntimeError(fetch_failed_message(name, f"{KEY}.name", hint))
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    except OSError as error:  # hub and URL download failures are OSErrors
        raise RuntimeError(fetch_failed_message(name, f"{KEY}.name", hint)) from error


class TimmImageEncoder(BackboneEncoder):
    """A timm backbone: its feature map or patch tokens as tokens, its pre-logits as pooled.

    Args:
        out_dim: Width of the returned tokens and pooled vector.
        name: Any ``timm.list_models()`` name, e.g. ``vit_small_patch16_224``, ``resnet50``.
        pretrained: Load the model's pretrained weights (from the hub or the local cache).
        checkpoint_path: Local weights file to load instead (implies pretrained weights).
        img_size: Input side length; ViT-style models are built for it (position
            embeddings resized), other models just receive images of that size.
        augment: timm's training augmentation (random resized crop, flip, colour jitter) on
            the training split. Off by default: flips and colour change the meaning of many
            multimodal samples ("red square on the left").
        freeze: ``none``, ``frozen`` or ``last_n`` (see :mod:`mmexp.encoders.freezing`).
        trainable_blocks: Blocks that train with ``freeze=last_n``.
        lora: LoRA settings ``{r, alpha, dropout, target_modules}`` or ``None``.
        drop_path_rate: Stochastic depth rate of the backbone (0 leaves the default).
        model_kwargs: Further ``timm.create_model`` arguments (e.g. ``{depth: 4}``).
    """

    modality = "image"

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """With ``pretrained`` (the default) or a ``checkpoint_path``."""
        return bool(options.get("pretrained", True) or options.get("checkpoint_path"))

    def __init__(
        self,
        out_dim: int = 128,
        name: str = "vit_small_patch16_224",
        pretrained: bool = True,
        checkpoint_path: str | None = None,
        img_size: int | None = None,
        augment: bool = False,
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
        drop_path_rate: float = 0.0,
        model_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(out_dim)
        self.name = name
        self.augment = augment
        self.pretrained = bool(pretrained or checkpoint_path)
        kwargs = dict(model_kwargs or {})
        if drop_path_rate:
            kwargs["drop_path_rate"] = drop_path_rate
        backbone = self._create(name, pretrained, checkpoint_path, img_size, kwargs)
        self.data_config = self._data_config(backbone, img_size)
        token_dim = backbone.num_features
        # Some heads widen the pooled features (MobileNetV3's conv head): read both widths.
        pooled_dim = getattr(backbone, "head_hidden_size", None) or token_dim
        fmt = getattr(backbone, "output_fmt", "NCHW")
        self.channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        self.attach_backbone(backbone, freeze, trainable_blocks, lora)
        self.proj = nn.Linear(token_dim, out_dim)
        self.pool_proj = nn.Linear(pooled_dim, out_dim)

    @staticmethod
    def _create(
        name: str,
        pretrained: bool,
        checkpoint_path: str | None,
        img_size: int | None,
        kwargs: dict[str, Any],
    ) -> nn.Module:
        if img_size is None:
            return create_timm_backbone(name, pretrained, checkpoint_path, **kwargs)
        try:
            return create_timm_backbone(
                name, pretrained, checkpoint_path, img_size=img_size, **kwargs
            )
        except TypeError as error:
            if "img_size" not in str(error):
                raise
            # CNNs take any input size and have no img_size argument.
            return create_timm_backbone(name, pretrained, checkpoint_path, **kwargs)

    @staticmethod
    def _data_config(backbone: nn.Module, img_size: int | None) -> dict[str, Any]:
        from timm.data import resolve_model_data_config

        # The pretrained config keeps the size the weights were trained at; an explicit
        # img_size must win or a ViT built for 32 px would be fed 224 px images.
        args = {"input_size": (3, img_size, img_size)} if img_size else None
        return dict(resolve_model_data_config(backbone, args=args))

    def processor(self, train: bool) -> TimmImageProcessor:
        """The model's own transform; timm's training augmentation when ``augment`` is set."""
        from timm.data import create_transform

        return TimmImageProcessor(
            create_transform(**self.data_config, is_training=train and self.augment)
        )

    def frozen_features(self, inputs: torch.Tensor, tokens: bool) -> dict[str, torch.Tensor]:
        """Backbone features of ``[B, 3, H, W]`` images: pooled, and the tokens if asked."""
        if inputs.ndim != 4 or inputs.shape[1] != 3:
            raise ValueError(f"expected images of shape [B, 3, H, W], got {tuple(inputs.shape)}")
        features = self.backbone.forward_features(inputs)
        outputs = {"pooled": self.backbone.forward_head(features, pre_logits=True)}
        if tokens:
            if features.ndim == 4:  # a feature map: its cells are the tokens
                features = (
                    features.flatten(1, 2)
                    if self.channels_last
                    else (features.flatten(2).transpose(1, 2))
                )
            outputs["tokens"] = features
            outputs["mask"] = torch.ones(
                features.shape[:2], dtype=torch.bool, device=features.device
            )
        return outputs

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """Project the backbone features to ``[B, T, D]`` tokens (all real) and ``[B, D]``."""
        pooled = self.pool_proj(features["pooled"])
        if "tokens" not in features:
            return output_from(pooled)
        return output_from(pooled, self.proj(features["tokens"]), features["mask"])
