"""Prompt learning: CoOp (Zhou et al., "Learning to Prompt for Vision-Language Models", IJCV 2022).

Both towers of a vision-language model stay frozen; what trains are ``M`` context vectors
in the text tower's token-embedding space, placed in front of each class name. The prompt
of class ``c`` is ``"<v_1> ... <v_M> <name_c>."``, tokenized by the tower's own tokenizer;
its embeddings are the tower's token embeddings with the ``M`` context positions replaced by
the learned vectors, and it runs through the rest of the frozen tower (positions,
transformer, final norm, pooling at the end-of-text token, projection) as any text would
(:mod:`mmexp.finetune.prompt_towers`). Images go through the frozen image tower; the
logits are the model's logit scale times the cosine similarities and the loss is
cross-entropy (:class:`~mmexp.lit.prompt_classifier.PromptClassifier`).

As the reference implementation (github.com/KaiyangZhou/CoOp, ``trainers/coop.py``):

* one context shared by all classes ("unified"), the class name at the end, followed by a
  period: the tokens after the context are the tokenizer's own for ``" <name>."`` (class
  names with ``_`` read with spaces), then its end-of-text token, which CLIP pools;
* initialisation ``N(0, 0.02)`` (``init_std``) or, with ``ctx_init`` (e.g. "a photo of a"),
  the token embeddings of that phrase, ``M`` then being its token count; with that phrase a
  class's embedding before training is the tower's ordinary embedding of
  ``"a photo of a <name>."``;
* the logit scale fixed at the pretrained model's.

Not implemented: class-specific contexts (the reference's ``CSC``) and the class name in the
middle or at the front of the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.freezing import Trainability
from mmexp.finetune.prompt_towers import check_text_tower, substituted_embeddings, token_embedding
from mmexp.finetune.protocols import FinetuneProtocol
from mmexp.finetune.source import PretrainedCheckpoint
from mmexp.lit.prompt_classifier import TEXT, PromptClassifier

#: The placeholder word of the random initialisation (the reference's), one token each.
PLACEHOLDER = "X"


def tokenize(processor: Any, texts: Sequence[str]) -> dict[str, torch.Tensor]:
    """The text tower's own preprocessing of ``texts`` (its processor, as for a batch)."""
    return processor.collate([processor(text) for text in texts])


def real_lengths(inputs: Mapping[str, torch.Tensor]) -> list[int]:
    """Real tokens of each tokenized text (specials included, padding not)."""
    return inputs["attention_mask"].bool().sum(dim=1).tolist()


@dataclass
class ContextLayout:
    """Where the context sits in a tokenized text.

    Attributes:
        start: Position of the first context token (after the tokenizer's leading specials,
            e.g. CLIP's start-of-text token; 0 for a byte tokenizer).
        ids: Token ids of the context, ``[M]``.
    """

    start: int
    ids: torch.Tensor


def context_layout(processor: Any, context: str) -> ContextLayout:
    """Where the tokens of ``context`` sit when it starts a text, and what they are.

    The leading special tokens are those an empty text shares with ``context``; the
    context's tokens are the real ones it adds to the empty text.
    """
    probe = tokenize(processor, ["", context])
    ids, (empty, full) = probe["input_ids"], real_lengths(probe)
    start = next((i for i in range(empty) if ids[0, i] != ids[1, i]), empty)
    return ContextLayout(start, ids[1, start : start + full - empty].clone())


def placeholder_context(processor: Any, n_ctx: int) -> str:
    """A text of exactly ``n_ctx`` tokens: ``"X X ... X"`` (word tokenizers) or ``"XX...X"``.

    Raises:
        ValueError: The tokenizer splits neither into ``n_ctx`` tokens.
    """
    for text in (" ".join([PLACEHOLDER] * n_ctx), PLACEHOLDER * n_ctx):
        if len(context_layout(processor, text).ids) == n_ctx:
            return text
    raise ValueError(
        f"finetune.n_ctx={n_ctx}: the text tower's tokenizer does not split "
        f"{PLACEHOLDER!r} into one token per word or character; set finetune.ctx_init"
    )


def class_prompts(
    processor: Any, context: str, class_names: Sequence[str]
) -> tuple[list[str], dict[str, torch.Tensor], ContextLayout]:
    """Tokenized ``"<context> <name>."`` per class, checked to be context then class tokens.

    Returns:
        The prompt texts, their tokenized inputs (one row per class) and where the context
        sits in them.

    Raises:
        ValueError: A prompt whose tokens are not the context's followed by those of
            ``" <name>."``: truncated at the tower's context length, or merged across the
            boundary by the tokenizer.
    """
    layout = context_layout(processor, context)
    texts = [f"{context} {name}." for name in class_names]
    inputs = tokenize(processor, texts)
    names = tokenize(processor, [f" {name}." for name in class_names])
    start, count = layout.start, len(layout.ids)
    for row, (text, length, name_length) in enumerate(
        zip(texts, real_lengths(inputs), real_lengths(names), strict=True)
    ):
        ids = inputs["input_ids"][row]
        expected = torch.cat([layout.ids, names["input_ids"][row, start:name_length]])
        if length != start + len(expected) or not torch.equal(ids[start:length], expected):
            raise ValueError(
                f"finetune=coop: the prompt {text!r} of class {class_names[row]!r} does not "
                f"tokenize as its {count} context tokens followed by the class name's "
                "(truncated at the text tower's context length, or merged by the tokenizer); "
                "shorten the context (finetune.n_ctx, finetune.ctx_init) or the class name "
                "(data.label_names)"
            )
    return texts, inputs, layout


class PromptContext(nn.Module):
    """CoOp's prompt learner: learned context vectors before each class name.

    Called with the text encoder, it returns each class's pooled text embedding ``[C, E]``
    (the encoder's ``pooled``, as contrastive pretraining embeds texts).

    Args:
        text_encoder: The (frozen) text tower; a type with a prompt adapter.
        class_names: Class names in label order (``_`` read as a space).
        n_ctx: Context vectors ``M`` (ignored with ``ctx_init``: its token count).
        ctx_init: A phrase whose token embeddings start the context, or ``None``.
        init_std: Standard deviation of the random initialisation.

    Raises:
        ValueError: ``n_ctx < 1``, ``init_std <= 0``, an empty ``ctx_init``, empty class
            names, or prompts that do not fit (see :func:`class_prompts`).
        mmexp.finetune.prompt_towers.NoPromptAdapterError: A text tower without adapter.
    """

    def __init__(
        self,
        text_encoder: ModalityEncoder,
        class_names: Sequence[str],
        n_ctx: int = 16,
        ctx_init: str | None = None,
        init_std: float = 0.02,
    ) -> None:
        super().__init__()
        check_context_options(n_ctx, ctx_init, init_std)
        names = [str(name).replace("_", " ").strip() for name in class_names]
        blank = [i for i, name in enumerate(names) if not name]
        if not names or blank:
            raise ValueError(
                "finetune=coop names each class in its prompt, but the data module gives "
                f"class names {list(class_names)} (label_names; blank at {blank}); name them "
                "with data.label_names=[...]"
            )
        embedding = check_text_tower(text_encoder)
        processor = text_encoder.processor(train=False)
        context = ctx_init.replace("_", " ").strip() if ctx_init else None
        self.texts, inputs, layout = class_prompts(
            processor, context or placeholder_context(processor, n_ctx), names
        )
        if context:
            with torch.no_grad():
                init = embedding(layout.ids.to(embedding.weight.device)).detach().clone()
        else:
            init = torch.empty(n_ctx, embedding.embedding_dim, device=embedding.weight.device)
            nn.init.normal_(init, std=init_std)
        self.context = nn.Parameter(init.to(embedding.weight.dtype))
        self.start = layout.start
        self.ctx_init = context
        # Derived from the tokenizer and the class names, so rebuilt rather than saved.
        self.input_keys = list(inputs)
        for key, value in inputs.items():
            self.register_buffer(f"prompt_{key}", value, persistent=False)

    @property
    def n_ctx(self) -> int:
        """Number of context vectors."""
        return self.context.shape[0]

    def inputs(self) -> dict[str, torch.Tensor]:
        """The tokenized prompts, as the text encoder's processor gave them."""
        return {key: getattr(self, f"prompt_{key}") for key in self.input_keys}

    def splice(self, embedded: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``[C, L, W]`` with the context positions replaced."""
        context = self.context.to(embedded.dtype).expand(embedded.shape[0], -1, -1)
        end = self.start + self.n_ctx
        return torch.cat([embedded[:, : self.start], context, embedded[:, end:]], dim=1)

    def lineage(self) -> dict[str, Any]:
        """What the run record keeps of the prompts."""
        return {"n_ctx": self.n_ctx, "ctx_init": self.ctx_init, "example": self.texts[0]}

    def forward(self, text_encoder: ModalityEncoder) -> torch.Tensor:
        """Each class's prompt through ``text_encoder``: its pooled embedding ``[C, E]``."""
        with substituted_embeddings(token_embedding(text_encoder), self.splice):
            return text_encoder(self.inputs()).pooled


def check_context_options(n_ctx: int, ctx_init: str | None, init_std: float) -> None:
    """Refuse context settings that cannot build a prompt.

    Raises:
        ValueError: Naming the ``finetune.*`` key.
    """
    if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1:
        raise ValueError(f"finetune.n_ctx must be an integer >= 1, got {n_ctx!r}")
    if ctx_init is not None and not str(ctx_init).replace("_", " ").strip():
        raise ValueError("finetune.ctx_init is empty; give a phrase (e.g. 'a photo of a') or null")
    if not init_std > 0:
        raise ValueError(f"finetune.init_std must be > 0, got {init_std}")


class CoOp(FinetuneProtocol):
    """Both towers frozen; learned context vectors in the class prompts train.

    Applies to a :class:`~mmexp.lit.prompt_classifier.PromptClassifier` (``objective=prompt``,
    which ``finetune=coop`` selects). The towers load from ``checkpoint`` as in every
    protocol; the logit scale is the checkpoint's loss's unless the objective sets a
    temperature (``init=open_clip|hf_clip``: the public model's).

    Args:
        n_ctx: Context vectors ``M`` (CoOp's default 16; ignored with ``ctx_init``).
        ctx_init: Phrase whose token embeddings start the context (e.g. "a photo of a").
        init_std: Standard deviation of the random initialisation (CoOp: 0.02).
        **options: See :class:`~mmexp.finetune.protocols.FinetuneProtocol`.

    Raises:
        ValueError: See :func:`check_context_options`.
    """

    name = "coop"
    restricts = True
    # The module it applies to (checked with the config: mmexp.config_check).
    applies_to = PromptClassifier

    def __init__(
        self,
        n_ctx: int = 16,
        ctx_init: str | None = None,
        init_std: float = 0.02,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        check_context_options(n_ctx, ctx_init, init_std)
        self.n_ctx = n_ctx
        self.ctx_init = ctx_init
        self.init_std = init_std

    def restrict_encoder(self, encoder: ModalityEncoder, key: str) -> None:  # noqa: D102
        encoder.set_trainability(Trainability("frozen", key=key))

    def adjust_module(
        self, module: pl.LightningModule, fusion_loaded: bool, check_sources: bool
    ) -> None:
        """Freeze every tower (from scratch too) and install the prompt learner."""
        for modality, encoder in module.encoders.items():  # type: ignore[union-attr]
            self.restrict_encoder(encoder, f"model.encoders.{modality}")
        prompts = PromptContext(
            module.encoders[TEXT],  # type: ignore[index]
            module.label_names,  # type: ignore[arg-type]
            self.n_ctx,
            self.ctx_init,
            self.init_std,
        )
        module.set_prompts(prompts)  # type: ignore[operator]

    def apply(
        self,
        module: pl.LightningModule,
        source: PretrainedCheckpoint | None,
        load_weights: bool = True,
    ) -> dict[str, Any]:
        """Load the towers, freeze them, install the prompts, take the logit scale.

        Raises:
            TypeError: ``module`` is not a prompt classifier.
        """
        if not isinstance(module, PromptClassifier):
            raise TypeError(
                f"finetune=coop learns the prompts of a PromptClassifier (objective=prompt, "
                f"which finetune=coop selects), not of {type(module).__name__}; drop the "
                "objective override"
            )
        lineage = super().apply(module, source, load_weights)
        lineage["towers"] = sorted(module.encoders)  # all frozen, pretrained or not
        scale = source.log_logit_scale() if source is not None and load_weights else None
        if scale is not None:
            module.set_logit_scale(scale)
        prompts: Any = module.prompts
        lineage["prompts"] = {**prompts.lineage(), "logit_scale": float(module.logit_scale)}
        return lineage
