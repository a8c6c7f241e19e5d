"""Weights & Biases logger that works with or without an account, and never stops training.

``mode: auto`` logs online when an API key is available and offline otherwise, so a fresh
machine gets a complete local W&B run that ``wandb sync`` can upload later. When W&B cannot
start (init timeout, no network, service error), the logger falls back to an offline run,
and if even that fails, to W&B's disabled run: training goes on and the local run record
(results.json, CSV metrics) stays complete either way.
"""

from __future__ import annotations

import logging
import netrc
import os
import secrets
import string
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import WandbLogger

from mmexp.lit.lightning_compat import peek_experiment, set_experiment, wandb_init_arguments

log = logging.getLogger(__name__)

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


class ResilientWandbLogger(WandbLogger):
    """A ``WandbLogger`` whose failures degrade to offline, then disabled, never to a crash.

    Attributes:
        fallback: ``None`` while W&B works as asked; otherwise a sentence saying what
            failed and how to recover (stored in the run record).
    """

    fallback: str | None = None

    @property
    def experiment(self) -> Any:  # noqa: D102 - documented on WandbLogger
        started = peek_experiment(self)
        if started is not None:
            return started
        arguments = wandb_init_arguments(self)
        if arguments.get("anonymous") is None:
            # Lightning passes anonymous=None when unset; W&B warns that the setting has no
            # effect, once per process, whatever its value.
            arguments.pop("anonymous", None)
        if not arguments.get("id"):
            # One W&B run per run folder: a run resumed into its folder (ckpt_path=last, a
            # requeued SLURM job) logs on into the run it started.
            arguments["id"] = folder_run_id(Path(self.save_dir or "."))
            arguments.setdefault("resume", "allow")
        try:
            return super().experiment
        except Exception as error:  # W&B raises many types (CommError, UsageError, timeouts)
            return self._fall_back(error)

    def _fall_back(self, error: Exception) -> Any:
        import wandb

        arguments = wandb_init_arguments(self)
        asked = arguments.get("mode", "online")
        # A fresh id: W&B keeps the failed run's id reserved in this process.
        retry = {key: value for key, value in arguments.items() if key not in ("id", "resume")}
        cause = error
        for mode in ("offline", "disabled"):
            if mode == asked:
                continue
            try:
                run = wandb.init(**{**retry, "mode": mode})
            except Exception as retry_error:  # noqa: BLE001 - any failure: try the next mode
                error = retry_error
                continue
            set_experiment(self, run)
            folder = getattr(run, "dir", None) if mode == "offline" else None
            self.fallback = (
                f"W&B {asked} run could not start ({type(cause).__name__}: {cause}); "
                + (
                    f"logged offline instead, upload later with: wandb sync {Path(folder).parent}"
                    if mode == "offline"
                    else "W&B logging disabled for this run"
                )
            )
            log.warning("%s. Training continues; the local run record is complete.", self.fallback)
            return run
        raise RuntimeError("W&B could not start even in disabled mode") from error

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:  # noqa: D102
        try:
            super().log_metrics(metrics, step)
        except Exception as error:  # a lost connection must not end a long run
            log.warning("W&B could not log metrics at step %s (%s); continuing", step, error)


RUN_ID_FILE = "wandb_run_id"


def folder_run_id(folder: Path) -> str:
    """The W&B run id of a run folder: read from it, or created and stored there."""
    stored = folder / RUN_ID_FILE
    if stored.is_file():
        return stored.read_text().strip()
    # W&B's own ids: 8 lowercase letters and digits
    run_id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
    folder.mkdir(parents=True, exist_ok=True)
    stored.write_text(run_id + "\n")
    return run_id


def create_wandb_logger(
    save_dir: str | Path,
    project: str = "mmexp",
    mode: str = "auto",
    **kwargs: Any,
) -> WandbLogger:
    """Create the resilient W&B logger with the resolved mode.

    Args:
        save_dir: Folder the W&B run files are written under (the run folder).
        project: W&B project.
        mode: ``auto``, ``online``, ``offline`` or ``disabled``.
        **kwargs: Passed to ``WandbLogger`` and on to ``wandb.init`` (name, group, tags,
            job_type, entity, log_model, ...).
    """
    resolved = resolve_mode(mode)
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return ResilientWandbLogger(save_dir=str(save_dir), project=project, mode=resolved, **kwargs)
