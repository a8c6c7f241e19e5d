"""LightningModule classifying images by their similarity to embedded class prompts.

A vision-language model classifies without a head: the text tower embeds one prompt per
class, the image tower embeds the image, and the logits are the cosine similarities scaled
by the model's logit scale (CLIP, Radford et al. 2021, Sec. 3.1.2). Where the prompts come
from is injected: prompt learning (``finetune=coop``, :mod:`mmexp.finetune.coop`) installs
learned context vectors with :meth:`PromptClassifier.set_prompts`.

The module reads only images from the batches; its text tower encodes the prompts, so it is
built for ``data.modalities=[image]`` with both towers (:meth:`tower_modalities`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torchmetrics import MetricCollection

from mmexp.data.batches import ClassificationBatch
from mmexp.encoders.base import EncoderOutput, ModalityEncoder
from mmexp.lit.classifier import MultimodalClassifier
from mmexp.metrics.classification import classification_metrics

#: Temperature when neither the config nor a pretraining source gives one: CLIP's learned
#: logit scale of 100 (the bound open_clip clamps it to).
DEFAULT_TEMPERATURE = 0.01
#: The modality classified, and the one whose tower embeds the class prompts.
IMAGE, TEXT = "image", "text"


class PromptClassifier(MultimodalClassifier):
    """``logit_scale * cos(image embedding, class prompt embedding)``, trained with ``loss``.

    The metrics, logging and test report are the classifier's (no fusion, no head).

    Args:
        encoders: ``image`` and ``text`` towers; their pooled vectors are the embeddings
            (as in contrastive pretraining, :class:`~mmexp.lit.contrastive.ContrastivePretrainer`).
        loss: Loss on ``(logits, labels)`` (cross-entropy).
        num_classes: Number of classes.
        label_names: Class names in label order, from the data module (what prompts name).
        optimizer: Partial optimizer constructor taking ``params``.
        scheduler: Optional partial schedule constructor taking ``(optimizer, total_steps)``.
        temperature: ``1 / logit_scale``, fixed. ``None``: the pretraining checkpoint's (its
            loss's learned value, set by the finetuning protocol), else
            :data:`DEFAULT_TEMPERATURE`.
        monitor: Validation metric whose best value is tracked as ``<monitor>_best``.
        monitor_mode: ``"max"`` or ``"min"``.
        metrics: See :class:`~mmexp.lit.classifier.MultimodalClassifier`.
        confusion_matrix: Compute the test confusion matrix.
        run_config: See :class:`~mmexp.lit.common.MultimodalModule`.
        save_frozen_weights: See :class:`~mmexp.lit.common.MultimodalModule`.

    Raises:
        ValueError: Towers other than ``image`` and ``text``, class names that do not match
            the class count, or a temperature that is not positive.
    """

    # Every sample needs its image; there is nothing to fall back on.
    handles_missing = False

    def __init__(
        self,
        encoders: Mapping[str, ModalityEncoder],
        loss: nn.Module,
        num_classes: int,
        label_names: Sequence[str],
        optimizer: Callable[..., Optimizer],
        scheduler: Callable[..., Any] | None = None,
        temperature: float | None = None,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        metrics: Callable[[int, str], MetricCollection] = classification_metrics,
        confusion_matrix: bool = True,
        run_config: Mapping[str, Any] | None = None,
        save_frozen_weights: bool = True,
    ) -> None:
        if sorted(encoders) != sorted((IMAGE, TEXT)):
            raise ValueError(
                f"{type(self).__name__} needs an image and a text tower, got {sorted(encoders)}"
            )
        names = list(label_names or [])
        if len(names) != num_classes:
            raise ValueError(
                f"{type(self).__name__} names its classes in prompts, but the data module "
                f"gives {len(names)} class names for {num_classes} classes (label_names)"
            )
        if temperature is not None and not temperature > 0:
            raise ValueError(f"objective.module.temperature must be > 0, got {temperature}")
        super().__init__(
            encoders,
            None,  # type: ignore[arg-type] - no fusion: the similarity is the classifier
            nn.Identity(),
            loss,
            num_classes,
            optimizer,
            scheduler,
            monitor,
            monitor_mode,
            metrics,
            confusion_matrix,
            run_config,
            save_frozen_weights,
        )
        self.label_names = names
        self.temperature_configured = temperature is not None
        scale = math.log(1.0 / (temperature or DEFAULT_TEMPERATURE))
        # A buffer: fixed (as in CoOp) and carried by every checkpoint.
        self.register_buffer("log_logit_scale", torch.tensor(scale))
        self.prompts: nn.Module | None = None

    @classmethod
    def tower_modalities(cls, data_modalities: Sequence[str]) -> list[str]:
        """Both towers, for data that load images only.

        Raises:
            ValueError: ``data.modalities`` is not ``[image]``.
        """
        if list(data_modalities) != [IMAGE]:
            raise ValueError(
                f"{cls.__name__} classifies images and its text tower encodes the class "
                f"prompts, not the data's texts: set data.modalities=[image] (got "
                f"{list(data_modalities)})"
            )
        return [IMAGE, TEXT]

    @property
    def reads_tokens(self) -> bool:
        """The image embedding is pooled."""
        return False

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / temperature``."""
        return self.log_logit_scale.exp()

    def set_logit_scale(self, log_logit_scale: float) -> None:
        """Take a pretraining source's log logit scale, unless the config set a temperature."""
        if not self.temperature_configured:
            self.log_logit_scale.fill_(float(log_logit_scale))

    def set_prompts(self, prompts: nn.Module) -> None:
        """Install what embeds the class prompts: ``prompts(text_encoder) -> [C, E]``."""
        self.prompts = prompts

    def class_embeddings(self) -> torch.Tensor:
        """Unit-norm embedding of each class's prompt, ``[C, E]``.

        Raises:
            RuntimeError: No prompts installed.
        """
        if self.prompts is None:
            raise RuntimeError(
                f"{type(self).__name__} has no class prompts; finetune=coop installs them"
            )
        embeddings = self.prompts(self.encoders[TEXT])
        if embeddings.shape[0] != self.num_classes:
            raise ValueError(
                f"the prompts embed {embeddings.shape[0]} classes, not {self.num_classes}"
            )
        return F.normalize(embeddings, dim=-1)

    def encode(self, batch: Mapping[str, Any]) -> dict[str, EncoderOutput]:
        """The image tower on the batch's images (after the presence checks)."""
        self.presence(batch)
        return {IMAGE: self.encoders[IMAGE](batch[IMAGE])}

    def predict_from_features(self, features: Mapping[str, EncoderOutput]) -> torch.Tensor:
        """Scaled cosine similarities ``[B, C]`` of the image embeddings to the classes'."""
        images = F.normalize(features[IMAGE].pooled, dim=-1)
        classes = self.class_embeddings()
        return self.logit_scale * images @ classes.to(images.dtype).T

    def _training_losses(
        self, batch: ClassificationBatch
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        return (*self._shared_step(batch), {})
