"""The layouts of the collated batches the LightningModules read.

Every batch also holds one entry per modality, keyed by its name in ``data.modalities``
(``image``, ``text``, ``audio``...), whose value is what that modality's processor collates
(image tensors, token ids and mask, feature sequences, or cached features); those keys vary
with the data set, so they are not listed here.
"""

from __future__ import annotations

from typing import Any, TypedDict

import torch


class ClassificationBatch(TypedDict, total=False):
    """A batch for classification, multi-label classification and regression.

    Attributes:
        label: ``[B]`` class indices, ``[B, C]`` multi-hot targets, or ``[B]`` real targets.
        index: ``[B]`` row of each sample in its split.
        content: ``[B]`` content ids (``data.content_column``): rows showing the same scene.
        num_skipped: Samples left out of this batch because they could not be read.
        present: ``{modality: [B] bool}``, ``False`` where a sample lacks the modality
            (``data.missing``, :mod:`mmexp.data.missing`); absent when every sample has all.
    """

    label: torch.Tensor
    index: torch.Tensor
    content: torch.Tensor
    num_skipped: int
    present: dict[str, torch.Tensor]


class RetrievalBatch(TypedDict, total=False):
    """A batch for contrastive pretraining and retrieval (see :mod:`mmexp.lit.contrastive`).

    Paired batches hold ``B`` rows of both modalities; grouped batches (caption data sets at
    evaluation) hold ``B`` first-modality items once each and ``M`` second-modality items.

    Attributes:
        index: ``[B]`` id of each row's first-modality item.
        content: ``[B]`` content ids; rows with equal ids are no negatives of each other.
        group: ``[M]`` (grouped batches) the ``index`` each second-modality item belongs to.
        member: ``[M]`` (grouped batches) the second-modality items' own ids.
        label: ``[B]`` class indices, when the data set has them (unused by the losses).
    """

    index: torch.Tensor
    content: torch.Tensor
    group: torch.Tensor
    member: torch.Tensor
    label: torch.Tensor


#: A batch of either layout, as benchmarks and generic helpers see it.
AnyBatch = ClassificationBatch | RetrievalBatch | dict[str, Any]
