"""Build everything a run needs from its resolved config, once, in one place.

``mmexp-train``, ``mmexp-eval`` and ``mmexp-bench`` all run the same sequence on a config
from :func:`mmexp.resolve.resolve_run_config`; the order matters and is kept here:

1. seed (the towers' initial weights depend on it);
2. the finetuning source, before the model (its protocol changes the model's structure);
3. the data module, then the module for its classes, then the encoders' preprocessing
   installed in the data module (:func:`mmexp.builders.build_data_and_model`);
4. the finetuning protocol: pretrained towers loaded, what trains restricted;
5. for evaluation, the checkpoint's weights;
6. for training, the feature cache (it runs the finished encoders, so after 4), the speed
   options (compiling last, on the final module), and the cost of the fusion.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytorch_lightning as pl
from omegaconf import DictConfig

from mmexp.builders import build_data_and_model, measure_fusion_cost
from mmexp.data.cached_datamodule import CachedDataModule
from mmexp.data.contract import MultimodalDataModule
from mmexp.data.feature_cache import with_feature_cache
from mmexp.finetune.setup import Finetuning, finetuning_of
from mmexp.lit.common import MultimodalModule
from mmexp.lit.frozen_weights import FROZEN_WEIGHTS_KEY, left_out_towers, restore_frozen_weights
from mmexp.lit.speed import apply_speed_options, speed_options
from mmexp.resolve import EVAL_CHECKPOINT_KEY, PURPOSES, Purpose
from mmexp.utils.checkpoints import load_checkpoint

log = logging.getLogger(__name__)


@dataclass
class AssembledRun:
    """A run's data module and LightningModule, built and wired, with what the record keeps.

    Attributes:
        cfg: The resolved config it was built from.
        datamodule: The data module (a :class:`~mmexp.data.cached_datamodule.CachedDataModule`
            when the feature cache is on), the module's preprocessing installed.
        module: The LightningModule, finetuning applied and, for evaluation, its weights
            loaded.
        lineage: Where the initial weights came from (finetuning), else ``None``.
        finetuning: The finetuning protocol and source, else ``None``.
        report: What the run record stores about the assembly: ``pretrained_from``,
            ``feature_cache``, ``speed_options``, ``fusion_cost`` (each only when it applies).
    """

    cfg: DictConfig
    datamodule: MultimodalDataModule
    module: MultimodalModule
    lineage: dict[str, Any] | None = None
    finetuning: Finetuning | None = None
    report: dict[str, Any] = field(default_factory=dict)


def assemble(
    cfg: DictConfig, purpose: Purpose = "train", report: dict[str, Any] | None = None
) -> AssembledRun:
    """Build the data module and module of a resolved config (see the module docstring).

    Args:
        cfg: A config from :func:`~mmexp.resolve.resolve_run_config` with the same purpose.
        purpose: ``"train"`` adds the feature cache, speed options and fusion cost;
            ``"eval"`` loads the weights of the checkpoint the config names (none when it
            names none: ``mmexp-eval ckpt_path=null``, the model as built); ``"bench"``
            builds the module alone (the benchmarks apply the speed options themselves).
        report: Filled with what the run record keeps as each step ends (see
            :attr:`AssembledRun.report`), so that a run failing half-way keeps what was done.

    Raises:
        ValueError: An unknown purpose, or ``"eval"`` on a config not resolved for it.
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    checkpoint = _evaluated_checkpoint(cfg) if purpose == "eval" else None
    # A finetuned checkpoint holds its towers' weights; their source is read only for the
    # frozen ones it left out (model.save_frozen_weights=false).
    load_source = checkpoint is None or bool(left_out_towers(checkpoint))
    finetuning = finetuning_of(cfg, load_source=load_source)
    datamodule, module = build_data_and_model(cfg)
    run = AssembledRun(
        cfg, datamodule, module, finetuning=finetuning, report=report if report is not None else {}
    )
    if finetuning is not None:
        run.lineage = finetuning.apply(module, load_weights=load_source)
        run.report["pretrained_from"] = run.lineage
    if checkpoint is not None:
        restore_frozen_weights(
            checkpoint["state_dict"],
            checkpoint.get(FROZEN_WEIGHTS_KEY),
            module.state_dict(),
            origin=str(cfg[EVAL_CHECKPOINT_KEY]),
        )
        module.load_state_dict(checkpoint["state_dict"])
    if purpose == "train":
        _prepare_training(run)
    return run


def _evaluated_checkpoint(cfg: DictConfig) -> dict[str, Any] | None:
    if EVAL_CHECKPOINT_KEY not in cfg:
        raise ValueError(
            f"assemble(purpose='eval') needs a config from resolve_run_config(cfg, 'eval'), "
            f"which names the checkpoint at {EVAL_CHECKPOINT_KEY}"
        )
    path = cfg[EVAL_CHECKPOINT_KEY]
    return None if path is None else load_checkpoint(path, "ckpt_path")


def _prepare_training(run: AssembledRun) -> None:
    datamodule = with_feature_cache(run.cfg, run.module, run.datamodule)
    if isinstance(datamodule, CachedDataModule):
        run.report["feature_cache"] = datamodule.report
    run.datamodule = datamodule
    speed = apply_speed_options(run.module, **speed_options(run.cfg.model))
    if speed:
        run.report["speed_options"] = speed
    cost = measure_fusion_cost(run.module, run.datamodule)
    if cost is not None:
        log.info(
            "fusion: %d parameters (head: %d), %d FLOPs per sample",
            cost["params"],
            cost["head_params"],
            cost["flops_per_sample"],
        )
        run.report["fusion_cost"] = cost
