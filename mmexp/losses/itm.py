"""Image-text matching (ITM): is this pair a match? Negatives random or mined.

Two published ways to draw each pair's negative partner from the batch:

* ``"hard"``, as in ALBEF (Li et al., "Align before Fuse", NeurIPS 2021) and BLIP (Li et
  al., ICML 2022): with probability proportional to ``softmax`` of its contrastive
  similarity, so the fusion model learns from the confusable pairs. Both start from
  pretrained towers; from scratch the mined negatives are as similar as the positives from
  the first steps on and the match head stays at the "no match" rate (2/3 on ``shapes``,
  measured over 12 epochs).
* ``"random"``, as in UNITER (Chen et al., ECCV 2020) and ViLT (Kim et al., ICML 2021):
  uniformly among the other items of the batch; it learns from scratch.

A fusion strategy from the fusion library reads the two modalities' tokens and a match head
says match / no match. ALBEF's fusion is a cross-attention encoder with a linear layer on
its CLS; mmexp's default is ``fusion=cross_attention`` with the shared ``model.head`` (an
MLP; ``model.head.hidden_dims=[]`` leaves a LayerNorm and ALBEF's linear layer).
Strategies whose output cannot tell a matching pair from another (additive poolings, one
modality, class logits) are refused.

Negatives are mined within each rank's batch: the fusion needs the negatives' tokens, and
gathering token sequences across ranks would cost more than the extra negatives are worth.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmexp.encoders.base import EncoderOutput
from mmexp.fusion.base import FusionStrategy, can_judge_pairs

NEGATIVES = ("hard", "random")


def sample_random_negatives(logits: torch.Tensor) -> torch.Tensor:
    """Draw one negative column per row uniformly over ``j != i`` with a finite logit.

    Columns masked with ``-inf`` (another pair of the same item or content) are drawn only
    for a row that has no other column (every pair of the batch shows the same content).

    Args:
        logits: ``[B, B]`` similarities (only which are finite matters).

    Returns:
        ``[B]`` column indices, never equal to the row index.
    """
    return sample_hard_negatives(logits.detach().isfinite().float().log())


def sample_hard_negatives(logits: torch.Tensor) -> torch.Tensor:
    """Draw one negative column per row, ``P(j) ∝ exp(logits[i, j])`` over ``j != i``.

    Args:
        logits: ``[B, B]`` scaled similarities; row ``i``'s positive is column ``i``.

    Returns:
        ``[B]`` column indices, never equal to the row index.

    Raises:
        ValueError: The batch has fewer than two pairs (no negative exists).
    """
    if logits.shape[0] < 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(
            f"hard negatives need a square batch of >= 2 pairs, got {tuple(logits.shape)}"
        )
    logits = logits.detach().float()
    weights = torch.softmax(logits, dim=1)
    weights.fill_diagonal_(0.0)
    # A row whose off-diagonal mass underflowed to zero falls back to uniform negatives over
    # the allowed (finite) columns, and only a row with none at all (every other pair shows
    # the same content) to any other column.
    off_diagonal = 1.0 - torch.eye(len(weights), device=weights.device)
    allowed = off_diagonal * logits.isfinite()
    uniform = torch.where(allowed.sum(dim=1, keepdim=True) > 0, allowed, off_diagonal)
    weights = torch.where(weights.sum(dim=1, keepdim=True) <= 0, uniform, weights)
    return torch.multinomial(weights, 1).squeeze(1)


def select(output: EncoderOutput, index: torch.Tensor) -> EncoderOutput:
    """The samples ``index`` of a batch of encoder features."""
    present = output.present[index] if output.present is not None else None
    return EncoderOutput(output.tokens[index], output.mask[index], output.pooled[index], present)


def concat(outputs: list[EncoderOutput]) -> EncoderOutput:
    """Stack batches of encoder features; token sequences are padded to the longest."""
    length = max(o.tokens.shape[1] for o in outputs)
    tokens = [F.pad(o.tokens, (0, 0, 0, length - o.tokens.shape[1])) for o in outputs]
    masks = [F.pad(o.mask, (0, length - o.mask.shape[1]), value=False) for o in outputs]
    presents = [o.present_mask() for o in outputs]
    return EncoderOutput(
        torch.cat(tokens),
        torch.cat(masks),
        torch.cat([o.pooled for o in outputs]),
        torch.cat(presents),
    )


class MatchingLoss(nn.Module):
    """Binary matching loss over positives and mined negatives in both directions.

    Each batch of ``B`` pairs gives ``3B`` fused examples: the ``B`` true pairs, each ``a``
    with a negative ``b`` and each ``b`` with a negative ``a`` (random or mined).

    Args:
        fusion: A fusion strategy over exactly the two modalities whose output can judge a
            pair (``judges_pairs``; decision-level and additive strategies are refused).
        head: Maps the fused output to the two scores (no match, match); ``None`` gives a
            linear layer, as ALBEF's.
        negatives: ``"random"`` (UNITER, ViLT) or ``"hard"`` (ALBEF: mined from the
            similarities).

    Raises:
        ValueError: The fusion cannot judge pairs or does not fuse exactly two modalities,
            or ``negatives`` is unknown.
    """

    def __init__(
        self, fusion: FusionStrategy, head: nn.Module | None = None, negatives: str = "random"
    ) -> None:
        super().__init__()
        if negatives not in NEGATIVES:
            raise ValueError(
                f"matching negatives must be one of {list(NEGATIVES)}, got "
                f"{negatives!r} (objective.module.matching_negatives)"
            )
        self.sample = sample_hard_negatives if negatives == "hard" else sample_random_negatives
        if not can_judge_pairs(type(fusion)):
            raise ValueError(
                f"matching needs a fusion whose output can tell a matching pair from another; "
                f"{type(fusion).__name__} cannot (it outputs logits, keeps one modality or "
                "pools them additively): use fusion=cross_attention or early_tokens (the "
                "published choices), or another strategy that models interactions"
            )
        if len(fusion.modalities) != 2:
            raise ValueError(f"matching fuses two modalities, fusion has {fusion.modalities}")
        if fusion.own_losses:
            raise ValueError(
                f"{type(fusion).__name__} trains with losses of its own "
                f"({sorted(fusion.own_losses)}), which matching does not add: use it with "
                "objective=classify, multilabel or regression"
            )
        self.fusion = fusion
        self.head = head if head is not None else nn.Linear(fusion.out_dim, 2)

    def forward(
        self, features: dict[str, EncoderOutput], logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(loss, accuracy)`` of match / no-match on the ``3B`` examples.

        Args:
            features: Encoder outputs of the two modalities for the ``B`` pairs.
            logits: ``[B, B]`` contrastive similarities, rows ``a``, columns ``b``; ``-inf``
                where a pair must not serve as a negative.
        """
        name_a, name_b = self.fusion.modalities
        a, b = features[name_a], features[name_b]
        rows = torch.arange(len(logits), device=logits.device)
        negative_b = self.sample(logits)
        negative_a = self.sample(logits.T)
        fused = self.fusion(
            {
                name_a: concat([a, a, select(a, negative_a)]),
                name_b: concat([b, select(b, negative_b), b]),
            }
        )
        scores = self.head(fused)
        labels = torch.cat([torch.ones_like(rows), torch.zeros_like(rows), torch.zeros_like(rows)])
        loss = F.cross_entropy(scores, labels)
        accuracy = (scores.argmax(dim=1) == labels).float().mean()
        return loss, accuracy

    def score(self, features: dict[str, EncoderOutput]) -> torch.Tensor:
        """Match probability ``[B]`` of the given pairs (row ``i`` of both modalities)."""
        return torch.softmax(self.head(self.fusion(features)), dim=1)[:, 1]
