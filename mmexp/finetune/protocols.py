"""Finetuning protocols: which pretrained parameters train on the downstream task.

A protocol applies to the *pretrained towers*: the encoders loaded from the pretraining
checkpoint and encoders that come with hub weights (``encoder.pretrained``); encoders
trained from scratch always train. The protocols are the ones compared in the
representation-learning literature:

* ``linear_probe``: towers and fusion frozen, a linear classifier on top (CLIP, Sec. 3.2).
* ``frozen``: towers frozen, fusion and head trained.
* ``partial``: the last ``trainable_blocks`` blocks of each tower train (Yosinski et al.,
  "How transferable are features in deep neural networks?", NeurIPS 2014).
* ``lora``: low-rank adapters in the towers (Hu et al., ICLR 2022), towers otherwise frozen.
* ``full``: everything trains.

A captioner's decoder that comes pretrained (a Hugging Face language model) is a tower too,
named ``decoder`` in ``finetune.towers``: ``finetune=lora`` adapts it, ``frozen`` freezes it
(its new cross-attention or prefix mapper still trains).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
from torch import nn

from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.freezing import Trainability, count_parameters, find_blocks
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.utils.freezing import freeze

#: The ``finetune.towers`` name of a captioner's pretrained decoder.
DECODER = "decoder"


class FinetuneProtocol:
    """Base class and the ``full`` protocol: load pretrained towers, train everything.

    Args:
        checkpoint: Pretraining checkpoint (path or ``wandb:<entity>/<project>/<name>:<alias>``);
            ``None`` finetunes the encoders as configured (e.g. hub-pretrained MiniLM).
        towers: Modalities the protocol applies to; ``None`` means every pretrained tower.
    """

    name = "full"
    # Whether the protocol restricts training (and so needs a pretrained tower to act on).
    restricts = False

    def __init__(self, checkpoint: str | None = None, towers: Sequence[str] | None = None) -> None:
        self.checkpoint = checkpoint
        self.towers = list(towers) if towers is not None else None

    def restrict_encoder(self, encoder: ModalityEncoder, key: str) -> None:
        """Decide which parameters of one pretrained tower train (``full``: all)."""

    def adjust_module(
        self, module: pl.LightningModule, fusion_loaded: bool, check_sources: bool
    ) -> None:
        """Protocol-specific changes to the rest of the module (``full``: none)."""

    def apply(
        self,
        module: pl.LightningModule,
        source: PretrainedCheckpoint | None,
        load_weights: bool = True,
    ) -> dict[str, Any]:
        """Load the pretrained towers into ``module`` and restrict what trains.

        Args:
            module: The freshly built task module (with ``encoders``, and ``fusion``).
            source: The pretraining checkpoint, if any.
            load_weights: ``False`` rebuilds the finetuned structure only (evaluating a
                finetuned checkpoint, whose own weights are loaded afterwards).

        Returns:
            The lineage of the run: source checkpoint, its provenance, protocol and towers.

        Raises:
            ValueError: No pretrained tower to apply a restricting protocol to, or towers
                named that the module does not have.
        """
        encoders: Mapping[str, ModalityEncoder] = module.encoders  # type: ignore[assignment]
        loaded = [m for m in (source.towers if source else []) if m in encoders]
        fusion = getattr(module, "fusion", None)
        fusion_loaded = False
        if source is not None and load_weights:
            for modality in loaded:
                source.load_encoder(modality, encoders[modality])
            fusion_loaded = fusion is not None and source.load_fusion(fusion)
        parts = pretrainable_parts(module)
        hub = [name for name, part in parts.items() if part.pretrained]
        towers = self.towers if self.towers is not None else sorted({*loaded, *hub})
        unknown = sorted(set(towers) - set(parts))
        if unknown:
            raise ValueError(
                f"finetune.towers: {unknown} are not among the model's encoders "
                f"{sorted(encoders)}" + (" (or its pretrained decoder)" if DECODER in parts else "")
            )
        if not towers and self.restricts:
            raise ValueError(
                f"finetune={self.name}: no pretrained tower to apply it to; set "
                "finetune.checkpoint=<pretraining checkpoint>, use encoders with pretrained "
                "weights (e.g. model/encoders/text=minilm), or finetune=full"
            )
        for name in towers:
            key = "objective.decoder" if name == DECODER else f"model.encoders.{name}"
            self.restrict_encoder(parts[name], key)
        self.adjust_module(module, fusion_loaded, check_sources=load_weights)
        lineage: dict[str, Any] = {
            "protocol": self.name,
            "towers": towers,
            "towers_from_checkpoint": loaded,
            "fusion_from_checkpoint": fusion_loaded,
        }
        if source is not None:
            lineage.update(
                checkpoint=source.reference, path=str(source.path), run=source.provenance
            )
        return lineage


def pretrainable_parts(module: pl.LightningModule) -> dict[str, Any]:
    """The parts a protocol can apply to, by their ``finetune.towers`` name.

    The encoders, and a captioner's decoder when it comes with pretrained weights (a
    Hugging Face language model), named :data:`DECODER`.
    """
    parts: dict[str, Any] = dict(module.encoders)  # type: ignore[arg-type]
    decoder = getattr(module, "decoder", None)
    if decoder is not None and getattr(decoder, "pretrained", False):
        parts[DECODER] = decoder
    return parts


class Full(FinetuneProtocol):
    """Every parameter trains, starting from the pretrained weights."""


class Frozen(FinetuneProtocol):
    """Pretrained towers frozen (and kept in eval mode); fusion and head train."""

    name = "frozen"
    restricts = True

    def restrict_encoder(self, encoder: ModalityEncoder, key: str) -> None:  # noqa: D102
        encoder.set_trainability(Trainability("frozen", key=key))


class LinearProbe(Frozen):
    """Towers and fusion frozen; a single linear layer on the fused features is trained.

    The fusion must be parameter-free (concat, sum, product) or loaded from the checkpoint:
    a linear probe on a randomly initialised fusion would measure the random projection.
    """

    name = "linear_probe"

    def adjust_module(
        self, module: pl.LightningModule, fusion_loaded: bool, check_sources: bool
    ) -> None:
        """Replace the head by a linear layer and freeze the fusion."""
        fusion: Any = getattr(module, "fusion", None)
        if fusion is None or fusion.produces_logits:
            raise ValueError(
                f"finetune={self.name} needs a feature-level fusion (concat, sum, "
                f"...), not {type(fusion).__name__}"
            )
        _, fusion_parameters = count_parameters(fusion)
        if check_sources and fusion_parameters and not fusion_loaded:
            raise ValueError(
                f"finetune={self.name}: fusion {type(fusion).__name__} has "
                f"{fusion_parameters} parameters that are not in the pretraining checkpoint; "
                "use a parameter-free fusion (fusion=concat, sum, product) or finetune=frozen"
            )
        module.head = nn.Linear(fusion.out_dim, module.num_classes)
        freeze(fusion)


class Partial(FinetuneProtocol):
    """The last ``trainable_blocks`` blocks of each pretrained tower train.

    Layers after the blocks (final norm, projection) train with them; earlier blocks and
    the embeddings are frozen and stay in eval mode while the rest trains.

    Args:
        trainable_blocks: Blocks that train, counted from the end.
        **options: See :class:`FinetuneProtocol`.
    """

    name = "partial"
    restricts = True

    def __init__(self, trainable_blocks: int = 1, **options: Any) -> None:
        super().__init__(**options)
        if trainable_blocks < 1:
            raise ValueError(f"finetune.trainable_blocks must be >= 1, got {trainable_blocks}")
        self.trainable_blocks = trainable_blocks

    def restrict_encoder(self, encoder: ModalityEncoder, key: str) -> None:  # noqa: D102
        # Layers registered after the last block (final norm, projection) train with it,
        # in training mode; the rest of the tower is frozen and stays in eval mode.
        encoder.set_trainability(
            Trainability("last_n", self.trainable_blocks, key=key, after_blocks=True)
        )


class Lora(FinetuneProtocol):
    """Low-rank adapters in every pretrained tower; the tower's own weights stay frozen.

    Args:
        r: Adapter rank.
        alpha: Scaling numerator (``alpha / r`` scales the update).
        dropout: Dropout on the adapter input.
        target_modules: Layer names to adapt; ``None`` picks peft's defaults for Hugging Face
            models and every linear / convolution layer inside the blocks otherwise.
        **options: See :class:`FinetuneProtocol`.
    """

    name = "lora"
    restricts = True

    def __init__(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.0,
        target_modules: Sequence[str] | None = None,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.settings = {"r": r, "alpha": alpha, "dropout": dropout}
        self.target_modules = list(target_modules) if target_modules is not None else None

    def restrict_encoder(self, encoder: ModalityEncoder, key: str) -> None:  # noqa: D102
        targets = self.target_modules or default_lora_targets(encoder, key)
        encoder.set_trainability(
            Trainability("none", lora={**self.settings, "target_modules": targets}, key=key)
        )


def default_lora_targets(encoder: ModalityEncoder, key: str) -> list[str]:
    """Adaptable layers of a tower.

    peft's defaults for a Hugging Face backbone, else the linear and convolution layers
    inside the tower's blocks.

    Output projections of ``nn.MultiheadAttention`` are left out: the attention reads their
    weight directly, so an adapter there would never be used.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

    # a Hugging Face encoder's backbone, or a captioner's language model
    model = getattr(encoder, "backbone", None) or getattr(encoder, "lm", None)
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in defaults:
        return list(defaults[config.model_type])
    inside_attention = {
        f"{name}.out_proj"
        for name, module in encoder.named_modules()
        if isinstance(module, nn.MultiheadAttention)
    }
    blocks = find_blocks(encoder, key)
    return [
        name
        for name, module in encoder.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d))
        and name not in inside_attention
        and any(name.startswith(block + ".") for block in blocks)
    ]
