"""Turn the ``finetune`` config into a protocol and a loaded source, before the model is built."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig

from mmexp.finetune.protocols import FinetuneProtocol
from mmexp.finetune.source import PretrainedCheckpoint


@dataclass
class Finetuning:
    """A protocol and, when ``finetune.checkpoint`` is set, its pretraining checkpoint."""

    protocol: FinetuneProtocol
    source: PretrainedCheckpoint | None

    def apply(self, module: pl.LightningModule, load_weights: bool = True) -> dict[str, Any]:
        """Load the pretrained towers into ``module`` and restrict what trains; the lineage."""
        return self.protocol.apply(module, self.source, load_weights)


def prepare_finetune(cfg: DictConfig, load_source: bool = True) -> Finetuning | None:
    """Instantiate ``cfg.finetune`` and adopt the pretraining run's encoders into ``cfg``.

    Call before building the model: the towers of the modalities the checkpoint holds are
    rebuilt from its config so that its weights fit.

    Args:
        cfg: The run config; ``model.encoders`` and ``model.width`` may be changed.
        load_source: Read the checkpoint (``False`` when only the structure is needed).

    Returns:
        ``None`` when ``cfg.finetune`` is not set.

    Raises:
        ValueError: No protocol chosen (only ``finetune.*`` keys set, e.g. by ``init=``), or
            the checkpoint holds none of ``data.modalities``.
    """
    node = cfg.get("finetune")
    if not node:
        return None
    if "_target_" not in node:
        raise ValueError(
            f"finetune.{sorted(node)[0]} is set but no finetuning protocol is "
            "chosen; add finetune=linear_probe|frozen|partial|lora|full"
        )
    protocol: FinetuneProtocol = instantiate(node)
    source = None
    if protocol.checkpoint and load_source:
        source = PretrainedCheckpoint.load(
            str(protocol.checkpoint), Path(cfg.paths.data_dir) / "wandb_artifacts"
        )
        shared = [m for m in cfg.data.modalities if m in source.towers]
        if not shared:
            raise ValueError(
                f"finetune.checkpoint: {source.path} holds towers {source.towers}, none of "
                f"data.modalities={list(cfg.data.modalities)}"
            )
        source.adopt_encoders(cfg, shared)
    return Finetuning(protocol, source)
