"""Which parameters of a pretrained backbone train: the one place that decides it.

Every pretrained encoder takes the same three keys:

* ``freeze``: ``none`` (everything trains), ``frozen`` (the backbone is a fixed feature
  extractor) or ``last_n`` (only the last ``trainable_blocks`` repeated blocks train).
* ``trainable_blocks``: how many blocks train with ``last_n``.
* ``lora``: ``{r, alpha, dropout, target_modules}`` to train low-rank adapters (Hu et al.,
  ICLR 2022, via ``peft``) instead of the backbone weights. The base weights are then frozen
  whether ``freeze`` is ``none`` or ``frozen``; ``last_n`` is rejected as ambiguous.

Frozen parts of a backbone are kept in eval mode during training
(:func:`mmexp.utils.freezing.freeze`); with LoRA the backbone follows the training mode,
since the adapters' dropout should be active.

The encoder's projection layers always train: they map the backbone width to the shared
fusion width and start from random weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.utils.freezing import freeze, unfreeze

FREEZE_MODES = ("none", "frozen", "last_n")
LORA_KEYS = ("r", "alpha", "dropout", "target_modules")

# Attribute paths of the repeated blocks, in the order they are tried: timm models
# (``blocks``, ``stages``, ``layers``), Hugging Face encoders (``encoder.layer`` for BERT and
# AST, ``encoder.layers`` for wav2vec2 / HuBERT, ``layers`` for a Whisper encoder), the towers
# of vision-language models (open_clip's ``transformer.resblocks`` in its image and text
# towers, a Hugging Face CLIP / SigLIP tower's ``encoder.layers``; see
# :mod:`mmexp.encoders.clip_towers`).
BLOCK_PATHS = (
    "blocks",
    "stages",
    "layers",
    "encoder.layer",
    "encoder.layers",
    "encoder.blocks",
    "transformer.resblocks",
    "visual.transformer.resblocks",
    "text.transformer.resblocks",
    "vision_model.encoder.layers",
    "text_model.encoder.layers",
)
# Where the blocks sit relative to an mmexp encoder: in it (built-in encoders, whose audio
# CNN is ``cnn``) or in its pretrained ``backbone``.
ENCODER_PREFIXES = ("", "backbone.")


def count_parameters(module: nn.Module) -> tuple[int, int]:
    """Return ``(trainable, total)`` parameter counts of ``module``."""
    trainable = total = 0
    for parameter in module.parameters():
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total


def find_blocks(backbone: nn.Module, key: str) -> list[str]:
    """Names (relative to ``backbone``) of its repeated blocks, first to last.

    Args:
        backbone: A timm or Hugging Face model.
        key: Config prefix of the encoder, named in the error.

    Raises:
        ValueError: No known block container was found.
    """
    for path in (p + b for p in ENCODER_PREFIXES for b in (*BLOCK_PATHS, "cnn")):
        try:
            container = backbone.get_submodule(path)
        except AttributeError:
            continue
        if isinstance(container, (nn.ModuleList, nn.Sequential)) and len(container) > 0:
            return [f"{path}.{name}" for name, _ in container.named_children()]
    # torchvision-style ResNets (timm's included) number their stages layer1..layerN.
    numbered = [name for name, _ in backbone.named_children() if name.startswith("layer")]
    if numbered and all(name[5:].isdigit() for name in numbered):
        return sorted(numbered, key=lambda name: int(name[5:]))
    raise ValueError(
        f"{key}.freeze=last_n: found no repeated blocks in {type(backbone).__name__} "
        f"(looked for {', '.join(BLOCK_PATHS)}, layer1..N); use {key}.freeze=frozen or none"
    )


def modules_after(root: nn.Module, block: str) -> list[str]:
    """The outermost submodules of ``root`` registered after ``block`` (final norm, projection).

    Registration order is the order a forward pass usually runs them in; the containers
    of ``block`` itself come before it and are not included.
    """
    names = [name for name, _ in root.named_modules()]
    end = max(i for i, name in enumerate(names) if name == block or name.startswith(block + "."))
    after: list[str] = []
    for name in names[end + 1 :]:
        if not any(name.startswith(outer + ".") for outer in after):
            after.append(name)
    return after


def _linear_names(backbone: nn.Module) -> list[str]:
    # Last name components, the form LoRA's target_modules matches against.
    modules = backbone.named_modules()
    return sorted({name.rsplit(".", 1)[-1] for name, m in modules if isinstance(m, nn.Linear)})


class Trainability:
    """A validated trainability setting, applied to a backbone and kept on ``train()``.

    Args:
        freeze: ``"none"``, ``"frozen"`` or ``"last_n"``.
        trainable_blocks: Blocks that train with ``freeze="last_n"`` (counted from the end).
        lora: LoRA settings (``r``, ``alpha``, ``dropout``, ``target_modules``) or ``None``.
        key: Config prefix of the encoder (``model.encoders.image``), named in errors.
        after_blocks: With ``last_n``, the layers registered after the last block (final
            norm, projection) train too (:func:`modules_after`); a finetuning protocol
            applies it to a whole encoder, projections included.

    Raises:
        ValueError: An unknown mode, a block count without ``last_n``, LoRA with ``last_n``,
            or unknown LoRA keys.
    """

    def __init__(
        self,
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
        key: str = "model.encoders",
        *,
        after_blocks: bool = False,
    ) -> None:
        if freeze not in FREEZE_MODES:
            raise ValueError(f"{key}.freeze must be one of {FREEZE_MODES}, got {freeze!r}")
        if freeze == "last_n" and trainable_blocks < 1:
            raise ValueError(
                f"{key}.freeze=last_n needs {key}.trainable_blocks >= 1, got {trainable_blocks}"
            )
        if freeze != "last_n" and trainable_blocks:
            raise ValueError(
                f"{key}.trainable_blocks={trainable_blocks} only applies with "
                f"{key}.freeze=last_n (freeze is {freeze!r})"
            )
        if lora is not None:
            unknown = sorted(set(lora) - set(LORA_KEYS))
            if unknown:
                raise ValueError(f"{key}.lora has unknown keys {unknown}; allowed: {LORA_KEYS}")
            if freeze == "last_n":
                # Ambiguous (adapters everywhere and full blocks at the end): not supported.
                raise ValueError(f"{key}.lora trains adapters only; set {key}.freeze=none")
        if after_blocks and freeze != "last_n":
            raise ValueError(f"after_blocks applies with {key}.freeze=last_n, not {freeze!r}")
        self.freeze = freeze
        self.trainable_blocks = trainable_blocks
        self.after_blocks = after_blocks
        self.lora = dict(lora) if lora is not None else None
        self.key = key

    def apply(self, backbone: nn.Module) -> nn.Module:
        """Set ``requires_grad`` (and inject LoRA adapters) on ``backbone``; return it.

        Frozen parts stay in eval mode through later ``train()`` calls.
        """
        if self.lora is not None:
            # Adapter dropout must follow the training mode: the backbone is not frozen as a
            # whole, only its base weights.
            return self._inject_lora(backbone)
        if self.freeze == "none":
            unfreeze(backbone)
            return backbone
        live: list[str] = []
        if self.freeze == "last_n":
            blocks = find_blocks(backbone, self.key)
            if self.trainable_blocks > len(blocks):
                raise ValueError(
                    f"{self.key}.trainable_blocks={self.trainable_blocks} but "
                    f"{type(backbone).__name__} has only {len(blocks)} blocks"
                )
            live = blocks[-self.trainable_blocks :]
            if self.after_blocks:
                live += modules_after(backbone, blocks[-1])
        freeze(backbone, live)
        return backbone

    def _inject_lora(self, backbone: nn.Module) -> nn.Module:
        from peft import LoraConfig, inject_adapter_in_model

        settings = dict(self.lora or {})
        target = settings.get("target_modules")
        if target is None:
            target = self._default_lora_targets(backbone)
        elif not isinstance(target, str):
            target = list(target)  # a ListConfig from Hydra
        config = LoraConfig(
            r=int(settings.get("r", 8)),
            lora_alpha=int(settings.get("alpha", 16)),
            lora_dropout=float(settings.get("dropout", 0.0)),
            target_modules=target,
        )
        try:
            backbone = inject_adapter_in_model(config, backbone)
        except ValueError as error:
            raise ValueError(
                f"{self.key}.lora.target_modules={target!r}: {error}. Linear layers of "
                f"{type(backbone).__name__}: {_linear_names(backbone)}"
            ) from error
        # peft already freezes the base weights; make it explicit for any non-LoRA tensor.
        for name, parameter in backbone.named_parameters():
            parameter.requires_grad_("lora_" in name)
        return backbone

    def _default_lora_targets(self, backbone: nn.Module) -> Sequence[str]:
        # peft knows the attention projections of common transformers architectures.
        from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as defaults

        model_type = getattr(getattr(backbone, "config", None), "model_type", None)
        if model_type in defaults:
            return list(defaults[model_type])
        raise ValueError(
            f"{self.key}.lora.target_modules is required for {type(backbone).__name__}; "
            f"choose among its Linear layers: {_linear_names(backbone)}"
        )


class BackboneEncoder(ModalityEncoder):
    """Base of the encoders around a pretrained ``backbone`` with a :class:`Trainability`.

    Subclasses build their backbone, call :meth:`attach_backbone`, then add their projection
    layers (which therefore always train).
    """

    backbone: nn.Module
    trainability: Trainability

    def attach_backbone(
        self,
        backbone: nn.Module,
        freeze: str = "none",
        trainable_blocks: int = 0,
        lora: Mapping[str, Any] | None = None,
    ) -> None:
        """Apply the trainability setting to ``backbone`` and keep it as ``self.backbone``."""
        self.trainability = Trainability(
            freeze, trainable_blocks, lora, key=f"model.encoders.{self.modality}"
        )
        self.backbone = self.trainability.apply(backbone)
        self.train(self.training)

    def frozen_part(self) -> nn.Module:
        """The backbone: the projections after it always train."""
        return self.backbone

    def forward(self, inputs: Any) -> EncoderOutput:
        """Backbone, then projections: the same code path a feature cache splits in two."""
        return self.from_frozen_features(self.frozen_features(inputs, tokens=True))

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Activation checkpointing through the backbone's own switch (timm or transformers).

        Returns:
            Whether the backbone has such a switch.
        """
        backbone: Any = self.backbone
        if hasattr(backbone, "set_grad_checkpointing"):  # timm models
            backbone.set_grad_checkpointing(enable)
            return True
        if getattr(backbone, "supports_gradient_checkpointing", False):  # transformers
            if enable:
                # Non-reentrant checkpointing works with frozen inputs and under DDP.
                backbone.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False}
                )
            else:
                backbone.gradient_checkpointing_disable()
            return True
        return False

    def parameter_counts(self) -> tuple[int, int]:
        """``(trainable, total)`` parameters, backbone and projections together."""
        return count_parameters(self)
