"""Data loading throughput: samples per second for each number of loader workers.

Each setting builds the configured data module with ``num_workers`` overridden, installs the
encoders' own preprocessing (decoding, resizing, tokenizing happen in the workers, as in
training) and reads a fixed number of training batches. The time to the first batch
(worker start-up) is reported apart from the steady rate, because persistent workers pay
it once per run rather than once per epoch.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

from mmexp.builders import encoder_processors, instantiate_datamodule


def _read(loader: Any, batches: int) -> tuple[float, float, int]:
    """``(seconds to the first batch, seconds for the rest, samples in the rest)``."""
    start = time.perf_counter()
    first = 0.0
    samples = 0
    iterator = iter(loader)
    for index in range(batches + 1):
        try:
            batch = next(iterator)
        except StopIteration:
            break
        if index == 0:
            first = time.perf_counter() - start
            continue
        samples += len(batch["index"])
    return first, time.perf_counter() - start - first, samples


def loading_throughput(
    cfg: DictConfig,
    module: Any,
    workers: Sequence[int],
    batches: int,
    pin_memory: bool | None = None,
) -> dict[str, Any]:
    """Samples per second of the training loader for each worker count.

    Args:
        cfg: The composed run config (``data`` is instantiated with each worker count).
        module: The built model, whose encoders give the preprocessing.
        workers: Worker counts to measure (0 reads in the main process).
        batches: Batches timed after the first.
        pin_memory: Override ``data.pin_memory``; ``None`` keeps the config's value.

    Returns:
        Per worker count: samples/s, samples/s per worker, first-batch seconds.
    """
    train, evaluation = encoder_processors(module)
    rows = []
    for count in workers:
        options: dict[str, Any] = {"num_workers": int(count), "persistent_workers": False}
        if pin_memory is not None:
            options["pin_memory"] = pin_memory
        datamodule = instantiate_datamodule(cfg, **options)
        datamodule.prepare_data()
        datamodule.set_processors(train, evaluation)
        datamodule.setup("fit")
        first, seconds, samples = _read(datamodule.train_dataloader(), batches)
        rate = samples / seconds if seconds > 0 else float("nan")
        rows.append(
            {
                "workers": int(count),
                "samples_per_s": rate,
                "samples_per_s_per_worker": rate / max(int(count), 1),
                "first_batch_s": first,
                "samples": samples,
            }
        )
    base = rows[0]["samples_per_s"] if rows else float("nan")
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base
    return {"batch_size": int(cfg.data.batch_size), "batches": batches, "rows": rows}
