"""Turn a resolved ``finetune`` config into a protocol and, if it has one, a loaded source."""

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
    """A protocol and, when ``finetune.checkpoint`` is set and read, its pretraining checkpoint."""

    protocol: FinetuneProtocol
    source: PretrainedCheckpoint | None

    def apply(self, module: pl.LightningModule, load_weights: bool = True) -> dict[str, Any]:
        """Load the pretrained towers into ``module`` and restrict what trains; the lineage."""
        return self.protocol.apply(module, self.source, load_weights)


def finetuning_of(cfg: DictConfig, load_source: bool = True) -> Finetuning | None:
    """The finetuning of a config resolved by :func:`mmexp.resolve.resolve_run_config`.

    Args:
        cfg: The resolved run config (the towers of a pretraining source already adopted).
        load_source: Read the source checkpoint's weights (``False`` when only the
            finetuned structure is needed: evaluating a finetuned checkpoint).

    Returns:
        ``None`` when ``cfg.finetune`` is not set.
    """
    node = cfg.get("finetune")
    if not node:
        return None
    protocol: FinetuneProtocol = instantiate(node)
    source = None
    if protocol.checkpoint and load_source:
        source = PretrainedCheckpoint.load(
            str(protocol.checkpoint), Path(cfg.paths.data_dir) / "wandb_artifacts"
        )
    return Finetuning(protocol, source)
