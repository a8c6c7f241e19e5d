"""Assemble a LightningModule from the composed config.

Widths flow from one piece to the next (every encoder projects to ``model.width``, the head
reads the fusion's ``out_dim``, the class count comes from the data), so the builder passes
them at instantiation instead of asking the user to keep them consistent by hand.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.processors import ModalityProcessor
from mmexp.fusion.base import FusionStrategy


def build_encoders(cfg: DictConfig) -> dict[str, ModalityEncoder]:
    """Instantiate ``model.encoders.<m>`` for every modality in ``data.modalities``.

    Raises:
        KeyError: A modality has no encoder configured.
        TypeError: The configured encoder is for another modality.
    """
    width = int(cfg.model.width)
    encoders: dict[str, ModalityEncoder] = {}
    for modality in cfg.data.modalities:
        node = cfg.model.encoders.get(modality)
        if node is None:
            configured = [m for m, v in cfg.model.encoders.items() if v is not None]
            raise KeyError(
                f"data.modalities includes {modality!r} but model.encoders.{modality} is not "
                f"set (configured: {configured}); add model/encoders/{modality}=<name>"
            )
        encoder = instantiate(node, out_dim=width)
        if not isinstance(encoder, ModalityEncoder) or encoder.modality != modality:
            raise TypeError(
                f"model.encoders.{modality} built {type(encoder).__name__}, which is not a "
                f"{modality} encoder"
            )
        encoders[modality] = encoder
    return encoders


def build_fusion(cfg: DictConfig) -> FusionStrategy:
    """Instantiate ``fusion`` over the configured modalities at width ``model.width``."""
    fusion = instantiate(cfg.fusion, modalities=list(cfg.data.modalities), dim=int(cfg.model.width))
    if not isinstance(fusion, FusionStrategy):
        raise TypeError(f"fusion._target_ built {type(fusion).__name__}, not a FusionStrategy")
    return fusion


def build_classifier(cfg: DictConfig, num_classes: int) -> pl.LightningModule:
    """Build encoders, fusion, head, loss and optimizer, and inject them into the module.

    Args:
        cfg: The composed run config.
        num_classes: Number of classes of the data set.

    Returns:
        The LightningModule of ``objective.module``, carrying the resolved config so that
        its checkpoints can be evaluated on their own.
    """
    encoders = build_encoders(cfg)
    fusion = build_fusion(cfg)
    if fusion.produces_logits:
        head: nn.Module = nn.Identity()
    else:
        head = instantiate(cfg.model.head, in_dim=fusion.out_dim, out_dim=num_classes)
    module = instantiate(
        cfg.objective.module,
        encoders=encoders,
        fusion=fusion,
        head=head,
        num_classes=num_classes,
        optimizer=instantiate(cfg.model.optimizer),
        scheduler=instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
    )
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    return module


def build_data_and_model(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Instantiate the data module, build the model for its classes, wire the processors.

    The data are prepared first because the class count and label names come from them;
    the encoders' own preprocessing is then installed in the data module.
    """
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_classifier(cfg, datamodule.num_classes)
    datamodule.set_processors(*encoder_processors(module))
    return datamodule, module


def encoder_processors(
    module: pl.LightningModule,
) -> tuple[dict[str, ModalityProcessor], dict[str, ModalityProcessor]]:
    """The training and evaluation preprocessing of every encoder of ``module``."""
    encoders: Any = module.encoders
    train = {name: encoder.processor(train=True) for name, encoder in encoders.items()}
    evaluation = {name: encoder.processor(train=False) for name, encoder in encoders.items()}
    return train, evaluation
