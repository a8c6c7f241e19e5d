"""Finetuning from pretraining checkpoints: protocols, checkpoint sources, lineage."""

from mmexp.finetune.protocols import (
    FinetuneProtocol,
    Frozen,
    Full,
    LinearProbe,
    Lora,
    Partial,
)
from mmexp.finetune.setup import prepare_finetune
from mmexp.finetune.source import PretrainedCheckpoint, resolve_checkpoint

__all__ = [
    "FinetuneProtocol",
    "Frozen",
    "Full",
    "LinearProbe",
    "Lora",
    "Partial",
    "PretrainedCheckpoint",
    "prepare_finetune",
    "resolve_checkpoint",
]
