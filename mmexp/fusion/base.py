"""The contract shared by every fusion strategy.

A strategy receives one :class:`~mmexp.encoders.EncoderOutput` per modality, all of width
``dim``, and returns either a fused representation ``[B, out_dim]`` that a head turns into
predictions (feature-level and token-level fusion), or logits ``[B, out_dim]`` directly
(decision-level fusion, ``produces_logits = True``, where the head must be the identity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import MappingProxyType

import torch
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.attention_record import CrossModalAttention, NoCrossModalAttention


def check_heads(owner: str, dim: int, heads: int) -> None:
    """Raise unless ``heads`` is positive and divides the token width ``dim``.

    Args:
        owner: Name of the module, for the message.
        dim: Token width.
        heads: Attention heads.

    Raises:
        ValueError: ``heads`` is not positive or does not divide ``dim``.
    """
    if heads <= 0 or dim % heads:
        raise ValueError(f"{owner}: heads ({heads}) must divide dim ({dim})")


def check_positive(owner: str, **settings: int) -> None:
    """Raise unless every named setting (a width, rank, factor, count) is at least 1.

    Args:
        owner: Name of the module, for the message.
        **settings: The settings, by the name the config gives them.

    Raises:
        ValueError: A setting is below 1; the message names it.
    """
    for name, value in settings.items():
        if value < 1:
            raise ValueError(f"{owner}: {name} must be at least 1, got {value}")


def can_judge_pairs(cls: type[FusionStrategy]) -> bool:
    """Whether a match head on the output of ``cls`` can tell matching pairs from others."""
    return cls.judges_pairs and not cls.produces_logits


def takes_modalities(cls: type[FusionStrategy], count: int) -> bool:
    """Whether ``cls`` is defined for ``count`` modalities (its ``min/max_modalities``)."""
    return cls.min_modalities <= count and (
        cls.max_modalities is None or count <= cls.max_modalities
    )


class FusionStrategy(nn.Module):
    """Base class: validates the modalities and fixes their order.

    Args:
        modalities: Names of the fused modalities; their order fixes the layout of
            concatenations so that checkpoints stay loadable.
        dim: Width of every encoder output.

    Attributes:
        out_dim: Width of the fused output.
        config_name: The ``fusion=`` choice (``conf/fusion/<config_name>.yaml``) that
            selects it with its published settings; named in error messages.
        produces_logits: Whether the output already is class logits.
        min_modalities: Fewest modalities the published method is defined for.
        max_modalities: Most modalities the published method is defined for; ``None`` for
            no limit. Bilinear poolings are defined for two inputs and refuse a third.
        uses_tokens: Whether it reads token sequences (else only pooled vectors), which
            tells a feature cache whether to store them.
        judges_pairs: Whether a head on the output can tell if the modalities' inputs
            belong together (image-text matching needs it). False where the output keeps
            one modality only, or pools them additively: matching trains the towers into
            one aligned space, where a pair's ``a + b`` cannot be told from ``c + c``.
        aux_weight: Weight of the per-modality auxiliary losses of
            :meth:`fuse_with_auxiliary` (0 for strategies that have none).
        width_multiple_of: The constructor argument whose value ``hidden_dim`` must be a
            multiple of (attention heads over the internal width), so that
            ``fusion.match_params`` tries only such widths; ``None``: any width.
        own_losses: Weight of each training loss the strategy defines on its own
            representations (:meth:`fuse_with_losses`), by name; empty for strategies
            without (MISA has its similarity, difference and reconstruction losses).
        gives_tokens: Whether :meth:`fuse_tokens` returns a fused token sequence (a
            caption decoder can cross-attend to it).
    """

    config_name: str = ""
    produces_logits: bool = False
    min_modalities: int = 1
    max_modalities: int | None = None
    uses_tokens: bool = False
    judges_pairs: bool = True
    aux_weight: float = 0.0
    width_multiple_of: str | None = None
    own_losses: Mapping[str, float] = MappingProxyType({})
    gives_tokens: bool = False

    def __init__(self, modalities: Sequence[str], dim: int) -> None:
        super().__init__()
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"fusion modalities contain duplicates: {list(modalities)}")
        if len(modalities) < self.min_modalities:
            raise ValueError(
                f"{type(self).__name__} needs at least {self.min_modalities} modalities, "
                f"got {list(modalities)}; set data.modalities accordingly"
            )
        if self.max_modalities is not None and len(modalities) > self.max_modalities:
            raise ValueError(
                f"{type(self).__name__} is defined for at most {self.max_modalities} "
                f"modalities, got {list(modalities)}; set data.modalities accordingly"
            )
        self.modalities = tuple(modalities)
        self.dim = dim
        self.out_dim = dim

    def fused_modality(self, setting: str, name: str | None, default: str | None = None) -> str:
        """The fused modality that the setting ``fusion.<setting>`` names.

        Args:
            setting: The config key below ``fusion`` (``context``, ``query`` ...), for the
                message.
            name: Its value; ``None`` takes ``default``.
            default: The modality taken for ``None``; ``None``: the first fused one.

        Raises:
            ValueError: ``name`` is not one of :attr:`modalities`; the message names the key.
        """
        if name is None:
            name = self.modalities[0] if default is None else default
        if name not in self.modalities:
            role = "modality" if setting == "modality" else f"{setting} modality"
            raise ValueError(
                f"{type(self).__name__}: {role} {name!r} is not one of the fused modalities "
                f"{list(self.modalities)}; set fusion.{setting} to one of them"
            )
        return name

    def check_inputs(self, features: Mapping[str, EncoderOutput]) -> None:
        """Raise a clear error when the features do not match the configured modalities."""
        missing = [m for m in self.modalities if m not in features]
        if missing:
            raise KeyError(
                f"{type(self).__name__} expects modalities {list(self.modalities)}, "
                f"missing {missing} (got {sorted(features)})"
            )
        for name in self.modalities:
            width = features[name].pooled.shape[-1]
            if width != self.dim:
                raise ValueError(
                    f"{type(self).__name__}: modality {name!r} has width {width}, expected "
                    f"{self.dim} (model.width)"
                )

    def forward(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Fuse the modality features of a batch."""
        raise NotImplementedError  # pragma: no cover - abstract

    def fuse_with_auxiliary(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """The fused output and any per-modality predictions trained on the label too.

        Returns:
            ``(output, auxiliary)``: ``auxiliary`` maps a modality to its own ``[B, C]``
            logits and the ``[B]`` mask of the samples that have it; empty for strategies
            without auxiliary losses (the default).
        """
        return self(features), {}

    def fuse_tokens(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused token sequence ``[B, S, out_dim]`` and its ``[B, S]`` mask (True: real).

        Only strategies with :attr:`gives_tokens`; a decoder conditioned on it reads every
        fused token, not only the pooled output.

        Raises:
            NotImplementedError: The strategy keeps no fused sequence.
        """
        raise NotImplementedError(
            f"{type(self).__name__} keeps no fused token sequence (fusion=early_tokens does)"
        )

    def fuse_with_losses(
        self, features: Mapping[str, EncoderOutput]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The fused output and the strategy's own training losses, unweighted, by name.

        The training step adds each loss times its weight in :attr:`own_losses` to the
        task loss and logs it as ``train/<name>_epoch``; validation and test score the task
        loss alone. Strategies without losses of their own return none (the default).
        """
        return self(features), {}

    def cross_modal_attention(
        self, features: Mapping[str, EncoderOutput]
    ) -> list[CrossModalAttention]:
        """The attention of each modality's tokens over each other modality's, per layer.

        Runs the strategy on ``features`` while recording its attention weights
        (:mod:`mmexp.fusion.attention_record`); meant for a few samples in eval mode.
        Token-level strategies with cross-modal attention override it.

        Raises:
            NoCrossModalAttention: The strategy has none; the message says why.
        """
        raise NoCrossModalAttention(
            f"{type(self).__name__} has no attention between the tokens of different "
            "modalities (only the token-level strategies early_tokens, cross_attention, mult, "
            "bottleneck and nl_gate have)"
        )
