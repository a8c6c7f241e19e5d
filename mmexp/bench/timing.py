"""What the benchmarks share: device clocks, memory, FLOP counts and peak rates."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets, used for MFU. The
# PCIe H100 is listed before the generic name so that it matches first.
PEAK_BF16_FLOPS = (
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("GH200", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("A10G", 70e12),
)


def device_name(device: torch.device) -> str:
    """Human-readable name of the device the benchmark runs on."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({torch.get_num_threads()} threads)"


def peak_flops(device: torch.device) -> float | None:
    """The device's dense bf16 peak, or ``None`` where it is not known (CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so that a host clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class DeviceClock:
    """Host clock read after a device sync; memory peak tracked per measurement."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def reset_memory(self) -> None:
        """Start a new peak-memory window."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_mib(self) -> float | None:
        """Peak allocated device memory since :meth:`reset_memory`, in MiB."""
        if self.device.type != "cuda":
            return None
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def now(self) -> float:
        """Seconds, after all queued device work has finished."""
        synchronize(self.device)
        return time.perf_counter()


def count_flops(step: Callable[[], Any]) -> int:
    """FLOPs of one call of ``step`` (matrix products and convolutions, forward + backward)."""
    counter = FlopCounterMode(display=False)
    with counter:
        step()
    return int(counter.get_total_flops())


@dataclass
class Measurement:
    """Throughput of one training loop over a fixed number of timed steps.

    Attributes:
        name: Which loop (``"mmexp"`` or ``"plain"``).
        samples_per_s: Median over repeats of samples per second.
        step_ms: Median over repeats of milliseconds per optimizer step.
        peak_memory_mib: Peak device memory (GPUs only).
        final_loss: Loss of the last step, to check both loops computed the same thing.
        repeats: Samples per second of every repeat.
    """

    name: str
    samples_per_s: float
    step_ms: float
    peak_memory_mib: float | None
    final_loss: float
    repeats: list[float] = field(default_factory=list)
    mfu: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready fields."""
        return asdict(self)


def summarise(
    name: str,
    seconds: Sequence[float],
    steps: int,
    batch_size: int,
    memory: float | None,
    final_loss: float,
) -> Measurement:
    """Median throughput over repeats of ``steps`` timed steps each."""
    rates = [steps * batch_size / s for s in seconds]
    median_seconds = statistics.median(seconds)
    return Measurement(
        name, statistics.median(rates), 1000 * median_seconds / steps, memory, final_loss, rates
    )
