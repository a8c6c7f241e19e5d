"""OmegaConf resolvers used by the configs; registered when the entry points are imported."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_JOB_DIR = 120


def job_dir_name(override_dirname: str) -> str:
    """A folder name for a multirun job that is stable across reruns and never too long.

    Short override lists are used as they are (readable); longer ones keep a readable prefix
    and a hash of the whole string, because file systems cap a name at 255 bytes.
    """
    name = override_dirname.replace("/", "_") or "default"
    if len(name) <= MAX_JOB_DIR:
        return name
    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:12]
    return f"{name[: MAX_JOB_DIR - 13]}-{digest}"


def register_resolvers() -> None:
    """Register mmexp's resolvers (idempotent)."""
    OmegaConf.register_new_resolver("mmexp_job_dir", job_dir_name, replace=True)
