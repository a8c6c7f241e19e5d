"""Loading pretrained backbones by hub name or local folder, with errors that say what to set.

A run that cannot get its weights should stop before training with a message naming the
config key to change, not with a stack of HTTP retries. Two details drive this module:

* ``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, when it is imported; a process that sets
  the variable later (a test, a notebook cell) would still try the network. Offline mode is
  therefore read from the environment at load time as well.
* A name such as ``org/model`` is both a valid hub id and a valid relative path, so only names
  that look like paths (``/``, ``.``, ``~`` prefixes) or that exist on disk count as local.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """Whether Hugging Face Hub downloads are switched off (``HF_HUB_OFFLINE`` and friends)."""
    from huggingface_hub import constants

    from_env = any(
        os.environ.get(var, "").strip().lower() in _TRUE
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
    return from_env or bool(constants.HF_HUB_OFFLINE)


def looks_local(name_or_path: str) -> bool:
    """Whether ``name_or_path`` names a folder on disk rather than a hub repository."""
    return name_or_path.startswith(("/", ".", "~")) or Path(name_or_path).exists()


def fetch_failed_message(name: str, key: str, local_hint: str) -> str:
    """The message of the error raised when pretrained weights cannot be fetched.

    Args:
        name: The hub name that was requested.
        key: The config key that holds it (``model.encoders.text.name_or_path``).
        local_hint: How to point the encoder at a local copy instead.
    """
    reason = (
        "offline mode is on (HF_HUB_OFFLINE) and they are not in the local cache"
        if hub_offline()
        else "no network access, or no such repository"
    )
    return (
        f"weights for {name!r} ({key}) could not be fetched from the Hugging Face Hub "
        f"({reason}). {local_hint}, or download them once on a machine with network access "
        "into the Hugging Face cache (HF_HOME / HF_HUB_CACHE) that this machine reads."
    )


def hf_from_pretrained(loader: Callable[..., T], name_or_path: str, key: str, **kwargs: Any) -> T:
    """Call ``loader`` (a ``from_pretrained``) on a local folder or a hub name.

    Args:
        loader: ``AutoModel.from_pretrained``, ``AutoTokenizer.from_pretrained``, ...
        name_or_path: Hub repository id or local folder written by ``save_pretrained``.
        key: Config key holding ``name_or_path``, named in errors.
        **kwargs: Passed to ``loader``.

    Raises:
        FileNotFoundError: ``name_or_path`` looks like a path and does not exist.
        RuntimeError: A hub name whose files are neither cached nor downloadable.
    """
    if looks_local(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.exists():
            raise FileNotFoundError(
                f"{key}={name_or_path!r}: no such folder; point it at a folder written by "
                "save_pretrained() or at a Hugging Face Hub name"
            )
        return loader(str(path), **kwargs)
    offline = hub_offline()
    try:
        # local_files_only: the cache may hold the files; never wait on retries when offline.
        return loader(name_or_path, local_files_only=offline, **kwargs)
    except OSError as error:  # transformers reports missing/unreachable files as OSError
        hint = (
            f"Pass a local folder instead: save the model and its preprocessor with "
            f"save_pretrained(folder) and set {key}=/path/to/folder"
        )
        raise RuntimeError(fetch_failed_message(name_or_path, key, hint)) from error
