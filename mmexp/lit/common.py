"""What every mmexp LightningModule shares: optimisation, best-value tracking, provenance."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MaxMetric, MeanMetric, Metric, MinMetric

from mmexp.data.missing import PRESENT_KEY
from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.fusion.layers import presence_matrix
from mmexp.lit.frozen_weights import (
    FROZEN_WEIGHTS_KEY,
    drop_frozen_weights,
    restore_frozen_weights,
)
from mmexp.lit.lightning_compat import attached_trainer, logs_this_step, peek_experiment
from mmexp.lit.presence import ModalityDropout, encode_present
from mmexp.utils.freezing import KeepsFrozenInEval


def configure_optimization(
    module: pl.LightningModule,
    optimizer_factory: Callable[..., Optimizer],
    scheduler_factory: Callable[..., Any] | None,
) -> dict[str, Any]:
    """The injected optimizer over trainable parameters and, if any, its per-step schedule."""
    optimizer = optimizer_factory(params=[p for p in module.parameters() if p.requires_grad])
    if scheduler_factory is None:
        return {"optimizer": optimizer}
    total_steps = int(module.trainer.estimated_stepping_batches)
    scheduler = scheduler_factory(optimizer, total_steps=total_steps)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochMeans(nn.Module):
    """Weighted means of training values over an epoch and over every process.

    torchmetrics sums them across processes when :meth:`log_and_reset` computes them, in
    the epoch-end hook every process runs; Lightning's own ``sync_dist`` reduction may run
    where only rank 0 reads the values (the progress bar), which deadlocks DDP.
    """

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__()
        self.means = nn.ModuleDict({name: MeanMetric() for name in names})

    def update(self, values: Mapping[str, torch.Tensor], weight: int | torch.Tensor) -> None:
        """Add one batch's values (detached) with the batch size as weight.

        Several batches at once: ``[steps]`` values with a ``[steps]`` tensor of weights.
        """
        for name, value in values.items():
            self.means[name].update(value.detach(), weight=weight)

    def log_and_reset(self, module: pl.LightningModule, prefix: str, suffix: str = "") -> None:
        """Log ``<prefix><name><suffix>`` for every value seen this epoch, then reset."""
        for name, mean in self.means.items():
            if mean.update_called:
                module.log(f"{prefix}{name}{suffix}", mean.compute())
            mean.reset()


def log_training_step(module: pl.LightningModule, loss: torch.Tensor, batch_size: int) -> None:
    """Log this process's step loss without a device sync per step.

    Not on the progress bar, whose values are read with ``.item()`` every step; loggers
    read it every ``log_every_n_steps``, so it is logged in those steps (and the last of an
    epoch, whose value the run's final metrics keep) only: a ``self.log`` call costs about
    as much Python as a small model's step. Epoch means go through :class:`EpochMeans`.
    """
    trainer = attached_trainer(module)
    if trainer is not None and not (logs_this_step(trainer) or trainer.is_last_batch):
        return
    module.log("train/loss", loss, on_step=True, on_epoch=False, batch_size=batch_size)


def log_validation(
    module: pl.LightningModule, values: dict[str, torch.Tensor], best: Metric, monitor: str
) -> None:
    """Log validation values with ``<monitor>_best``, the monitored one on the progress bar.

    Raises:
        KeyError: ``monitor`` is not among the values; the message lists them.
    """
    if monitor not in values:
        raise KeyError(
            f"monitor={monitor!r} is not a validation metric of "
            f"{type(module).__name__}; choose one of {sorted(values)}"
        )
    best.update(values[monitor])
    values = {**values, f"{monitor}_best": best.compute()}
    monitored = values.pop(monitor)
    module.log_dict(values)
    module.log(monitor, monitored, prog_bar=True)


def provenance(module: pl.LightningModule) -> dict[str, Any]:
    """Where a checkpoint comes from: run folder, task, objective, W&B run, progress.

    Finetuning runs copy this into their own record, so a result can be traced back to the
    pretraining run that produced its initial weights.
    """
    config = getattr(module, "run_config", None) or {}
    info: dict[str, Any] = {
        "run_dir": config.get("paths", {}).get("output_dir"),
        "task_name": config.get("task_name"),
        "objective": type(module).__name__,
        "seed": config.get("seed"),
    }
    trainer = attached_trainer(module)
    if trainer is not None:
        info.update(epoch=trainer.current_epoch, global_step=trainer.global_step)
        for logger in trainer.loggers:
            run = peek_experiment(logger)  # never start a W&B run from here
            if run is not None and hasattr(run, "id"):
                info["wandb"] = {
                    "id": run.id,
                    "project": getattr(run, "project", None),
                    "entity": getattr(run, "entity", None),
                    "name": getattr(run, "name", None),
                }
    return info


def save_run_config(module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
    """Store the resolved run config and provenance so that a checkpoint stands alone."""
    if getattr(module, "run_config", None) is not None:
        checkpoint["mmexp_config"] = module.run_config
    checkpoint["mmexp_provenance"] = provenance(module)


class MultimodalModule(KeepsFrozenInEval, pl.LightningModule):
    """What every mmexp module shares: encoders, optimization, best value, checkpoints.

    Subclasses add their heads, losses and steps. Parts frozen with
    :func:`mmexp.utils.freezing.freeze` stay in eval mode while the rest trains. Each
    checkpoint carries the resolved run config and provenance, and leaves out the frozen
    encoder weights when ``model.save_frozen_weights=false``
    (:mod:`mmexp.lit.frozen_weights`).

    Args:
        encoders: One encoder per modality, keyed by the modality name used in batches.
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``,
            stepped every optimizer step.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"max"`` or ``"min"``.
        run_config: The resolved run config, stored in every checkpoint so that a checkpoint
            alone is enough to rebuild the model (``mmexp-eval``, finetuning).
        save_frozen_weights: Keep the frozen encoder weights in checkpoints.
        modality_dropout: Drop modalities of training samples at random (ModDrop,
            :class:`~mmexp.lit.presence.ModalityDropout`); only for modules that
            :attr:`handles_missing`.

    Raises:
        ValueError: An unknown ``monitor_mode``, or ``modality_dropout`` for a module that
            needs every modality.
        TypeError: ``save_frozen_weights`` is not a boolean.
    """

    #: Whether the module predicts from any subset of the modalities (batches marking
    #: modalities absent, modality dropout); modules that score pairs of them do not.
    handles_missing: bool = False

    #: Attributes holding metrics that accumulate across training steps or epochs; a
    #: checkpoint carries their states so that a resumed run continues them exactly
    #: (:mod:`mmexp.lit.resume`). Subclasses extend it with their own.
    carried: tuple[str, ...] = ("best_monitored",)

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
        modality_dropout: ModalityDropout | None = None,
    ) -> None:
        super().__init__()
        if modality_dropout is not None and not self.handles_missing:
            raise ValueError(
                f"{type(self).__name__} needs every modality of every sample: no "
                "model.modality_dropout"
            )
        if monitor_mode not in ("max", "min"):
            raise ValueError(f"monitor_mode must be 'max' or 'min', got {monitor_mode!r}")
        if not isinstance(save_frozen_weights, bool):
            raise TypeError(
                f"model.save_frozen_weights must be true or false, got {save_frozen_weights!r}"
            )
        self.encoders = nn.ModuleDict(dict(encoders))
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.monitor = monitor
        self.best_monitored = MaxMetric() if monitor_mode == "max" else MinMetric()
        # A plain dict: Hydra hands mappings over as DictConfig, which checkpoints should
        # not pickle.
        self.run_config: dict[str, Any] | None = (
            OmegaConf.to_container(run_config, resolve=True)  # type: ignore[assignment]
            if isinstance(run_config, DictConfig)
            else (dict(run_config) if run_config is not None else None)
        )
        self.save_frozen_weights = save_frozen_weights
        self.modality_dropout = modality_dropout

    @classmethod
    def tower_modalities(cls, data_modalities: Sequence[str]) -> list[str]:
        """The modalities the module has an encoder for, given those the data loads.

        One per loaded modality; a module whose towers also encode something the data does
        not hold (class prompts) names it here, so that its encoder is built and adopted
        from a pretraining checkpoint like the others.

        Raises:
            ValueError: Data modalities the module cannot take (subclasses).
        """
        return list(data_modalities)

    @classmethod
    def fused_modalities(cls, data_modalities: Sequence[str]) -> list[str]:
        """The modalities a fusion strategy of the module fuses: all those the data load.

        A module that generates one of them (a captioner's ``text``) fuses the others.
        """
        return list(data_modalities)

    def data_processors(self, train: bool) -> dict[str, Any]:
        """Processors the data loaders run for batch values the encoders do not read.

        None by default; a captioner's target captions are tokenized by its decoder.
        Called for the training (``train=True``) and the evaluation splits.
        """
        return {}

    @property
    def reads_tokens(self) -> bool:
        """Whether a part after the encoders reads their token sequences, not only pooled.

        A feature cache stores tokens only for modules that read them.
        """
        return False

    def carried_metrics(self) -> dict[str, Metric]:
        """The metrics of :attr:`carried`, by their module names (stable across versions).

        Raises:
            TypeError: A name in :attr:`carried` is not an attribute holding a torchmetrics
                ``Metric`` or a module of them (``MetricCollection``, :class:`EpochMeans`):
                a rename would otherwise drop its states from checkpoints, and a resumed
                run would silently restart them.
        """
        carried: dict[str, Metric] = {}
        for attribute in self.carried:
            held = getattr(self, attribute, None)
            metrics = (
                {
                    name: metric
                    for name, metric in held.named_modules(prefix=attribute)
                    if isinstance(metric, Metric)
                }
                if isinstance(held, nn.Module)
                else {}
            )
            if not metrics:
                owner = type(self).__name__
                found = type(held).__name__ if hasattr(self, attribute) else "no attribute"
                raise TypeError(
                    f"{owner}.carried names {attribute!r}, but {owner}.{attribute} is "
                    f"{found}, not a torchmetrics Metric or a module holding them"
                )
            carried.update(metrics)
        return carried

    def encode(self, batch: Mapping[str, Any]) -> dict[str, EncoderOutput]:
        """Run every encoder on the samples of the batch that have its modality.

        Which samples have which modality comes from the batch (``batch["present"]``) and,
        in training, from :attr:`modality_dropout`; absent samples are not encoded.
        """
        present = self.presence(batch)
        if present is None:
            return {name: encoder(batch[name]) for name, encoder in self.encoders.items()}
        size = len(next(iter(present.values())))
        return {
            name: encode_present(encoder, batch[name], present.get(name), size)
            for name, encoder in self.encoders.items()
        }

    def presence(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor] | None:
        """``{modality: [B] bool}`` of the samples encoded, ``None`` when all of them are.

        Raises:
            ValueError: The batch marks modalities absent for a module that needs them all,
                or holds a sample with no modality (named by its ``index``).
        """
        present = batch.get(PRESENT_KEY)
        if present is not None and not self.handles_missing:
            raise ValueError(
                f"{type(self).__name__} needs every modality of every sample, but the batch "
                "marks some absent (data.missing)"
            )
        modalities = list(self.encoders)
        if self.training and self.modality_dropout is not None:
            if present is None:
                size = len(batch["index"] if "index" in batch else batch["label"])
                device = self.device
                present = {m: torch.ones(size, dtype=torch.bool, device=device) for m in modalities}
            return self.modality_dropout(present, modalities)
        if present is not None:
            empty = ~presence_matrix(present, modalities).any(dim=1)
            if bool(empty.any()):
                rows = batch["index"][empty] if "index" in batch else empty.nonzero()
                raise ValueError(
                    f"samples {rows.flatten().tolist()[:5]} of the batch have no modality; "
                    "a sample must keep at least one"
                )
        return present

    def settle_training_metrics(self) -> None:
        """Hand training values still held per step to their metrics (none by default).

        Called before the metric states are read: at the end of the epoch and when a
        checkpoint stores them (:class:`~mmexp.lit.resume.ResumeState`).
        """

    def on_train_start(self) -> None:
        """Reset the best value seen during the sanity check."""
        # The sanity-check validation run must not count towards the best value.
        self.best_monitored.reset()

    def configure_optimizers(self) -> dict[str, Any]:
        """Build the injected optimizer and, if any, the per-step schedule."""
        return configure_optimization(self, self.optimizer_factory, self.scheduler_factory)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the run config and provenance; leave frozen weights out if configured."""
        save_run_config(self, checkpoint)
        drop_frozen_weights(self, checkpoint)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Take frozen encoder weights left out of the checkpoint from the built encoders."""
        restore_frozen_weights(
            checkpoint["state_dict"],
            checkpoint.get(FROZEN_WEIGHTS_KEY),
            self.state_dict(),
            origin="the checkpoint being loaded",
        )
