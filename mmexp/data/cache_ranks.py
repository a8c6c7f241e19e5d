"""Which process builds a missing feature-cache entry, and how the others wait for it.

Under DDP every process assembles the run, feature cache included. When the processes
start together (``srun``, ``torchrun``, or a process group initialised before the run is
assembled) each would encode the whole split itself. Instead the first process of each
node builds a missing entry and the others wait until its file appears, then read it: per
node, so that a cache folder local to each node works as well as a shared one. The wait is
on the file (written aside and renamed, so it appears complete) rather than a collective
call: processes that find the entry already there never enter the wait, and no process can
block the others in a barrier they do not reach.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch.distributed as dist
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

# Environment variables holding the process's rank on its node, as launchers set them.
LOCAL_RANK_VARIABLES = ("LOCAL_RANK", "SLURM_LOCALID", "JSM_NAMESPACE_LOCAL_RANK")
POLL_S = 0.2


def local_rank() -> int:
    """This process's rank on its node: launcher variables, else the process group's rank.

    Without either it is the global rank Lightning reads from the environment (0 for a
    single process).
    """
    for name in LOCAL_RANK_VARIABLES:
        value = os.environ.get(name)
        if value is not None and value.strip().isdigit():
            return int(value)
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(rank_zero_only.rank)


def builds_entries() -> bool:
    """Whether this process computes missing entries (the first process of its node)."""
    return local_rank() == 0


def wait_for_entry(path: Path, timeout_s: float) -> None:
    """Wait until ``path`` exists (the builder renamed it into place).

    Raises:
        TimeoutError: Not there after ``timeout_s`` seconds; the message names the file and
            ``feature_cache.wait_s``.
    """
    deadline = time.monotonic() + timeout_s
    log.info("feature cache: waiting for process 0 of this node to write %s", path)
    while not path.is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"feature cache: {path} did not appear within {timeout_s:.0f} s "
                "(feature_cache.wait_s); the first process of this node builds it. Did "
                "it fail, or is feature_cache.dir not visible to every process?"
            )
        time.sleep(POLL_S)
