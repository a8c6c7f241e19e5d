"""Run a function in N gloo processes on CPU and collect what each rank returns."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _worker(
    rank: int, world_size: int, init_file: str, out_dir: str, function: Callable[[int, int], Any]
) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        torch.save(function(rank, world_size), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_distributed(
    function: Callable[[int, int], Any], world_size: int, tmp_path: Path
) -> list[Any]:
    """Run ``function(rank, world_size)`` in ``world_size`` processes; return each result.

    ``function`` must be importable (a module-level function) so that it can be pickled.
    """
    init_file = tmp_path / "dist_init"
    mp.spawn(
        _worker,
        args=(world_size, str(init_file), str(tmp_path), function),
        nprocs=world_size,
        join=True,
    )
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
