"""Run an mmexp entry point in a fresh process, as ``python -m mmexp.<entry>`` from a shell."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TAIL = 3000  # characters of stderr shown when the exit status is not the expected one


def cli_env(env: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """This process's environment with W&B and the Hugging Face hub offline and this
    checkout's code first on ``PYTHONPATH`` (also where another copy of mmexp is installed).

    ``env`` sets more variables; a ``None`` value removes the variable.
    """
    merged = {
        **os.environ,
        "WANDB_MODE": "offline",
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    for name, value in (env or {}).items():
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = value
    return merged


def run_cli(
    entry: str,
    *overrides: str,
    cwd: Path,
    multirun: bool = False,
    fast: Sequence[str] = (),
    env: Mapping[str, str | None] | None = None,
    timeout: float = 600,
    returncode: int | None = 0,
) -> subprocess.CompletedProcess:
    """Run ``python -m mmexp.<entry> [-m] *fast *overrides`` in ``cwd``; return the process.

    Args:
        entry: Module below ``mmexp``: ``train``, ``eval``, ``bench.cli``.
        overrides: Hydra overrides; they come after ``fast``, so they win over it.
        cwd: Working folder of the process (where a run without ``hydra.run.dir`` writes).
        multirun: Pass ``-m`` (a sweep), ahead of every override as Hydra's parser wants.
        fast: Settings put ahead of ``overrides``, e.g.
            :data:`~tests.helpers.configs.FAST_OVERRIDES`.
        env: Variables set (``None``: removed) on top of :func:`cli_env`.
        timeout: Seconds before the process is killed and the test fails.
        returncode: Exit status asserted (a negative one is the signal that ended the
            process); ``None`` asserts nothing.
    """
    flags = ["-m"] if multirun else []
    command = [sys.executable, "-m", f"mmexp.{entry}", *flags, *fast, *overrides]
    done = subprocess.run(
        command, capture_output=True, text=True, env=cli_env(env), cwd=cwd, timeout=timeout
    )
    if returncode is not None:
        assert done.returncode == returncode, (
            f"mmexp.{entry} exited with {done.returncode}, expected {returncode}; "
            f"stderr ends with:\n{done.stderr[-TAIL:]}"
        )
    return done
