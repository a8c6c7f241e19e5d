"""Finetuning from pretraining checkpoints: protocols, checkpoint sources, lineage."""

from mmexp.finetune.logistic_probe import LogisticProbe
from mmexp.finetune.protocols import (
    FinetuneProtocol,
    Frozen,
    Full,
    LinearProbe,
    Lora,
    Partial,
)
from mmexp.finetune.setup import Finetuning, finetuning_of
from mmexp.finetune.source import PretrainedCheckpoint, resolve_checkpoint

__all__ = [
    "FinetuneProtocol",
    "Finetuning",
    "Frozen",
    "Full",
    "LinearProbe",
    "LogisticProbe",
    "Lora",
    "Partial",
    "PretrainedCheckpoint",
    "finetuning_of",
    "resolve_checkpoint",
]
