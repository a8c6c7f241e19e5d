"""Reading checkpoints written by ``mmexp-train``, safely and with clear errors.

A checkpoint carries the run's config, and evaluation and finetuning rebuild the model by
instantiating its ``_target_`` entries. ``weights_only`` loading keeps the file from running
code while it is read; the allow-list keeps the config from naming arbitrary callables
(``os.system``...) to be called when the model is rebuilt.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmexp.lit.checkpoint_io import safe_load

# Modules whose callables a checkpoint's config may instantiate; a lab's own modules are
# added with MMEXP_TRUSTED_TARGETS=mylab.,otherlab.encoders. (comma-separated prefixes).
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "mmexp.",
    "torch.",
    "torchvision.",
    "torchmetrics.",
    "pytorch_lightning.",
    "lightning.",
    "lightning_fabric.",
    "timm.",
    "transformers.",
    "peft.",
    "functools.partial",
)
TRUSTED_TARGETS_ENV = "MMEXP_TRUSTED_TARGETS"
# The parts of a checkpoint's config that evaluation and finetuning build.
BUILT_FROM_CHECKPOINT = ("data", "model", "fusion", "objective", "finetune")


def allowed_prefixes() -> tuple[str, ...]:
    """The built-in prefixes plus those in ``MMEXP_TRUSTED_TARGETS``."""
    extra = os.environ.get(TRUSTED_TARGETS_ENV, "")
    return ALLOWED_TARGET_PREFIXES + tuple(p.strip() for p in extra.split(",") if p.strip())


def targets(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every ``(key path, value)`` of a ``_target_`` in a nested config."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_" and isinstance(value, str):
                yield where, value
            else:
                yield from targets(value, where)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            yield from targets(value, f"{path}[{index}]")


def check_targets(
    config: dict[str, Any], source: str, allowed: Sequence[str] | None = None
) -> None:
    """Refuse a config whose built parts name ``_target_`` values outside allowed modules.

    Only the parts evaluation and finetuning instantiate are checked
    (:data:`BUILT_FROM_CHECKPOINT`); a run's callbacks and loggers are never rebuilt from
    its checkpoint.

    Raises:
        ValueError: Naming the key path, its value and the file.
    """
    allowed = allowed_prefixes() if allowed is None else tuple(allowed)
    built = {key: config[key] for key in BUILT_FROM_CHECKPOINT if key in config}
    for where, target in targets(built):
        if not target.startswith(tuple(allowed)):
            raise ValueError(
                f"{source}: {where}={target!r} is outside the modules a checkpoint may "
                f"instantiate ({', '.join(p.rstrip('.') for p in allowed)}); refusing to "
                f"build a model from it (trust more modules with {TRUSTED_TARGETS_ENV})"
            )


def load_checkpoint(path: str | Path, key: str = "ckpt_path", mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check the mmexp config it carries.

    Args:
        path: The checkpoint file.
        key: The config key the path came from, named in errors.
        mmap: Map the tensors instead of reading them (:func:`~mmexp.lit.checkpoint_io.safe_load`).

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file is not a readable checkpoint, has no mmexp config, or its
            config names a ``_target_`` outside the allowed modules.
    """
    checkpoint = safe_load(path, key, mmap)
    if "mmexp_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{key}: {path} was not written by mmexp-train (no mmexp_config)")
    check_targets(checkpoint["mmexp_config"], f"{key}: {path}")
    return checkpoint
