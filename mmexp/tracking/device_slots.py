"""GPU slots for multirun jobs running side by side (``launcher=local_parallel``).

The joblib launcher runs ``n_jobs`` jobs at once in reused worker processes and knows
nothing of GPUs: without help every job would take GPU 0. Each job therefore holds a slot
while it runs, one of ``jobs_per_gpu`` per GPU, and trains on that slot's GPU
(``trainer.devices=[gpu]``). A slot is an exclusive ``flock`` on a file in a folder of
this machine (``device_slots.lock_dir``, by default one per user in the temporary
folder), so the jobs of every sweep running here share the slots without a coordinator,
and the operating system frees the slot of a job whose process dies. Slots are tried one
per GPU first, so two jobs on two GPUs never share one while the other idles, except that
a worker tries the GPU of its previous job first (a reused worker keeps a CUDA context on
every GPU it has used); a job finding every slot taken waits for one.

The device is chosen inside the worker rather than by ``CUDA_VISIBLE_DEVICES``: a reused
worker has initialised CUDA in its first job, after which that variable has no effect.
"""

from __future__ import annotations

import fcntl
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, open_dict

log = logging.getLogger(__name__)

#: The GPU this process's last job ran on, which it tries first for the next.
_last_gpu: dict[str, int] = {}
#: Accelerators under which a slot places the job on a GPU.
GPU_ACCELERATORS = frozenset({"auto", "gpu", "cuda"})


def slot_order(gpus: Sequence[int], jobs_per_gpu: int) -> list[tuple[int, int]]:
    """Every ``(gpu, slot)`` pair, the first slot of each GPU before any second one.

    Raises:
        ValueError: No GPU, or ``jobs_per_gpu`` below 1; the message names the key.
    """
    if jobs_per_gpu < 1:
        raise ValueError(f"device_slots.jobs_per_gpu must be at least 1, got {jobs_per_gpu}")
    if not gpus:
        raise ValueError("device_slots.gpus is empty: list the GPU indices the jobs share")
    return [(gpu, slot) for slot in range(jobs_per_gpu) for gpu in gpus]


@contextmanager
def hold_slot(
    folder: Path,
    gpus: Sequence[int],
    jobs_per_gpu: int,
    poll_s: float = 0.5,
    on_wait: Callable[[], None] | None = None,
) -> Iterator[tuple[int, int]]:
    """Hold a free ``(gpu, slot)`` for the duration of the block, waiting for one if needed.

    Args:
        folder: Where the lock files are (shared by the jobs of one sweep).
        gpus: GPU indices the jobs share.
        jobs_per_gpu: Jobs at once on one GPU.
        poll_s: Seconds between tries while every slot is taken.
        on_wait: Called once when the first try found every slot taken.

    Yields:
        The GPU index and the slot number on it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    order = slot_order(gpus, jobs_per_gpu)
    if "gpu" in _last_gpu:  # stable: the usual spread among the rest
        order.sort(key=lambda pair: pair[0] != _last_gpu["gpu"])
    waited = False
    while True:
        for gpu, slot in order:
            handle = os.open(folder / f"gpu{gpu}.slot{slot}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                continue
            try:
                # who holds it, for a person looking at a stuck sweep
                os.ftruncate(handle, 0)
                os.write(handle, f"{os.getpid()}\n".encode())
                _last_gpu["gpu"] = gpu
                yield gpu, slot
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                os.close(handle)
            return
        if not waited and on_wait is not None:
            on_wait()
        waited = True
        time.sleep(poll_s)


def slots_apply(cfg: DictConfig, cuda_devices: int) -> bool:
    """Whether ``cfg`` asks for device slots and this job would run on a GPU.

    Raises:
        ValueError: Slots are asked for but the job wants more than one device; the
            message names ``trainer.devices``.
    """
    settings = cfg.get("device_slots")
    if not settings or cuda_devices == 0:
        return False
    if str(cfg.trainer.get("accelerator", "auto")) not in GPU_ACCELERATORS:
        return False
    devices = cfg.trainer.get("devices", 1)
    if devices not in (1, "1"):
        raise ValueError(
            f"device_slots give each job one GPU, but trainer.devices={devices}; set "
            "trainer.devices=1, or run multi-GPU jobs without launcher=local_parallel"
        )
    return True


def lock_folder(settings: DictConfig) -> Path:
    """``device_slots.lock_dir``, else ``mmexp-device-slots-<uid>`` in the temporary folder."""
    if settings.get("lock_dir"):
        return Path(settings.lock_dir)
    return Path(tempfile.gettempdir()) / f"mmexp-device-slots-{os.getuid()}"


def slot_gpus(settings: DictConfig, cuda_devices: int) -> list[int]:
    """The GPUs named by ``device_slots.gpus`` (``null``: every visible one).

    Raises:
        ValueError: A named GPU is not visible; the message names the key.
    """
    if settings.get("gpus") is None:
        return list(range(cuda_devices))
    gpus = [int(gpu) for gpu in settings.gpus]
    unknown = [gpu for gpu in gpus if not 0 <= gpu < cuda_devices]
    if unknown:
        raise ValueError(
            f"device_slots.gpus names {unknown}, but this machine shows {cuda_devices} GPUs "
            f"(indices 0 to {cuda_devices - 1})"
        )
    return gpus


@contextmanager
def placed_on_slot(cfg: DictConfig, cuda_devices: int) -> Iterator[DictConfig]:
    """``cfg`` with ``trainer.devices`` set to the GPU of a held slot, for a job's duration.

    A config without ``device_slots``, or a job that would not run on a GPU (no CUDA, a CPU
    accelerator), is yielded unchanged.

    Args:
        cfg: The job's composed config.
        cuda_devices: GPUs this process sees (``torch.cuda.device_count()``).
    """
    if not slots_apply(cfg, cuda_devices):
        yield cfg
        return
    settings = cfg.device_slots
    with hold_slot(
        lock_folder(settings),
        slot_gpus(settings, cuda_devices),
        int(settings.get("jobs_per_gpu", 1)),
        on_wait=lambda: log.info("every GPU slot is taken: waiting for one"),
    ) as (gpu, slot):
        placed = cfg.copy()
        with open_dict(placed):
            placed.trainer.devices = [gpu]
        log.info("GPU slot %d of GPU %d: trainer.devices=[%d]", slot, gpu, gpu)
        yield placed


def without_placement(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved config without what the slots decide, for comparing two runs of one job.

    A job placed on GPU 1 computes what it computes on GPU 0, and the same job run later
    without the launcher is the same job: ``device_slots`` and the slot's
    ``trainer.devices`` are dropped.
    """
    placed = bool(config.get("device_slots"))
    config = {key: value for key, value in config.items() if key != "device_slots"}
    if not placed:
        return config
    trainer = dict(config.get("trainer") or {})
    if isinstance(trainer.get("devices"), list) and len(trainer["devices"]) == 1:
        trainer["devices"] = 1
    config["trainer"] = trainer
    return config
