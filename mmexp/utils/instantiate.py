"""Instantiate the trainer and the named entries of the ``callbacks`` and ``logger`` groups."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

#: What :func:`build_trainer` passes to ``trainer._target_`` beside the config.
TRAINER_INJECTED = frozenset({"callbacks", "logger"})


def declared_injection(
    declared: frozenset[str], path: str, arguments: dict[str, Any]
) -> dict[str, Any]:
    """``arguments``, once checked to be among the ``declared`` injections of ``path``.

    The config check reads the declarations (:data:`mmexp.builders.INJECTED`) to know which
    required parameters the config need not set; every injection site passes its arguments
    through here, so a site cannot pass one the declaration lacks.

    Raises:
        TypeError: An argument is not declared for ``path``.
    """
    undeclared = sorted(set(arguments) - declared)
    if undeclared:
        raise TypeError(
            f"{path}: the builders pass {undeclared}, which the declared injections "
            f"{sorted(declared)} lack; declare them (mmexp.builders.INJECTED)"
        )
    return arguments


def instantiate_group(group: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every entry with a ``_target_`` in a group of named configs.

    Args:
        group: e.g. ``cfg.callbacks`` (``{model_checkpoint: {...}, early_stopping: {...}}``);
            ``None`` gives an empty list.
        kind: Group name, used in error messages.

    Raises:
        TypeError: The group or one of its entries is not a mapping with ``_target_``.
    """
    if not group:
        return []
    if not isinstance(group, DictConfig):
        raise TypeError(f"{kind} config must be a mapping of named entries")
    objects = []
    for name, node in group.items():
        if node is None:
            continue  # an entry switched off from the command line (callbacks.x=null)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            raise TypeError(f"{kind}.{name} has no _target_; each entry must name a class")
        objects.append(instantiate(node))
    return objects


def build_trainer(cfg: DictConfig) -> pl.Trainer:
    """Instantiate ``cfg.trainer`` with the configured callbacks and loggers."""
    injected = {
        "callbacks": instantiate_group(cfg.get("callbacks"), "callbacks"),
        "logger": instantiate_group(cfg.get("logger"), "logger") or False,
    }
    return instantiate(cfg.trainer, **declared_injection(TRAINER_INJECTED, "trainer", injected))


def build_test_trainer(cfg: DictConfig) -> pl.Trainer:
    """A trainer of ``cfg.trainer`` (devices, strategy, precision) for extra test passes.

    Without callbacks, loggers or checkpointing: the passes of a robustness evaluation score
    a test-only module and log their results themselves.
    """
    return instantiate(
        cfg.trainer,
        callbacks=[],
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=False,
    )
