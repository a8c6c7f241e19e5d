"""The one step that changes a run's config: from the composed config to what is built.

A composed config does not yet say everything a run builds. Finetuning from a pretraining
checkpoint rebuilds the towers from that run's config (its encoders and ``model.width``); the
towers a finetuning protocol applies to depend on which encoders come pretrained; and
evaluating a checkpoint rebuilds the run it came from, without fetching the pretrained
weights its state dict replaces. :func:`resolve_run_config` makes all of these decisions on
a copy of the config, after checking it, so that the saved ``config.yaml`` is exactly what
:func:`mmexp.assemble.assemble` builds, and nothing edits the config after that.
"""

from __future__ import annotations

import copy
import logging
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from hydra.utils import get_object
from omegaconf import DictConfig, OmegaConf, open_dict

from mmexp.builders import tower_modalities
from mmexp.config_check import check_config
from mmexp.encoders.base import ModalityEncoder
from mmexp.finetune.protocols import DECODER
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.lit.frozen_weights import left_out_towers
from mmexp.utils.checkpoints import load_checkpoint

log = logging.getLogger(__name__)

Purpose = Literal["train", "eval", "bench"]
PURPOSES: tuple[Purpose, ...] = ("train", "eval", "bench")
#: Top-level config nodes whose targets may read values from pretrained weights.
PRETRAINED_VALUE_KEYS = ("objective", "logit_init")
#: Where ``mmexp-eval`` keeps the checkpoint it evaluates, in the resolved run config.
EVAL_CHECKPOINT_KEY = "eval_checkpoint"


def resolve_run_config(cfg: DictConfig, purpose: Purpose) -> DictConfig:
    """Check ``cfg`` and return the config the run builds from; ``cfg`` is not changed.

    Args:
        cfg: The composed config: ``conf/train.yaml`` or ``conf/bench.yaml`` for training and
            benchmarks, ``conf/eval.yaml`` for evaluation.
        purpose: ``"train"`` and ``"bench"`` adopt a finetuning source's towers and fix the
            towers its protocol applies to. ``"eval"`` returns the config of the run that
            wrote ``cfg.ckpt_path``, with ``cfg.overrides`` applied, pretrained weights
            switched off for the towers the checkpoint holds, and the checkpoint path at
            :data:`EVAL_CHECKPOINT_KEY`; with ``ckpt_path=null`` the model is built from
            ``cfg`` itself (its run groups resolved as for training, ``cfg.overrides``
            applied, the towers keeping their pretrained weights) and
            :data:`EVAL_CHECKPOINT_KEY` is null.

    Returns:
        A new config; for ``"eval"`` the run's config, not the eval config.

    Raises:
        ValueError: An unknown purpose, a finetuning config without a protocol, or a
            source holding none of ``data.modalities``.
        mmexp.config_check.ConfigError: The config has problems (all of them listed).
    """
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    check_config(cfg)  # before any checkpoint is read or anything built
    if purpose == "eval" and cfg.ckpt_path is not None:
        return _evaluated_run_config(cfg)
    if purpose == "eval":
        return _run_config_without_checkpoint(cfg)
    resolved = copy.deepcopy(cfg)
    _resolve_finetune(resolved)
    return resolved


def _resolve_finetune(cfg: DictConfig) -> None:
    """Adopt the pretraining run's towers and name the towers the protocol applies to."""
    node = cfg.get("finetune")
    if not node:
        return
    if "_target_" not in node:
        raise ValueError(
            f"finetune.{sorted(node)[0]} is set but no finetuning protocol is "
            "chosen; add finetune=logistic_probe|linear_probe|frozen|partial|lora|full"
        )
    # The towers the module is built with: data.modalities, or what the module names.
    towers = tower_modalities(cfg)
    from_checkpoint: list[str] = []
    if node.get("checkpoint"):
        source = PretrainedCheckpoint.load(
            str(node.checkpoint), Path(cfg.paths.data_dir) / "wandb_artifacts", mmap=True
        )
        from_checkpoint = [m for m in towers if m in source.towers]
        if not from_checkpoint:
            raise ValueError(
                f"finetune.checkpoint: {source.path} holds towers {source.towers}, none of "
                f"data.modalities={list(cfg.data.modalities)} (the model's towers: {towers})"
            )
        source.adopt_encoders(cfg, from_checkpoint)
    restricts = bool(getattr(get_object(str(node._target_)), "restricts", True))
    if node.get("towers") is None and restricts:
        hub = [m for m in towers if _loads_pretrained(cfg, m)]
        if _decoder_pretrained(cfg):
            hub.append(DECODER)
        with open_dict(cfg):
            # Evaluation rebuilds the same structure with pretrained weights off, when the
            # encoders alone would no longer tell which towers were pretrained.
            cfg.finetune.towers = sorted({*from_checkpoint, *hub})


def _decoder_pretrained(cfg: DictConfig) -> bool:
    """Whether the objective's decoder (captioning) comes with pretrained weights."""
    node = cfg.objective.get("decoder")
    if not node or "_target_" not in node:
        return False
    return bool(getattr(get_object(str(node._target_)), "pretrained", False))


def _loads_pretrained(cfg: DictConfig, modality: str) -> bool:
    node = cfg.model.encoders.get(modality)
    if node is None or "_target_" not in node:
        return False
    built = built_class(get_object(str(node._target_)))
    if built is None or not issubclass(built, ModalityEncoder):
        raise ValueError(
            f"model.encoders.{modality}._target_={node._target_} does not say which encoder "
            "it builds (a class, or a function annotated with its return type), so which "
            "towers come pretrained is unknown; set finetune.towers=[...]"
        )
    options = OmegaConf.to_container(node, resolve=True)
    return built.loads_pretrained(options)  # type: ignore[arg-type]


def built_class(target: object) -> type | None:
    """The class a ``_target_`` builds: itself, or a factory function's return annotation."""
    if isinstance(target, type):
        return target
    try:
        built = typing.get_type_hints(target).get("return")
    except Exception:  # unresolvable annotations: unknown
        return None
    return built if isinstance(built, type) else None


def _evaluated_run_config(cfg: DictConfig) -> DictConfig:
    checkpoint = load_checkpoint(cfg.ckpt_path, mmap=True)
    run_cfg = OmegaConf.create(checkpoint["mmexp_config"])
    run_cfg.merge_with_dotlist(list(cfg.get("overrides") or []))
    # Frozen towers the checkpoint left out are rebuilt as in the run: from their
    # pretrained source, the finetuning source checkpoint, or the seed.
    skip_pretrained_weights(run_cfg, keep=left_out_towers(checkpoint))
    with open_dict(run_cfg):
        run_cfg[EVAL_CHECKPOINT_KEY] = str(Path(cfg.ckpt_path).resolve())
    return run_cfg


def _run_config_without_checkpoint(cfg: DictConfig) -> DictConfig:
    """The eval config as the run it builds: finetuning resolved, no checkpoint to load."""
    run_cfg = copy.deepcopy(cfg)
    run_cfg.merge_with_dotlist(list(cfg.get("overrides") or []))
    _resolve_finetune(run_cfg)
    with open_dict(run_cfg):
        run_cfg[EVAL_CHECKPOINT_KEY] = None
    return run_cfg


def skip_pretrained_weights(run_cfg: DictConfig, keep: Iterable[str] = ()) -> None:
    """Build encoders without fetching pretrained weights: the checkpoint replaces them.

    Each encoder class says how
    (:meth:`~mmexp.encoders.base.ModalityEncoder.without_pretrained_weights`; the default
    for a target that does not say which class it builds).
    Hugging Face encoders still read their config and weights from ``name_or_path`` (the
    architecture is defined there), so that path must be reachable when evaluating.

    Values a config reads from pretrained weights (the contrastive loss's initial logit
    scale from a public model, ``logit_init``) are built the same way: a target with a
    ``without_pretrained_weights`` attribute under ``objective`` or ``logit_init`` has its
    options changed by it (the checkpoint holds the trained values).

    Args:
        run_cfg: The run's config, changed in place (a copy :func:`resolve_run_config` owns).
        keep: Modalities whose frozen weights the checkpoint left out
            (``model.save_frozen_weights=false``): built from their source as configured.
    """
    for key in PRETRAINED_VALUE_KEYS:
        if isinstance(run_cfg.get(key), DictConfig):
            _skip_pretrained_values(run_cfg[key])
    encoders = run_cfg.model.get("encoders") or {}
    for modality in list(encoders):
        node = encoders[modality]
        if node is None or modality in keep or "_target_" not in node:
            continue
        built = built_class(get_object(str(node._target_)))
        if built is None or not issubclass(built, ModalityEncoder):
            built = ModalityEncoder
        options = OmegaConf.to_container(node, resolve=False)
        encoders[modality] = OmegaConf.create(built.without_pretrained_weights(options))  # type: ignore[arg-type]


def _skip_pretrained_values(node: DictConfig) -> None:
    """Apply ``without_pretrained_weights`` of the targets below ``node`` that have one."""
    for key in list(node):
        child = node[key]
        if not isinstance(child, DictConfig):
            continue
        target = child.get("_target_")
        skip = (
            getattr(get_object(str(target)), "without_pretrained_weights", None) if target else None
        )
        if callable(skip):
            node[key] = OmegaConf.create(skip(OmegaConf.to_container(child, resolve=False)))
        else:
            _skip_pretrained_values(child)
