"""Loading open_clip models, split into towers: the one module that knows open_clip's internals.

A model is built with ``open_clip.create_model_and_transforms(name, pretrained=...)``, where
``pretrained`` is a pretrained tag (downloaded, or read from the local caches) or a local
weights file, both through open_clip's own loading code. Bad input stops before anything is
built: an unknown model name or tag lists the valid ones, and offline a tag whose weights
are not cached says how to point at a local file.

The text tower is built as open_clip's own ``TextTransformer`` module (``force_custom_text``;
a plain CLIP checkpoint is converted by open_clip when it is loaded), so that it is one
module the text encoder can own; it computes what ``CLIP.encode_text`` computes.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mmexp.encoders.clip_towers import LoadedModel, MatrixProjection
from mmexp.encoders.hub import fetch_failed_message, hub_offline

#: Weight file suffixes: a ``pretrained`` value ending in one is a path, not a tag.
WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors", ".npz")
#: What a tag's pretrained config may set of the preprocessing, and the argument it sets.
PREPROCESS_ARGS = {
    "mean": "image_mean",
    "std": "image_std",
    "interpolation": "image_interpolation",
    "resize_mode": "image_resize_mode",
}


def register_model_config(name: str, model_config: str, key: str) -> None:
    """Make the model config JSON ``model_config`` known to open_clip as ``name``.

    Raises:
        FileNotFoundError: No such file.
        ValueError: The file is not named ``<name>.json`` (open_clip names a config after
            its file).
    """
    import open_clip

    path = Path(model_config).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}.model_config={model_config!r}: no such file")
    if path.stem != name:
        raise ValueError(
            f"{key}.model_config={model_config!r}: open_clip names a model config after its "
            f"file, so set {key}.name={path.stem!r} (got {name!r})"
        )
    if open_clip.get_model_config(name) != json.loads(path.read_text()):
        open_clip.add_model_config(path)


def check_name(name: str, key: str) -> None:
    """Refuse a name that is not an open_clip model config, listing the valid ones."""
    import open_clip

    if name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(
            f"{key}.name={name!r}: open_clip's hf-hub: and local-dir: schemas are not "
            f"supported; use a model name from open_clip.list_models() with "
            f"{key}.pretrained=<tag or local weights file>"
        )
    models = open_clip.list_models()
    if name in models:
        return
    close = difflib.get_close_matches(name, models, n=5, cutoff=0.6)
    hint = f" Did you mean one of {close}?" if close else ""
    raise ValueError(
        f"{key}.name={name!r} is not an open_clip model (a custom one needs "
        f"{key}.model_config=<name>.json).{hint} Valid names (open_clip.list_models()): "
        f"{', '.join(models)}"
    )


def check_tag(name: str, tag: str, key: str) -> None:
    """Refuse a tag that ``name`` has no pretrained weights for, listing its tags."""
    import open_clip

    if open_clip.get_pretrained_cfg(name, tag):
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    raise ValueError(
        f"{key}={tag!r} is neither a pretrained tag of open_clip model {name!r} nor a file; "
        f"its tags (open_clip.list_pretrained_tags_by_model({name!r})): {tags or 'none'}"
    )


def cached_weights(name: str, tag: str) -> str | None:
    """The tag's weights file in the local caches open_clip downloads to, if it is there."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        repo_id, filename = os.path.split(cfg["hf_hub"])
        filename = filename or HF_WEIGHTS_NAME
        # open_clip prefers a safetensors copy of the same weights where the hub has one.
        safe = HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else None
        if safe is None and filename.endswith((".bin", ".pth")):
            safe = filename[:-4] + ".safetensors"
        for candidate in filter(None, (safe, filename)):
            path = try_to_load_from_cache(repo_id, candidate)
            if isinstance(path, str):
                return path
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        if path.is_file():
            return str(path)
    return None


def resolve_weights(
    name: str, pretrained: str | None, preprocess_tag: str | None, key: str
) -> tuple[str | None, str | None]:
    """What to pass to open_clip as ``pretrained``, and the tag whose preprocessing applies.

    Args:
        name: The model name (checked).
        pretrained: A tag, a local weights file, or ``None`` (random initialisation).
        preprocess_tag: Tag whose preprocessing a local file gets (``None``: the file keeps
            the model config's defaults).
        key: Config prefix of the encoder.

    Raises:
        FileNotFoundError: ``pretrained`` looks like a path and does not exist.
        ValueError: An unknown tag.
        RuntimeError: Offline, a tag whose weights are not in the local caches.
    """
    if preprocess_tag is not None:
        check_tag(name, preprocess_tag, f"{key}.preprocess_tag")
    if not pretrained:
        return None, preprocess_tag
    path = Path(pretrained).expanduser()
    if path.is_file():
        return str(path), preprocess_tag
    if looks_like_file(pretrained):
        raise FileNotFoundError(f"{key}.pretrained={pretrained!r}: no such file")
    check_tag(name, pretrained, f"{key}.pretrained")
    if hub_offline():
        # A cached copy loads as a local file (with the tag's preprocessing), without a
        # download attempt that offline would retry or hang on.
        cached = cached_weights(name, pretrained)
        if cached is None:
            raise RuntimeError(fetch_failed_message(f"{name}:{pretrained}", key, local_hint(key)))
        return cached, pretrained
    return pretrained, None


def local_hint(key: str) -> str:
    """How to point an open_clip encoder at a local weights file."""
    return (
        f"Point {key}.pretrained=/path/to/open_clip_pytorch_model.bin (or .safetensors) at a "
        f"local copy of the weights (with {key}.preprocess_tag=<tag> for the tag's "
        "preprocessing)"
    )


def preprocess_overrides(name: str, tag: str | None) -> dict[str, Any]:
    """``create_model_and_transforms`` arguments giving a local file its tag's preprocessing."""
    import open_clip

    if tag is None:
        return {}
    cfg = open_clip.get_pretrained_cfg(name, tag)
    return {argument: cfg[field] for field, argument in PREPROCESS_ARGS.items() if field in cfg}


class OpenClipVisionTower(nn.Module):
    """open_clip's image tower with its projection as a module of its own, after the blocks.

    For a ``VisionTransformer`` the projection matrix moves out of it (open_clip skips a
    ``None`` projection), so that layers registered after the blocks are the final norm and
    then the projection (what the ``partial`` protocol trains), and the patch tokens come out
    too. Other image towers (ResNets, timm trunks) give their embedding only.
    """

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        from open_clip.transformer import VisionTransformer

        self.has_tokens = isinstance(visual, VisionTransformer)
        projection: nn.Module = nn.Identity()
        if self.has_tokens:
            weight = visual.proj
            visual.proj = None
            visual.output_tokens = True
            projection = MatrixProjection(weight) if weight is not None else projection
        self.visual = visual
        self.projection = projection

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedding ``[B, E]`` and the projected patch tokens ``[B, N, E]`` (or ``None``)."""
        if not self.has_tokens:
            return self.visual(images), None
        pooled, tokens = self.visual(images)
        return self.projection(pooled), self.projection(tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """open_clip's own activation checkpointing of the tower."""
        self.visual.set_grad_checkpointing(enable)


class OpenClipTextTower(nn.Module):
    """open_clip's ``TextTransformer`` with its projection moved after the blocks.

    The projection (a matrix, or a linear layer with bias) is applied to the pooled token,
    as open_clip does, and to every token. Other text towers (Hugging Face models inside
    open_clip) give their embedding only.
    """

    def __init__(self, text: nn.Module) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        self.has_tokens = isinstance(text, TextTransformer)
        projection: nn.Module = nn.Identity()
        if self.has_tokens:
            moved = text.text_projection
            text.text_projection = None
            text.output_tokens = True
            if isinstance(moved, nn.Linear):
                projection = moved
            elif moved is not None:
                projection = MatrixProjection(moved)
        self.text = text
        self.projection = projection

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embedding ``[B, E]`` and the projected final-layer tokens ``[B, L, E]`` (or ``None``)."""
        if not self.has_tokens:
            return self.text(ids), None
        pooled, tokens = self.text(ids)
        return self.projection(pooled), self.projection(tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """open_clip's own activation checkpointing of the tower."""
        self.text.set_grad_checkpointing(enable)


def model_key(
    name: str, pretrained: str | None, model_config: str | None, preprocess_tag: str | None
) -> Hashable:
    """The key of a model in :data:`~mmexp.encoders.clip_towers.TOWERS`: what changes it."""
    return ("open_clip", name, pretrained or None, model_config, preprocess_tag)


def loader(
    name: str,
    pretrained: str | None,
    model_config: str | None,
    preprocess_tag: str | None,
    key: str,
) -> Callable[[], LoadedModel]:
    """Check the names, then return what loads the model (run at most once per model).

    Raises:
        See :func:`register_model_config`, :func:`check_name`, :func:`resolve_weights`.
    """
    if model_config is not None:
        register_model_config(name, model_config, key)
    check_name(name, key)
    weights, tag = resolve_weights(name, pretrained, preprocess_tag, key)

    def load() -> LoadedModel:
        import open_clip

        try:
            model, train_transform, eval_transform = open_clip.create_model_and_transforms(
                name,
                pretrained=weights,
                force_custom_text=True,  # the text tower as one module (see the docstring)
                pretrained_text=False,  # never fetch a text backbone's own hub weights
                **preprocess_overrides(name, tag),
            )
        except RuntimeError as error:
            if weights == pretrained and weights and not Path(weights).is_file():
                # open_clip reports a failed tag download as a RuntimeError.
                message = fetch_failed_message(f"{name}:{weights}", key, local_hint(key))
                raise RuntimeError(message) from error
            raise
        bias = getattr(model, "logit_bias", None)
        return LoadedModel(
            towers={
                "image": OpenClipVisionTower(model.visual),
                "text": OpenClipTextTower(model.text),
            },
            logit_scale=float(model.logit_scale.detach().reshape(-1)[0]),
            logit_bias=float(bias.detach().reshape(-1)[0]) if bias is not None else None,
            extras={"train_transform": train_transform, "eval_transform": eval_transform},
        )

    return load


def embed_dim(name: str) -> int:
    """Width of the embedding of the (checked) model ``name``, from its config alone."""
    import open_clip

    return int(open_clip.get_model_config(name)["embed_dim"])


def looks_like_file(pretrained: str) -> bool:
    """Whether a ``pretrained`` value names a weights file rather than a tag."""
    return (
        os.sep in pretrained
        or pretrained.endswith(WEIGHT_SUFFIXES)
        or Path(pretrained).expanduser().is_file()
    )


def load_tokenizer(name: str, model_config: str | None, key: str) -> Any:
    """``open_clip.get_tokenizer(name)``; offline, a tokenizer from the hub says so.

    Raises:
        RuntimeError: The model's tokenizer comes from the Hugging Face Hub (SigLIP, models
            with a Hugging Face text tower) and cannot be fetched.
    """
    import open_clip

    if model_config is not None:
        register_model_config(name, model_config, key)
    try:
        return open_clip.get_tokenizer(name)
    except OSError as error:  # transformers reports missing hub files as OSError
        hint = (
            "The tokenizer of this model is a Hugging Face tokenizer; run once where the hub "
            "is reachable so that it lands in the cache"
        )
        raise RuntimeError(fetch_failed_message(f"{name} (tokenizer)", key, hint)) from error


def end_of_text_id(tokenizer: Any) -> int | None:
    """The end-of-text id after which open_clip's CLIP tokenizer pads; ``None`` for others."""
    import open_clip

    return tokenizer.eot_token_id if isinstance(tokenizer, open_clip.SimpleTokenizer) else None
