"""Reading checkpoints written by ``mmexp-train``, safely and with clear errors.

A checkpoint carries the run's config, and evaluation and finetuning rebuild the model by
instantiating its ``_target_`` entries. ``weights_only`` loading keeps the file from running
code while it is read; the allow-list keeps the config from naming arbitrary callables
(``os.system``...) to be called when the model is rebuilt.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from mmexp.lit.checkpoint_io import safe_load

# Modules whose callables a checkpoint's config may instantiate.
ALLOWED_TARGET_PREFIXES: tuple[str, ...] = (
    "mmexp.", "torch.", "torchvision.", "torchmetrics.", "pytorch_lightning.", "lightning.",
    "lightning_fabric.", "timm.", "transformers.", "peft.", "functools.partial",
)


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


def check_targets(config: dict[str, Any], source: str,
                  allowed: Sequence[str] = ALLOWED_TARGET_PREFIXES) -> None:
    """Refuse a config whose ``_target_`` values leave the allowed modules.

    Raises:
        ValueError: Naming the key path, its value and the file.
    """
    for where, target in targets(config):
        if not target.startswith(tuple(allowed)):
            raise ValueError(
                f"{source}: {where}={target!r} is outside the modules a checkpoint may "
                f"instantiate ({', '.join(p.rstrip('.') for p in allowed)}); refusing to "
                f"build a model from it")


def load_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` and check the mmexp config it carries.

    Args:
        path: The checkpoint file.
        key: The config key the path came from, named in errors.

    Raises:
        FileNotFoundError: No file at ``path``.
        ValueError: The file is not a readable checkpoint, has no mmexp config, or its
            config names a ``_target_`` outside the allowed modules.
    """
    checkpoint = safe_load(path, key)
    if "mmexp_config" not in checkpoint or "state_dict" not in checkpoint:
        raise ValueError(f"{key}: {path} was not written by mmexp-train (no mmexp_config)")
    check_targets(checkpoint["mmexp_config"], f"{key}: {path}")
    return checkpoint
