"""Zero-shot classification as a finetuning protocol: fixed prompts, nothing trained.

The row of a pretrain-then-finetune table that a vision-language model scores before it
sees a label: CLIP's zero-shot classifier (Radford et al., ICML 2021, Sec. 3.1.2 and 3.1.4).
Each class's embedding is the normalised mean of the text tower's normalised embeddings of
the class name in every template of one set, computed by
:func:`mmexp.zeroshot.classify.class_embeddings` (the code ``mmexp-eval zeroshot=classify``
runs), and an image's logits are the logit scale times its cosine similarity to them
(:class:`~mmexp.lit.prompt_classifier.PromptClassifier`, ``objective=prompt``).

Both towers stay frozen and no gradient step is taken: the protocol is a closed-form one
(:func:`mmexp.finetune.closed_form.fit_closed_form`), so validation, test, the checkpoint
(``checkpoints/zeroshot.ckpt``, which holds the class embeddings), ``results.json`` and
``mmexp-eval`` are the ordinary ones, and a run's ``test/acc`` is the zero-shot top-1 accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from mmexp.encoders.base import ModalityEncoder
from mmexp.finetune.closed_form import ClosedFormHead
from mmexp.finetune.coop import CoOp
from mmexp.finetune.protocols import FinetuneProtocol
from mmexp.lit.prompt_classifier import TEXT, PromptClassifier
from mmexp.zeroshot.classify import class_embeddings
from mmexp.zeroshot.prompts import check_templates, class_names_for, prompts
from mmexp.zeroshot.towers import embed_texts

log = logging.getLogger(__name__)


class FixedPrompts(nn.Module):
    """Class embeddings of prompt templates, computed once and kept as a buffer.

    Called with the text encoder (as :class:`~mmexp.finetune.coop.PromptContext` is), it
    returns the stored ``[C, E]`` embeddings; the buffer goes into the checkpoint, so an
    evaluation of the run reads the embeddings the run was tested with.

    Args:
        text_encoder: The frozen text tower.
        class_names: The prompt name of each class, label order.
        templates: One template set (each template with one ``{}``).
        batch_size: Prompts encoded at a time.
        compute: Embed the prompts now; ``False`` sizes the buffer only (a checkpoint's
            weights, loaded afterwards, hold them).
    """

    def __init__(
        self,
        text_encoder: ModalityEncoder,
        class_names: Sequence[str],
        templates: Sequence[str],
        batch_size: int = 256,
        compute: bool = True,
    ) -> None:
        super().__init__()
        self.class_names = list(class_names)
        self.templates = list(templates)
        self.texts = prompts(self.templates, self.class_names[0])
        if compute:
            embeddings = class_embeddings(
                text_encoder, self.class_names, self.templates, batch_size
            )
        else:
            width = embed_texts(text_encoder, self.texts[:1]).shape[-1]
            embeddings = torch.zeros(len(self.class_names), width)
        self.register_buffer("embeddings", embeddings.detach().clone())

    def lineage(self) -> dict[str, Any]:
        """What the run record keeps of the prompts."""
        return {"templates": len(self.templates), "example": self.texts[0]}

    def forward(self, text_encoder: ModalityEncoder) -> torch.Tensor:
        """The stored class embeddings ``[C, E]`` (``text_encoder`` is not run)."""
        return self.embeddings


class ZeroShot(ClosedFormHead, CoOp):
    """Both towers frozen; the classes embedded by fixed prompts; no gradient step.

    Applies to a :class:`~mmexp.lit.prompt_classifier.PromptClassifier` (``objective=prompt``,
    which ``finetune=zeroshot`` selects); towers and logit scale as in
    :class:`~mmexp.finetune.coop.CoOp` (the checkpoint's, or a public model's).

    Args:
        templates: ``{set name: [template, ...]}`` with exactly one set.
        class_names: ``None`` (the data's class names), a list, or a ``.txt`` / ``.json``
            file (:func:`~mmexp.zeroshot.prompts.class_names_for`).
        batch_size: Prompts encoded at a time.
        **options: See :class:`~mmexp.finetune.protocols.FinetuneProtocol`.

    Raises:
        ValueError: Not exactly one template set, or a template without ``{}``.
    """

    name = "zeroshot"

    def __init__(
        self,
        templates: Mapping[str, Sequence[str]],
        class_names: str | Sequence[str] | None = None,
        batch_size: int = 256,
        **options: Any,
    ) -> None:
        FinetuneProtocol.__init__(self, **options)
        sets = {str(k): [str(t) for t in v] for k, v in (templates or {}).items()}
        if len(sets) != 1:
            raise ValueError(
                f"finetune.templates: one template set, got {sorted(sets)} (choose it with "
                "zeroshot/templates@finetune.templates=simple|openai_imagenet)"
            )
        check_templates(sets, "finetune.templates")
        ((self.template_set, self.templates),) = sets.items()
        self.class_names = class_names
        self.batch_size = batch_size

    def adjust_module(
        self, module: pl.LightningModule, fusion_loaded: bool, check_sources: bool
    ) -> None:
        """Freeze every tower and install the class embeddings of the templates."""
        for modality, encoder in module.encoders.items():  # type: ignore[union-attr]
            self.restrict_encoder(encoder, f"model.encoders.{modality}")
        names = class_names_for(
            module.label_names,  # type: ignore[arg-type]
            self.class_names,
            "finetune.class_names",
        )
        text = module.encoders[TEXT].eval()  # type: ignore[index]
        fixed = FixedPrompts(text, names, self.templates, self.batch_size, compute=check_sources)
        module.set_prompts(fixed)  # type: ignore[operator]

    def fit_head(  # noqa: D102 - see ClosedFormHead
        self, module: PromptClassifier, train: Any, val: Any, device: torch.device
    ) -> dict[str, Any]:
        # The class embeddings were computed with the towers loaded; there is nothing to fit.
        prompts: Any = module.prompts
        log.info(
            "finetune=zeroshot: %d classes, %d templates (%s)",
            len(prompts.class_names),
            len(prompts.templates),
            self.template_set,
        )
        return {
            "template_set": self.template_set,
            "templates": len(prompts.templates),
            "class_names": prompts.class_names,
            "logit_scale": float(module.logit_scale),
        }
