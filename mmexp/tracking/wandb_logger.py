"""Weights & Biases logger that works with or without an account.

``mode: auto`` logs online when an API key is available and offline otherwise, so a fresh
machine gets a complete local W&B run that ``wandb sync`` can upload later.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

MODES = ("auto", "online", "offline", "disabled")


def has_wandb_credentials() -> bool:
    """Whether an API key is available (environment variable or ``~/.netrc`` entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        hosts = netrc.netrc().hosts
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False
    return any("wandb" in host for host in hosts)


def resolve_mode(mode: str) -> str:
    """Turn ``auto`` into ``online``/``offline``; ``WANDB_MODE`` in the environment wins."""
    if mode not in MODES:
        raise ValueError(f"logger.wandb.mode={mode!r}; choose one of {list(MODES)}")
    forced = os.environ.get("WANDB_MODE")
    if forced in ("online", "offline", "disabled"):
        return forced
    if mode == "auto":
        return "online" if has_wandb_credentials() else "offline"
    return mode


def create_wandb_logger(
    save_dir: str | Path,
    project: str = "mmexp",
    mode: str = "auto",
    **kwargs: Any,
) -> WandbLogger:
    """Create a Lightning ``WandbLogger`` with the resolved mode.

    Args:
        save_dir: Folder the W&B run files are written under (the run folder).
        project: W&B project.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        **kwargs: Passed to ``WandbLogger`` and on to ``wandb.init`` (name, group, tags,
            job_type, entity, ...).
    """
    resolved = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=str(save_dir), project=project, mode=resolved, **kwargs)
