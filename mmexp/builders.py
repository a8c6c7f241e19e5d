"""Assemble a LightningModule from the composed config.

Widths flow from one piece to the next (every encoder projects to ``model.width``, the head
reads the fusion's ``out_dim``, the class count comes from the data), so the builder passes
them at instantiation instead of asking the user to keep them consistent by hand.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from mmexp import CONFIG_DIR
from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.processors import ModalityProcessor
from mmexp.fusion.base import FusionStrategy
from mmexp.fusion.cost import fusion_cost, match_params


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


def _fusion_class(cfg: DictConfig) -> type[FusionStrategy]:
    target = cfg.fusion.get("_target_")
    try:
        cls = get_class(target)
    except Exception as error:  # hydra raises ImportError or ValueError variants
        raise ValueError(f"fusion._target_={target!r} cannot be imported ({error})") from None
    if not (isinstance(cls, type) and issubclass(cls, FusionStrategy)):
        raise TypeError(f"fusion._target_={target!r} is not a FusionStrategy")
    return cls


def check_fusion(cfg: DictConfig) -> None:
    """Fail before any data or model work when the fusion cannot take the modalities.

    Raises:
        ValueError: The strategy needs more modalities than ``data.modalities`` has; the
            message lists the strategies that can take them.
    """
    cls = _fusion_class(cfg)
    count = len(cfg.data.modalities)
    if count < cls.min_modalities:
        fusion_dir = Path(CONFIG_DIR) / "fusion"
        valid = sorted(
            path.stem for path in fusion_dir.glob("*.yaml")
            if _fusion_class(OmegaConf.create({"fusion": OmegaConf.load(path)})).min_modalities
            <= count
        )
        raise ValueError(
            f"fusion {cls.__name__} needs at least {cls.min_modalities} modalities but "
            f"data.modalities={list(cfg.data.modalities)}; with {count} modality choose one "
            f"of fusion={valid}"
        )


def build_fusion(cfg: DictConfig, num_classes: int) -> FusionStrategy:
    """Instantiate ``fusion`` over the configured modalities at width ``model.width``.

    Decision-level strategies also get ``num_classes``. With ``fusion.match_params`` set
    to a parameter budget, the strategy's ``hidden_dim`` is chosen so that its parameter
    count is the largest within the budget (fair comparisons across strategies).
    """
    check_fusion(cfg)
    cls = _fusion_class(cfg)
    node = OmegaConf.to_container(cfg.fusion, resolve=True)
    budget = node.pop("match_params", None)  # type: ignore[union-attr]
    options: dict[str, Any] = {"modalities": list(cfg.data.modalities),
                               "dim": int(cfg.model.width)}
    if cls.produces_logits:
        options["num_classes"] = num_classes
    if budget is not None:
        if "hidden_dim" not in inspect.signature(cls).parameters:
            raise ValueError(
                f"fusion.match_params: {cls.__name__} has no width to scale (it is "
                "parameter-free); match capacity through model.width or the head instead"
            )
        options["hidden_dim"] = match_params(
            lambda width: instantiate(node, **options, hidden_dim=width), int(budget)
        )
    fusion = instantiate(node, **options)
    if not isinstance(fusion, FusionStrategy):
        raise TypeError(f"fusion._target_ built {type(fusion).__name__}, not a FusionStrategy")
    return fusion


def uses_fusion(cfg: DictConfig) -> bool:
    """Whether the objective's module takes a fusion strategy (``objective.uses_fusion``)."""
    return bool(cfg.objective.get("uses_fusion", True))


def build_module(cfg: DictConfig, num_classes: int) -> pl.LightningModule:
    """Build the parts the objective's module takes and inject them into it.

    Encoders, optimizer and schedule are always built; the fusion strategy when the
    objective uses one (``objective.uses_fusion``), the head and class count when the
    module's signature asks for them.

    Args:
        cfg: The composed run config.
        num_classes: Number of classes of the data set (``objective.num_outputs`` wins).

    Returns:
        The LightningModule of ``objective.module``, carrying the resolved config so that
        its checkpoints can be evaluated on their own.
    """
    accepted = inspect.signature(get_class(cfg.objective.module._target_)).parameters
    # A regression predicts objective.num_outputs values (one score) whatever the data's
    # class count: the head and decision-level fusion are built that wide.
    num_classes = int(cfg.objective.get("num_outputs") or num_classes)
    parts: dict[str, Any] = {
        "encoders": build_encoders(cfg),
        "optimizer": instantiate(cfg.model.optimizer),
        "scheduler": instantiate(cfg.model.scheduler) if cfg.model.get("scheduler") else None,
    }
    if uses_fusion(cfg) and "fusion" in accepted:
        fusion = build_fusion(cfg, num_classes)
        parts["fusion"] = fusion
        if "head" in accepted:
            parts["head"] = (nn.Identity() if fusion.produces_logits else instantiate(
                cfg.model.head, in_dim=fusion.out_dim, out_dim=num_classes))
    if "num_classes" in accepted:
        parts["num_classes"] = num_classes
    try:
        module = instantiate(cfg.objective.module, **parts)
    except InstantiationException as error:
        # Surface the module's own validation error (wrong modalities, fusion, ...) as is.
        cause = error.__cause__
        if isinstance(cause, (ValueError, TypeError)):
            raise type(cause)(f"objective.module: {cause}") from error
        raise
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    # Read by the module's checkpoint hooks (mmexp.lit.frozen_weights).
    module.save_frozen_weights = bool(cfg.model.get("save_frozen_weights", True))
    return module


def build_data_and_model(cfg: DictConfig) -> tuple[pl.LightningDataModule, pl.LightningModule]:
    """Instantiate the data module, build the model for its classes, wire the processors.

    The data are prepared first because the class count and label names come from them;
    the encoders' own preprocessing is then installed in the data module.
    """
    if uses_fusion(cfg):
        check_fusion(cfg)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    module = build_module(cfg, datamodule.num_classes)
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


def measure_fusion_cost(
    module: pl.LightningModule, datamodule: pl.LightningDataModule
) -> dict[str, int] | None:
    """Parameters and forward FLOPs per sample of the fusion, at the data's real lengths.

    Token counts come from encoding a few validation samples, so the figure matches what the
    strategy costs on this data set (token-level strategies scale with sequence length).
    ``None`` for a module without a fusion strategy (contrastive pretraining).
    """
    fusion: Any = getattr(module, "fusion", None)
    if fusion is None:
        return None
    datamodule.setup("validate")
    loader = datamodule.val_dataloader()
    batch = next(iter(loader))
    encoders: Any = module.encoders
    with torch.no_grad():
        lengths = {name: int(encoder(batch[name]).tokens.shape[1])
                   for name, encoder in encoders.items()}
    return fusion_cost(fusion, lengths, fusion.dim)
