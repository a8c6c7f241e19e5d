"""The zero-shot classifier as a linear head, and a classifier's head set from it.

The zero-shot classifier of two aligned towers is a linear map of the normalised image
embedding whose weights are the class embeddings times the logit scale (no bias), as in
WiSE-FT's ``get_zeroshot_classifier`` (Wortsman et al., "Robust fine-tuning of zero-shot
models", CVPR 2022). An image classifier with a head of that shape (``MLPHead`` with
``hidden_dims=[]`` and ``input_norm=l2``) and the image tower of the same contrastive
checkpoint then *is* the zero-shot model when its head holds these weights: the start of
WiSE-FT's finetuning (``init=zeroshot_head``) and the ``alpha = 0`` end of its weight-space
ensembles (:mod:`mmexp.zeroshot.wiseft`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from mmexp.encoders.base import ModalityEncoder
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.lit.heads import unit_linear
from mmexp.resolve import skip_pretrained_weights
from mmexp.zeroshot.classify import class_embeddings
from mmexp.zeroshot.prompts import check_templates, class_names_for
from mmexp.zeroshot.towers import TEXT

log = logging.getLogger(__name__)


def source_text_tower(source: PretrainedCheckpoint) -> ModalityEncoder:
    """The text tower of a contrastive checkpoint, built from its config, its weights loaded.

    Raises:
        ValueError: The checkpoint holds no text tower.
    """
    if TEXT not in source.towers:
        raise ValueError(
            f"{source.path} holds towers {source.towers}; the zero-shot head needs its text "
            "tower (a contrastive checkpoint of image and text)"
        )
    config = OmegaConf.create(source.config)
    skip_pretrained_weights(config, keep=source.left_out)  # the checkpoint holds them
    encoder = instantiate(config.model.encoders[TEXT], out_dim=int(config.model.width))
    source.load_encoder(TEXT, encoder)
    return encoder.eval()


def source_logit_scale(source: PretrainedCheckpoint) -> float:
    """``1 / temperature`` of the checkpoint's contrastive loss, with its trained value."""
    loss = OmegaConf.create(source.config).objective.get("loss")
    if loss is None:
        raise ValueError(f"{source.path} has no contrastive loss (objective.loss) to scale by")
    built = instantiate(loss)
    prefix = "loss_fn."
    built.load_state_dict(
        {k[len(prefix) :]: v for k, v in source.state_dict.items() if k.startswith(prefix)}
    )
    return float(built.logit_scale.detach())


def zeroshot_weights(
    source: PretrainedCheckpoint,
    class_names: Sequence[str],
    templates: Sequence[str],
    batch_size: int = 256,
) -> torch.Tensor:
    """``[C, D]``: the class embeddings of ``source``'s text tower times its logit scale."""
    check_templates({"head": list(templates)}, "zero-shot head templates")
    text = source_text_tower(source)
    with torch.no_grad():
        classes = class_embeddings(text, class_names, templates, batch_size)
    return source_logit_scale(source) * classes


def head_linear(module: Any, key: str) -> torch.nn.Linear:
    """The linear layer of ``module.head``, checked to be the zero-shot classifier's shape.

    Raises:
        TypeError: The head is not a linear map of the normalised features, or the module
            has more than an image tower or a fusion with parameters.
    """
    encoders = sorted(getattr(module, "encoders", None) or {})
    fusion = getattr(module, "fusion", None)
    if encoders != ["image"] or fusion is None or any(True for _ in fusion.parameters()):
        raise TypeError(
            f"{key}: the zero-shot model is an image tower and a linear head; "
            f"{type(module).__name__} has towers {encoders} and fusion "
            f"{type(fusion).__name__} (train with data.modalities=[image] fusion=unimodal)"
        )
    linear = unit_linear(getattr(module, "head", None))
    if linear is None:
        raise TypeError(
            f"{key}: the head must be one linear layer of the normalised image features "
            "(model.head.hidden_dims=[] model.head.input_norm=l2, as init=zeroshot_head sets)"
        )
    return linear


def set_head(linear: torch.nn.Linear, weights: torch.Tensor, key: str) -> None:
    """Copy the zero-shot weights into ``linear`` and zero its bias.

    Raises:
        ValueError: ``weights`` has another shape than the layer's weight.
    """
    if tuple(weights.shape) != tuple(linear.weight.shape):
        raise ValueError(
            f"{key}: the zero-shot classifier is {tuple(weights.shape)} (classes x embedding "
            f"width) but the head's weight is {tuple(linear.weight.shape)}"
        )
    with torch.no_grad():
        linear.weight.copy_(weights)
        if linear.bias is not None:
            linear.bias.zero_()


class ZeroShotHeadInit(pl.Callback):
    """Set the classifier's head to the zero-shot classifier before finetuning starts.

    In ``setup`` of fitting, before a resumed run's weights are restored (which then win):
    the class names are the data module's (or ``class_names``), the templates are averaged
    as in :func:`~mmexp.zeroshot.classify.class_embeddings`.

    Args:
        checkpoint: The contrastive checkpoint the towers come from (``pretrained_checkpoint``).
        templates: Prompt templates, each with one ``{}``.
        class_names: See :func:`~mmexp.zeroshot.prompts.class_names_for`.
        cache_dir: Where a W&B checkpoint reference is downloaded.
        batch_size: Prompts encoded at a time.
    """

    key = "callbacks.zeroshot_head"

    def __init__(
        self,
        checkpoint: str | None,
        templates: Sequence[str] = ("a photo of a {}.",),
        class_names: str | Sequence[str] | None = None,
        cache_dir: str = "data/wandb_artifacts",
        batch_size: int = 256,
    ) -> None:
        if not checkpoint:
            # Typed optional so that the config check reaches this message: train.yaml's
            # pretrained_checkpoint=null outlives the init file's ??? when merged.
            raise ValueError(
                f"{self.key}: init=zeroshot_head needs the contrastive checkpoint whose "
                "zero-shot classifier starts the head: set pretrained_checkpoint=<path or "
                "wandb:entity/project/artifact:alias>"
            )
        self.checkpoint = checkpoint
        self.templates = [str(t) for t in templates]
        check_templates({"templates": self.templates}, self.key)
        self.class_names = class_names
        self.cache_dir = Path(cache_dir)
        self.batch_size = batch_size

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Before fitting: the head's weights from the zero-shot classifier."""
        if stage != "fit":
            return
        linear = head_linear(pl_module, self.key)
        names = class_names_for(list(trainer.datamodule.label_names), self.class_names)
        source = PretrainedCheckpoint.load(self.checkpoint, self.cache_dir)
        weights = zeroshot_weights(source, names, self.templates, self.batch_size)
        set_head(linear, weights.to(linear.weight), self.key)
        log.info("zero-shot head: %d classes from %s", len(names), source.path)
