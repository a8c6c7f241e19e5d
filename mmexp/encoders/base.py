"""The contract every modality encoder follows.

An encoder maps a collated batch of one modality to an :class:`EncoderOutput`: a token
sequence ``[B, T, D]``, a padding mask ``[B, T]`` (``True`` marks a real token) and a pooled
vector ``[B, D]``. Token-level fusion strategies use the sequence and mask; feature-level
and decision-level strategies use the pooled vector. Keeping all three in one place is what
lets a fusion strategy be swapped without touching the encoders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmexp.encoders.processors import ModalityProcessor
from mmexp.utils.freezing import KeepsFrozenInEval


@dataclass
class EncoderOutput:
    """Features of one modality for a batch.

    Attributes:
        tokens: Token features, ``[B, T, D]``.
        mask: Padding mask, ``[B, T]``, ``True`` where the token is real.
        pooled: One vector per sample, ``[B, D]``.
        present: ``[B]`` boolean, ``False`` for samples that lack this modality (their
            features are placeholders that fusion must ignore); ``None`` means all present.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    present: torch.Tensor | None = None

    def __post_init__(self) -> None:
        batch, length, _ = self.tokens.shape
        if self.mask.shape != (batch, length):
            raise ValueError(
                f"mask shape {tuple(self.mask.shape)} does not match tokens "
                f"{tuple(self.tokens.shape)}; expected ({batch}, {length})"
            )
        if self.pooled.shape != (batch, self.tokens.shape[-1]):
            raise ValueError(
                f"pooled shape {tuple(self.pooled.shape)} does not match tokens "
                f"{tuple(self.tokens.shape)}"
            )
        if self.present is not None and self.present.shape != (batch,):
            raise ValueError(
                f"present shape {tuple(self.present.shape)} does not match batch size {batch}"
            )

    def present_mask(self) -> torch.Tensor:
        """``[B]`` boolean mask of samples that have this modality."""
        if self.present is None:
            return torch.ones(self.tokens.shape[0], dtype=torch.bool, device=self.tokens.device)
        return self.present.bool()


def lengths_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """``[B, steps]`` mask, ``True`` for the first ``lengths[b]`` steps of each row."""
    positions = torch.arange(steps, device=lengths.device)
    return positions.unsqueeze(0) < lengths.unsqueeze(1)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average ``tokens`` over the real (unmasked) positions of each sample.

    Args:
        tokens: ``[B, T, D]`` token features.
        mask: ``[B, T]`` boolean mask, ``True`` for real tokens.

    Returns:
        ``[B, D]`` mean over real tokens (zeros for a sample with no real token).
    """
    weights = mask.to(tokens.dtype).unsqueeze(-1)
    # clamp: an all-padding sample gives a zero vector instead of NaN.
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


def output_from(
    pooled: torch.Tensor,
    tokens: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    present: torch.Tensor | None = None,
) -> EncoderOutput:
    """An :class:`EncoderOutput`; without tokens the pooled vector is the one token."""
    if tokens is None:
        tokens = pooled[:, None]
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    assert mask is not None
    return EncoderOutput(tokens=tokens, mask=mask.bool(), pooled=pooled, present=present)


def project_features(proj: nn.Module, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
    """Apply one projection to the pooled vector and, when kept, the tokens."""
    pooled = proj(features["pooled"])
    if "tokens" not in features:
        return output_from(pooled)
    return output_from(pooled, proj(features["tokens"]), features["mask"])


class CachedFeatures(dict):
    """A collated batch of one modality's cached frozen-encoder outputs (feature cache).

    An encoder called on it skips its frozen part and runs only what trains after it.
    """


class ModalityEncoder(KeepsFrozenInEval):
    """Base class of the encoders: declares the modality, the width and the preprocessing.

    Subclasses implement :meth:`forward` and :meth:`processor`. The processor is the
    encoder's own preprocessing (image transform, tokenizer, audio featurizer): the data
    module asks the encoder for it so that data and model can never disagree about it.

    Attributes:
        modality: Name of the modality this encoder reads (``"image"``, ``"text"``, ...).
        out_dim: Width ``D`` of the tokens and pooled vector it returns.
    """

    modality: str = ""
    # Whether the weights come pretrained from a hub or file (set by such encoders);
    # finetuning protocols apply to pretrained towers only.
    pretrained: bool = False

    def __init__(self, out_dim: int) -> None:
        super().__init__()
        if out_dim <= 0:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        self.out_dim = out_dim

    @classmethod
    def loads_pretrained(cls, options: Mapping[str, Any]) -> bool:
        """Whether an encoder built from the config ``options`` starts from pretrained weights.

        Read before anything is built (the run config records the towers a finetuning
        protocol applies to); agrees with :attr:`pretrained` of the built encoder.
        """
        return False

    @classmethod
    def without_pretrained_weights(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The config ``options`` changed to build the same architecture without fetching weights.

        ``mmexp-eval`` builds encoders this way when the checkpoint holds their weights. By
        default ``pretrained`` becomes false and ``checkpoint_path`` null where the config
        has them; an encoder whose weights come in other options overrides this.
        """
        changed = dict(options)
        if "pretrained" in changed:
            changed["pretrained"] = False
        if "checkpoint_path" in changed:
            changed["checkpoint_path"] = None
        return changed

    def set_trainability(self, trainability: Any) -> None:
        """Apply a :class:`~mmexp.encoders.freezing.Trainability` to the whole encoder.

        Finetuning protocols use this: the encoder, projections included, is the unit
        that was pretrained. Frozen parts stay in eval mode through ``train()`` calls
        (:mod:`mmexp.utils.freezing`).
        """
        trainability.apply(self)
        # Modules it adds (LoRA adapters inside a frozen backbone) take the modes of theirs.
        self.train(self.training)

    def __call__(self, inputs: Any, *args: Any, **kwargs: Any) -> EncoderOutput:
        """Encode raw inputs, or finish encoding :class:`CachedFeatures` of the frozen part."""
        if isinstance(inputs, CachedFeatures):
            return self.from_frozen_features(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def frozen_part(self) -> nn.Module:
        """The part whose outputs a feature cache stores; here the whole encoder."""
        return self

    def cache_blocker(self) -> str | None:
        """Why this encoder's frozen-part outputs cannot be cached, or ``None`` if they can.

        They can when the frozen part has no trainable parameter (so its outputs never
        change) and the preprocessing has no random augmentation.
        """
        part = self.frozen_part()
        if any(p.requires_grad for p in part.parameters()):
            what = "backbone" if part is not self else "encoder"
            return f"its {what} trains (freeze it: freeze=frozen, or finetune=frozen)"
        if getattr(self, "augment", False):
            return "its preprocessing augments the training data (augment=true)"
        return None

    def frozen_features(self, inputs: Any, tokens: bool) -> dict[str, torch.Tensor]:
        """Outputs of :meth:`frozen_part` for a batch, each with the batch as first dim.

        Args:
            inputs: A collated batch of this modality.
            tokens: Keep the token sequence (for token-level fusion), not only the pooled
                vector.
        """
        output = self.forward(inputs)
        features = {"pooled": output.pooled}
        if tokens:
            features.update(tokens=output.tokens, mask=output.mask)
        if output.present is not None:
            features["present"] = output.present
        return features

    def from_frozen_features(self, features: Mapping[str, torch.Tensor]) -> EncoderOutput:
        """The encoder output from :meth:`frozen_features` (computed now or cached)."""
        return output_from(
            features["pooled"],
            features.get("tokens"),
            features.get("mask"),
            features.get("present"),
        )

    def set_grad_checkpointing(self, enable: bool = True) -> bool:
        """Recompute activations in the backward pass instead of storing them.

        Returns:
            Whether this encoder supports it; the small built-in encoders do not (their
            activations are small next to a pretrained backbone's).
        """
        return False

    def processor(self, train: bool) -> ModalityProcessor:
        """Return the preprocessing for this encoder.

        Args:
            train: Whether the processor is for the training split (augmentation on).
        """
        raise NotImplementedError

    def forward(self, inputs: Any) -> EncoderOutput:  # pragma: no cover - abstract
        """Encode a collated batch of this modality."""
        raise NotImplementedError
