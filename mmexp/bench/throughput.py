"""Training throughput of an mmexp config against a plain PyTorch loop on the same model.

Both loops train a copy of the same freshly built module (same weights, speed options,
optimizer, schedule, gradient clipping, precision) on the same batches, already on the
device, so the ratio isolates what the framework adds per step (Lightning's loop, logging,
metrics, mmexp's per-step callbacks) from data loading, which the loading benchmark
measures on its own. The last loss of each loop is recorded: on CPU in float32 they must
agree, which is what shows the plain loop really does the same work.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import move_data_to_device

from mmexp.bench.timing import DeviceClock, Measurement, count_flops, peak_flops, summarise
from mmexp.data.batches import AnyBatch
from mmexp.lit.classifier import MultimodalClassifier
from mmexp.lit.contrastive import ContrastivePretrainer
from mmexp.lit.speed import apply_speed_options, speed_options

AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a Lightning ``precision`` setting.

    Raises:
        ValueError: A precision the plain loop does not reproduce (``*-true`` half types).
    """
    if str(precision) not in AUTOCAST:
        raise ValueError(
            f"mmexp-bench: trainer.precision={precision!r} is not benchmarked; "
            f"use one of {sorted(AUTOCAST)}"
        )
    return AUTOCAST[str(precision)]


def training_loss(module: pl.LightningModule, batch: AnyBatch) -> torch.Tensor:
    """The loss of one training step, written out without the framework.

    Raises:
        TypeError: A module the plain loop does not reproduce.
    """
    if isinstance(module, ContrastivePretrainer):
        if module.matching is not None:
            raise TypeError(
                "mmexp-bench: the plain loop does not reproduce image-text "
                "matching; benchmark objective=contrastive"
            )
        features = module.encode(batch)
        embeddings = [F.normalize(features[m].pooled, dim=-1) for m in module.modalities]
        # Pairs showing the same content are no negatives of each other (data.content_column).
        return module.loss_fn(*embeddings, ids=batch.get("content", batch["index"]))
    if isinstance(module, MultimodalClassifier):
        return module.loss_fn(module(batch), batch["label"])
    raise TypeError(f"mmexp-bench: no plain loop for {type(module).__name__}")


def prefetch(loader: Any, count: int, device: torch.device) -> list[AnyBatch]:
    """The first ``count`` batches of ``loader``, moved to ``device`` once."""
    batches = []
    for batch in loader:
        batches.append(move_data_to_device(batch, device))
        if len(batches) == count:
            return batches
    raise ValueError(f"mmexp-bench: the training loader has fewer than {count} batches")


class CycledBatches:
    """``total`` batches cycled from a list, as one iterable.

    A bare list would be taken by Lightning for a list of loaders.
    """

    def __init__(self, batches: Sequence[AnyBatch], total: int) -> None:
        self.batches, self.total = batches, total

    def __len__(self) -> int:
        return self.total

    def __iter__(self) -> Iterator[AnyBatch]:
        return (self.batches[step % len(self.batches)] for step in range(self.total))


class _StepTimer(pl.Callback):
    """Clock from the first timed batch to the end of the last one."""

    def __init__(self, clock: DeviceClock, warmup: int, total: int) -> None:
        self.clock, self.warmup, self.total = clock, warmup, total
        self.start = self.end = 0.0
        self.final_loss = float("nan")

    def on_train_batch_start(
        self, trainer: pl.Trainer, module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == self.warmup:
            self.start = self.clock.now()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        if batch_idx == self.total - 1:
            self.end = self.clock.now()
            self.final_loss = float(outputs["loss"])


#: The callback hooks Lightning calls in every training step.
STEP_HOOKS = (
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
)


def step_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The config's callbacks with a hook in every training step, as ``mmexp-train`` runs them.

    Checkpointing and early stopping act on validation, which the benchmark leaves out, and
    the progress bar is the terminal's (``enable_progress_bar``): those stay out, and so do
    callbacks acting only at fit start or epoch end (outside the timed steps).
    """
    nodes = cfg.get("callbacks") or {}
    built = [instantiate(node) for node in nodes.values() if node is not None]
    return [
        callback
        for callback in built
        if not isinstance(callback, (ModelCheckpoint, EarlyStopping, ProgressBar))
        and any(
            getattr(type(callback), hook) is not getattr(pl.Callback, hook) for hook in STEP_HOOKS
        )
    ]


class ThroughputBenchmark:
    """Times the mmexp (Lightning) loop and the plain loop on copies of one module.

    Args:
        cfg: The composed run config (its ``trainer`` and ``model`` speed options apply).
        module: The freshly built module; each measurement trains a deep copy.
        batches: Batches already on ``device``, cycled through.
        device: Where both loops run.
        warmup_steps: Untimed steps first (compilation, allocator, cuDNN autotuning).
        steps: Timed steps per repeat.
    """

    def __init__(
        self,
        cfg: DictConfig,
        module: pl.LightningModule,
        batches: Sequence[AnyBatch],
        device: torch.device,
        warmup_steps: int,
        steps: int,
    ) -> None:
        if int(cfg.trainer.get("devices", 1)) != 1 or int(cfg.trainer.get("num_nodes", 1)) != 1:
            raise ValueError("mmexp-bench measures one device: set trainer.devices=1")
        self.cfg = cfg
        self.initial = copy.deepcopy(module).cpu()
        self.batches = list(batches)
        self.device = device
        self.clock = DeviceClock(device)
        self.warmup, self.steps = warmup_steps, steps
        self.total = warmup_steps + steps
        self.precision = str(cfg.trainer.get("precision", "32-true"))
        self.dtype = autocast_dtype(self.precision)
        self.clip = cfg.trainer.get("gradient_clip_val")
        self.accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1))
        self.batch_size = len(self.batches[0]["index"])
        if self.total % self.accumulate:
            raise ValueError(
                f"mmexp-bench: warmup_steps + steps ({self.total}) must be a "
                f"multiple of trainer.accumulate_grad_batches ({self.accumulate})"
            )
        # Both loops run under the same cuDNN autotuning setting (Lightning sets it globally).
        torch.backends.cudnn.benchmark = bool(cfg.trainer.get("benchmark"))

    def fresh_module(self) -> pl.LightningModule:
        """A copy of the initial module with the config's speed options applied.

        The random generators are reset too, so both loops draw the same dropout masks.
        """
        module = copy.deepcopy(self.initial).to(self.device)
        apply_speed_options(module, **speed_options(self.cfg.model))
        torch.manual_seed(int(self.cfg.get("seed") or 0))
        return module

    def _batch(self, step: int) -> AnyBatch:
        return self.batches[step % len(self.batches)]

    def plain_loop(self) -> tuple[float, float]:
        """One timed run of the hand-written loop; ``(seconds, last loss)``."""
        module = self.fresh_module().train()
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = module.optimizer_factory(params=params)
        schedule = (
            module.scheduler_factory(optimizer, total_steps=self.total // self.accumulate)
            if module.scheduler_factory
            else None
        )
        scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        autocast = (
            torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else nullcontext()
        )
        start, loss = 0.0, torch.zeros(())
        for step in range(self.total):
            if step == self.warmup:
                start = self.clock.now()
            with autocast:
                loss = training_loss(module, self._batch(step))
            scaler.scale(loss / self.accumulate).backward()
            if (step + 1) % self.accumulate:
                continue
            if self.clip:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, float(self.clip))
            scaler.step(optimizer)
            scaler.update()
            loss_fn = getattr(module, "loss_fn", None)
            if hasattr(loss_fn, "clamp_parameters_"):  # the CLIP temperature bound, as mmexp's
                loss_fn.clamp_parameters_()
            optimizer.zero_grad(set_to_none=True)
            if schedule is not None:
                schedule.step()
        return self.clock.now() - start, float(loss.detach())

    def mmexp_loop(self) -> tuple[float, float]:
        """One timed run of the Lightning loop mmexp-train uses; ``(seconds, last loss)``."""
        module = self.fresh_module()
        timer = _StepTimer(self.clock, self.warmup, self.total)
        trainer_cfg = self.cfg.trainer
        with tempfile.TemporaryDirectory() as logs:
            trainer = pl.Trainer(
                accelerator=self.device.type if self.device.type != "cuda" else "gpu",
                devices=1,
                precision=self.precision,
                max_steps=self.total // self.accumulate,
                accumulate_grad_batches=self.accumulate,
                gradient_clip_val=self.clip,
                limit_val_batches=0,
                num_sanity_val_steps=0,
                logger=CSVLogger(logs),
                log_every_n_steps=int(trainer_cfg.get("log_every_n_steps", 50)),
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                callbacks=[timer, *step_callbacks(self.cfg)],
                benchmark=bool(trainer_cfg.get("benchmark")),
                default_root_dir=logs,
            )
            trainer.fit(module, train_dataloaders=CycledBatches(self.batches, self.total))
        return timer.end - timer.start, timer.final_loss

    def flops_per_step(self) -> int:
        """Forward + backward FLOPs of one training step (without compilation)."""
        module = copy.deepcopy(self.initial).to(self.device).train()
        return count_flops(lambda: training_loss(module, self._batch(0)).backward())

    def run(self, repeats: int) -> dict[str, Any]:
        """Alternate the two loops ``repeats`` times; medians, ratio and MFU."""
        timings: dict[str, list[float]] = {"plain": [], "mmexp": []}
        losses: dict[str, float] = {}
        memory: dict[str, float | None] = {}
        for _ in range(repeats):
            for name, loop in (("plain", self.plain_loop), ("mmexp", self.mmexp_loop)):
                self.clock.reset_memory()
                seconds, losses[name] = loop()
                timings[name].append(seconds)
                memory[name] = self.clock.peak_memory_mib()
        results: dict[str, Measurement] = {
            name: summarise(
                name, timings[name], self.steps, self.batch_size, memory[name], losses[name]
            )
            for name in timings
        }
        flops = self.flops_per_step()
        peak = peak_flops(self.device)
        for measurement in results.values():
            if peak:
                steps_per_s = 1000.0 / measurement.step_ms
                measurement.mfu = flops * steps_per_s / peak
        # Each repeat times both loops back to back: the ratio within a repeat sees the same
        # machine load, and its spread over repeats shows how far the median can be trusted.
        per_repeat = [
            plain / mmexp for plain, mmexp in zip(timings["plain"], timings["mmexp"], strict=True)
        ]
        return {
            "precision": self.precision,
            "batch_size": self.batch_size,
            "steps": self.steps,
            "warmup_steps": self.warmup,
            "repeats": repeats,
            "flops_per_step": flops,
            "peak_flops": peak,
            "speed_options": speed_options(self.cfg.model),
            "mmexp": results["mmexp"].as_dict(),
            "plain": results["plain"].as_dict(),
            "ratio": results["mmexp"].samples_per_s / results["plain"].samples_per_s,
            "ratio_per_repeat": per_repeat,
        }
