"""The image and text towers of a module, as zero-shot evaluation reads them.

Any module whose ``encoders`` hold an ``image`` and a ``text`` :class:`ModalityEncoder` and
whose loss holds the logit scale (``module.loss_fn.logit_scale``; mmexp's contrastive
objectives, whatever the towers) can be scored zero-shot: the embeddings are the
L2-normalised pooled vectors of the towers, as :class:`~mmexp.lit.contrastive.
ContrastivePretrainer` aligns them, and the text tower's own evaluation preprocessing turns a
list of strings into the batch it reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import move_data_to_device

from mmexp.encoders.base import ModalityEncoder

#: The towers zero-shot evaluation reads, by modality name.
IMAGE, TEXT = "image", "text"


@torch.no_grad()
def embed_texts(text: ModalityEncoder, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
    """``[N, D]`` unit-norm embeddings of ``texts`` by a text tower, through its preprocessing."""
    processor = text.processor(train=False)
    device = next(text.parameters()).device
    rows = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        batch = processor.collate([processor(item) for item in chunk])
        output = text(move_data_to_device(batch, device))
        rows.append(F.normalize(output.pooled.float(), dim=-1))
    return torch.cat(rows)


@dataclass
class AlignedTowers:
    """An image and a text tower whose normalised pooled vectors share one space.

    Attributes:
        image: The image tower.
        text: The text tower.
        logit_scale: ``1 / temperature`` of the loss the towers were aligned with.
    """

    image: ModalityEncoder
    text: ModalityEncoder
    logit_scale: float

    @classmethod
    def of(cls, module: Any, key: str = "zeroshot") -> AlignedTowers:
        """The towers of ``module``.

        Raises:
            TypeError: ``module`` lacks an image or a text tower, or a loss with a
                ``logit_scale``; the message names ``key`` and what the module has.
        """
        encoders = dict(getattr(module, "encoders", None) or {})
        towers = {}
        for modality in (IMAGE, TEXT):
            encoder = encoders.get(modality)
            if not isinstance(encoder, ModalityEncoder):
                raise TypeError(
                    f"{key}: {type(module).__name__} has towers {sorted(encoders)}; zero-shot "
                    "evaluation needs an image and a text tower (data.modalities=[image,text] "
                    "with objective=contrastive)"
                )
            towers[modality] = encoder
        scale = getattr(getattr(module, "loss_fn", None), "logit_scale", None)
        if scale is None:
            raise TypeError(
                f"{key}: {type(module).__name__} has no loss with a logit scale "
                "(loss_fn.logit_scale); zero-shot evaluation reads two towers aligned by a "
                "contrastive loss (objective=contrastive|itm)"
            )
        return cls(towers[IMAGE], towers[TEXT], float(torch.as_tensor(scale).detach()))

    @property
    def device(self) -> torch.device:
        """Where the image tower's parameters are."""
        return next(self.image.parameters()).device

    def to(self, device: torch.device | str) -> AlignedTowers:
        """Move both towers to ``device`` and set them to eval mode."""
        for tower in (self.image, self.text):
            tower.to(device).eval()
        return self

    def embed_texts(self, texts: Sequence[str], batch_size: int = 256) -> torch.Tensor:
        """``[N, D]`` unit-norm embeddings of ``texts`` (:func:`embed_texts`)."""
        return embed_texts(self.text, texts, batch_size)

    @torch.no_grad()
    def embed_images(
        self, batches: Iterable[dict[str, Any]]
    ) -> Iterator[tuple[torch.Tensor, dict[str, Any]]]:
        """``([B, D] unit-norm image embeddings, batch)`` of each collated batch."""
        for batch in batches:
            batch = move_data_to_device(batch, self.device)
            output = self.image(batch[IMAGE])
            yield F.normalize(output.pooled.float(), dim=-1), batch
