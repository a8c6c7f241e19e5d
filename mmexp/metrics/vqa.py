"""VQA accuracy over an answer vocabulary, overall and per answer type, and the VQA loss.

The model classifies over a fixed answer vocabulary (Anderson et al., "Bottom-Up and
Top-Down Attention for Image Captioning and Visual Question Answering", CVPR 2018). Each
sample's target holds, per vocabulary answer, the official accuracy of predicting it
(:func:`mmexp.metrics.vqa_answers.answer_scores`), so the accuracy of the top-scoring
answer is its target value: the official VQA accuracy, exactly. A question none of whose
human answers is in the vocabulary has an all-zero target and scores 0 whatever is
predicted, as it does in the official evaluation. Data sets with one correct answer per
sample (``data=shapes data.task=vqa``) give class indices instead: the accuracy of ten
identical human answers, 1 for the answer and 0 otherwise.

Values are fractions in [0, 1] (the papers print them x 100): ``vqa_acc`` over every
question and ``vqa_acc_yes_no``, ``vqa_acc_number``, ``vqa_acc_other`` over the questions of
each answer type of the VQA annotations (``yes/no``, ``number``, ``other``), which batches
carry as ``answer_type`` indices into :data:`ANSWER_TYPES`.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric, MetricCollection

from mmexp.metrics.vqa_answers import ANSWER_TYPES

__all__ = ["ANSWER_TYPES", "VQABCELoss", "VQAAccuracy", "sample_scores", "vqa_metrics"]


def metric_name(answer_type: str | None) -> str:
    """``vqa_acc`` overall, ``vqa_acc_<type>`` per answer type (``yes/no`` -> ``yes_no``)."""
    return "vqa_acc" if answer_type is None else f"vqa_acc_{answer_type.replace('/', '_')}"


def sample_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The VQA accuracy of each sample's top answer: ``[B]`` in [0, 1].

    Args:
        logits: ``[B, K]`` answer logits.
        targets: ``[B, K]`` per-answer scores, or ``[B]`` indices of the one right answer.
    """
    predicted = logits.argmax(dim=1)
    if targets.ndim == 1:
        return (predicted == targets).double()
    return targets.gather(1, predicted[:, None]).squeeze(1).double()


class VQAAccuracy(Metric):
    """Mean VQA accuracy of the top answer, over every sample or one answer type.

    Args:
        answer_type: One of :data:`ANSWER_TYPES`, or ``None`` for every sample.

    Raises:
        ValueError: An unknown answer type.
    """

    full_state_update = False

    def __init__(self, answer_type: str | None = None) -> None:
        super().__init__()
        if answer_type is not None and answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {answer_type!r}")
        self.type_index = None if answer_type is None else ANSWER_TYPES.index(answer_type)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        answer_type: torch.Tensor | None = None,
    ) -> None:
        """Add a batch; ``answer_type`` (``[B]`` indices) is needed by a per-type metric."""
        scores = sample_scores(logits, targets)
        if self.type_index is not None:
            # Without types, a per-type metric sees nothing (and computes NaN).
            if answer_type is None:
                return
            scores = scores[answer_type == self.type_index]
        self.total += scores.sum()
        self.count += scores.numel()

    def compute(self) -> torch.Tensor:
        """The mean accuracy (NaN when no sample of the type was seen)."""
        if self.count == 0:
            return torch.tensor(float("nan"))
        return (self.total / self.count).float()


def vqa_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """``vqa_acc`` and, outside training, its value per answer type.

    Args:
        num_classes: Size of the answer vocabulary (unused: scores come from the targets).
        prefix: Split name, e.g. ``"val"``.

    Returns:
        A collection updated with ``(logits, targets, answer_type=...)``, named
        ``<prefix>/vqa_acc`` and ``<prefix>/vqa_acc_<type>``.
    """
    # Training batches are scored overall only: the per-type figures are for model
    # selection and reports.
    types: tuple[str | None, ...] = (None,) if prefix == "train" else (None, *ANSWER_TYPES)
    return MetricCollection(
        {metric_name(t): VQAAccuracy(t) for t in types},
        prefix=f"{prefix}/",
        compute_groups=False,
    )


class VQABCELoss(nn.Module):
    """Binary cross-entropy per answer on the soft scores, summed over answers.

    A sigmoid per answer, as in the bottom-up model (Teney et al., "Tips and Tricks for
    Visual Question Answering", CVPR 2018) and MCAN (Yu et al., CVPR 2019): several answers
    can be partly right. The sum over the vocabulary and mean over the batch is
    ``instance_bce_with_logits`` of the bottom-up reimplementation (hengyuan-hu); with
    class-index targets the one right answer scores 1.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean over samples of the summed per-answer BCE."""
        if targets.ndim == 1:
            targets = nn.functional.one_hot(targets, logits.shape[1])
        loss = nn.functional.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype))
        return loss * logits.shape[1]
