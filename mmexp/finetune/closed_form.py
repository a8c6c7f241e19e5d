"""Protocols that set the head in closed form, and the fit step that replaces ``trainer.fit``.

A closed-form protocol (:class:`~mmexp.finetune.logistic_probe.LogisticProbe`) computes the
fused features of the training and validation splits once and sets the head from them,
without a gradient step. Lightning's fit loop then has nothing to do, and its
``ModelCheckpoint`` writes no checkpoint in a fit without optimizer steps, so
:func:`fit_closed_form` runs instead of ``trainer.fit``: fit the head, validate it with the
trainer (the run's validation metrics and ``<monitor>_best``, as after an epoch), and save the
checkpoint that the test, robustness and analysis steps and ``mmexp-eval`` read. Everything
after it is the ordinary pipeline.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities import move_data_to_device

if TYPE_CHECKING:  # the assembly imports the protocols
    from mmexp.assemble import AssembledRun
    from mmexp.lit.classifier import MultimodalClassifier

log = logging.getLogger(__name__)


class ClosedFormHead:
    """Mixin of the finetuning protocols that fit the head without gradient steps."""

    name: str

    def fit_head(
        self,
        module: MultimodalClassifier,
        train: Any,
        val: Any,
        device: torch.device,
    ) -> dict[str, Any]:
        """Set ``module.head`` from the training and validation loaders.

        Args:
            module: The assembled module, protocol applied.
            train: The training loader.
            val: The validation loader.
            device: Where the frozen towers and fusion run.

        Returns:
            What the run record keeps of the fit (under the protocol's name).
        """
        raise NotImplementedError


@torch.no_grad()
def fused_features(
    module: MultimodalClassifier, loader: Any, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused features ``[N, D]`` and labels ``[N]`` of a split, in sample-index order.

    The batches go through the module's own encoders and fusion in eval mode, as in its
    forward pass (cached features included), moved to ``device`` as Lightning moves them.
    Rows are ordered by sample index, each sample once, so the result does not depend on
    the training order.
    """
    was_training = module.training
    module.eval().to(device)
    features, labels, indices = [], [], []
    try:
        for batch in loader:
            batch = move_data_to_device(batch, device)
            features.append(module.fusion(module.encode(batch)).float().cpu())
            labels.append(batch["label"].cpu())
            indices.append(batch["index"].cpu())
    finally:
        module.train(was_training)
    if not features:
        raise ValueError("fused_features: the split has no samples")
    # Under DDP a training sampler pads its split with repeated samples: each sample once.
    first: dict[int, int] = {}
    for row, index in enumerate(torch.cat(indices).tolist()):
        first.setdefault(index, row)
    order = torch.tensor([first[index] for index in sorted(first)], dtype=torch.long)
    return torch.cat(features)[order], torch.cat(labels)[order]


def checkpoint_dir(trainer: pl.Trainer, output_dir: str | Path) -> Path:
    """The folder of the run's monitored ``ModelCheckpoint``, else ``<run>/checkpoints``."""
    for callback in trainer.callbacks:
        if isinstance(callback, ModelCheckpoint) and callback.monitor and callback.dirpath:
            return Path(callback.dirpath)
    return Path(output_dir) / "checkpoints"


def fit_closed_form(trainer: pl.Trainer, run: AssembledRun, protocol: ClosedFormHead) -> str:
    """Fit the head of ``run`` with ``protocol``, validate it, save it; the checkpoint path.

    The fit's report goes into the run record under the protocol's name and to every
    logger as a hyperparameter.

    Raises:
        ValueError: ``ckpt_path`` names a checkpoint to resume: a fit without training
            steps has none (``ckpt_path=last`` refits, as a fresh start would).
    """
    cfg = run.cfg
    resume = cfg.get("ckpt_path")
    if resume is not None and str(resume) != "last":
        raise ValueError(
            f"ckpt_path={resume}: finetune={protocol.name} fits the head in closed form, "
            "without training steps, so there is nothing to resume; drop ckpt_path"
        )
    datamodule = run.datamodule
    report = protocol.fit_head(
        run.module,
        datamodule.train_dataloader(),
        datamodule.val_dataloader(),
        trainer.strategy.root_device,
    )
    run.report[protocol.name] = report
    for logger in trainer.loggers:
        logger.log_hyperparams({protocol.name: report})
    trainer.validate(run.module, datamodule=datamodule, verbose=False)
    path = checkpoint_dir(trainer, cfg.paths.output_dir) / f"{protocol.name}.ckpt"
    trainer.save_checkpoint(path)
    log.info("finetune=%s: head fitted, checkpoint %s", protocol.name, path)
    return str(path)
