"""Text towers that take learned prompt vectors: one adapter per supported tower type.

Prompt learning (CoOp, :mod:`mmexp.finetune.coop`) puts learned vectors where the token
embeddings of some prompt positions would be, and runs the rest of the frozen text tower
as it is: positional embedding, transformer (with its causal or padding mask), final norm,
pooling (the end-of-text token for CLIP, the mean of the real tokens for mmexp's own
tower) and projection. Rather than re-implementing that rest for each library, whose masks
and pooling rules differ between models and versions, the tower runs its own forward on the
prompt's token ids and a forward hook on its token embedding replaces the embeddings of the
learned positions (:func:`substituted_embeddings`). Everything after the embedding lookup is
then the library's code, on ids laid out exactly as its tokenizer lays them out.

What an adapter must know of a tower is therefore only which module is its token
embedding, the lookup whose output is one vector per input id, before anything mixes
positions. :func:`token_embedding` is that adapter, dispatched on the encoder type:

* mmexp's :class:`~mmexp.encoders.text_transformer.SmallTextTransformer`: its byte
  embedding ``embed`` (the strided convolution that merges bytes comes after it);
* open_clip text towers (:class:`~mmexp.encoders.open_clip_towers.OpenClipTextEncoder`): the
  public ``token_embedding`` of open_clip's ``TextTransformer``;
* Hugging Face CLIP text towers (:class:`~mmexp.encoders.hf_clip.HFClipTextEncoder`):
  ``get_input_embeddings()`` of the ``CLIPTextModel``, transformers' public accessor.

Any other text encoder gets :class:`NoPromptAdapterError`, naming the supported ones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import singledispatch

import torch
from torch import nn

from mmexp.encoders.base import ModalityEncoder
from mmexp.encoders.hf_clip import HFClipTextEncoder
from mmexp.encoders.open_clip_towers import OpenClipTextEncoder
from mmexp.encoders.text_transformer import SmallTextTransformer

#: The text encoders :func:`token_embedding` has an adapter for, and their config choice.
SUPPORTED = {
    "SmallTextTransformer": "model/encoders/text=transformer (mmexp's own)",
    "OpenClipTextEncoder": "model/encoders/text=open_clip (init=open_clip)",
    "HFClipTextEncoder": "model/encoders/text=hf_clip with a CLIPModel (init=hf_clip)",
}
#: Config key of the tower, named in errors.
KEY = "model.encoders.text"


class NoPromptAdapterError(TypeError):
    """A text encoder whose token embedding prompt learning does not know."""


def _unsupported(encoder: object, reason: str) -> NoPromptAdapterError:
    supported = "; ".join(f"{name}: {choice}" for name, choice in SUPPORTED.items())
    return NoPromptAdapterError(
        f"{KEY}: prompt learning has no adapter for {type(encoder).__name__} ({reason}); "
        f"supported text towers: {supported}"
    )


@singledispatch
def token_embedding(encoder: object) -> nn.Embedding:
    """The token embedding of a text tower: the lookup a learned prompt replaces.

    Raises:
        NoPromptAdapterError: No adapter for this encoder type, or a tower of a supported
            type whose structure has no per-token embedding to replace.
    """
    raise _unsupported(encoder, "its token embedding is unknown")


@token_embedding.register
def _(encoder: SmallTextTransformer) -> nn.Embedding:
    # Byte embeddings; the strided convolution after them merges ``downsample`` bytes.
    return encoder.embed


@token_embedding.register
def _(encoder: OpenClipTextEncoder) -> nn.Embedding:
    from open_clip.transformer import TextTransformer

    towers = [m for m in encoder.modules() if isinstance(m, TextTransformer)]
    if len(towers) != 1:
        raise _unsupported(encoder, "its open_clip text tower is not a TextTransformer")
    if towers[0].cls_emb is not None:
        # CoCa appends a class embedding and pools it: the end-of-text token is not pooled.
        raise _unsupported(encoder, "a CoCa text tower (embed_cls) pools an appended token")
    return towers[0].token_embedding


@token_embedding.register
def _(encoder: HFClipTextEncoder) -> nn.Embedding:
    from transformers import PreTrainedModel

    models = [m for m in encoder.modules() if isinstance(m, PreTrainedModel)]
    model_type = getattr(getattr(models[0], "config", None), "model_type", None) if models else None
    if len(models) != 1 or model_type != "clip_text_model":
        raise _unsupported(encoder, f"a {model_type or 'non-CLIP'} text model, not CLIP's")
    return models[0].get_input_embeddings()


@contextmanager
def substituted_embeddings(
    embedding: nn.Module, replace: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """While inside, the output of ``embedding`` is ``replace(output)``.

    ``replace`` takes the looked-up embeddings ``[B, L, W]`` and returns the ones the tower
    continues with (same shape). The hook is removed on leaving, also on an error.

    The lookup must not sit inside an activation-checkpointed segment (it does not in the
    supported towers, which checkpoint their blocks): a recomputation in the backward pass
    would run after the hook is gone.
    """

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        replaced = replace(output)
        if replaced.shape != output.shape:
            raise ValueError(
                f"prompt embeddings of shape {tuple(replaced.shape)} cannot replace the token "
                f"embeddings of shape {tuple(output.shape)}"
            )
        return replaced

    handle = embedding.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


#: What a text tower's processor must collate to: token ids and the mask of the real tokens.
INPUT_KEYS = ("input_ids", "attention_mask")


def check_text_tower(encoder: ModalityEncoder) -> nn.Embedding:
    """The token embedding of ``encoder``, after checking it is a text tower with an adapter.

    Raises:
        NoPromptAdapterError: See :func:`token_embedding`; or not a text encoder, or one
            whose processor does not collate to :data:`INPUT_KEYS`.
    """
    if encoder.modality != "text":
        raise _unsupported(encoder, f"a {encoder.modality} encoder, not a text tower")
    embedding = token_embedding(encoder)
    if not isinstance(embedding, nn.Embedding):
        raise _unsupported(encoder, f"its token embedding is a {type(embedding).__name__}")
    processor = encoder.processor(train=False)
    keys = sorted(processor.collate([processor("a")]))
    if not set(INPUT_KEYS) <= set(keys):
        raise _unsupported(encoder, f"its processor collates {keys}, not {list(INPUT_KEYS)}")
    return embedding
