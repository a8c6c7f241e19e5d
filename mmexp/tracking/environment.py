"""What a run was made with: code version and package versions."""

from __future__ import annotations

import os
import platform
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

TRACKED_PACKAGES = (
    "mmexp",
    "torch",
    "torchvision",
    "pytorch-lightning",
    "torchmetrics",
    "hydra-core",
    "hydra-joblib-launcher",
    "omegaconf",
    "timm",
    "transformers",
    "wandb",
    "numpy",
    "pillow",
)


def _git(args: list[str], cwd: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """Commit SHA and dirty flag of the git checkout holding ``path``.

    Args:
        path: A path inside the checkout; defaults to the mmexp source folder, because the
            code that ran is what a result must be traced back to.

    Returns:
        ``{"sha": str | None, "dirty": bool | None, "branch": str | None}``; all ``None``
        outside a git checkout.
    """
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], cwd)
    if sha is None:
        return {"sha": None, "dirty": None, "branch": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {
        "sha": sha,
        "dirty": bool(status) if status is not None else None,
        "branch": _git(["rev-parse", "--abbrev-ref", "HEAD"], cwd),
    }


def package_versions(names: tuple[str, ...] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed version of each package (``None`` when not installed)."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    """Git state, package versions, Python, platform, host, process and thread count.

    The intra-op thread count changes speed, and on CPU the last digits of results; it
    differs between jobs run one after another and jobs run side by side
    (``launcher=local_parallel``).
    """
    return {
        "git": git_state(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
        "torch_threads": torch.get_num_threads(),
    }
